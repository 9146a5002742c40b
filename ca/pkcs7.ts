import { CaError } from './errors.ts';
import { x509 } from './x509.ts';

/**
 * A certs-only PKCS#7 (CMS SignedData without signers, RFC 5652 §5 / RFC 7030 §4.1.3) holding
 * `certsDer` in order: the body of EST `cacerts`, `simpleenroll` and `simplereenroll` answers.
 * Built with @peculiar/x509's `X509Certificates` (decision 0060).
 */
export function certsOnlyPkcs7(certsDer: readonly Uint8Array[]): Uint8Array {
  const certs = new x509.X509Certificates(
    certsDer.map((der) => new x509.X509Certificate(new Uint8Array(der))),
  );
  return new Uint8Array(certs.export('raw'));
}

/**
 * The certificates of a certs-only PKCS#7, DER or base64 (whitespace allowed), as PEM blocks in
 * their order. Throws CaError `ERR_CA_CERT_MALFORMED` for anything else.
 */
export function parseCertsOnlyPkcs7(body: Uint8Array | string): string[] {
  try {
    const der = typeof body === 'string' ? Buffer.from(body.replace(/\s+/g, ''), 'base64') : body;
    const certs = new x509.X509Certificates(new Uint8Array(der));
    if (certs.length === 0) throw new Error('no certificate');
    return certs.map((c) => c.toString('pem') + '\n');
  } catch (err) {
    throw new CaError('ERR_CA_CERT_MALFORMED', 'not a certs-only PKCS#7 with at least one certificate', {
      cause: err,
    });
  }
}
