import { CaError } from './errors.ts';
import { tlv } from './der.ts';
import { x509 } from './x509.ts';

const SIGNED_DATA = Buffer.from('06092a864886f70d010702', 'hex'); // 1.2.840.113549.1.7.2
const DATA = Buffer.from('06092a864886f70d010701', 'hex'); // 1.2.840.113549.1.7.1

/**
 * A certs-only PKCS#7 (CMS SignedData version 1 without digest algorithms, content or signers,
 * RFC 5652 §5 / RFC 7030 §4.1.3) holding `certsDer` in order: the body of EST `cacerts`,
 * `simpleenroll` and `simplereenroll` answers. The structure is fixed, so it is written directly
 * (decision 0063); {@link parseCertsOnlyPkcs7} reads it back through @peculiar/x509.
 */
export function certsOnlyPkcs7(certsDer: readonly Uint8Array[]): Uint8Array {
  const signedData = tlv(
    0x30,
    Buffer.from([0x02, 0x01, 0x01]),
    Buffer.from([0x31, 0x00]),
    tlv(0x30, DATA),
    tlv(0xa0, ...certsDer),
    Buffer.from([0x31, 0x00]),
  );
  return new Uint8Array(tlv(0x30, SIGNED_DATA, tlv(0xa0, signedData)));
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
