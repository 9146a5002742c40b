import { createHash, createPublicKey } from 'node:crypto';
import type { Workload } from '../core/index.ts';
import { CaError } from './errors.ts';
import { issueCertificate } from './issue.ts';
import type { SigningCa } from './issue.ts';
import { normalizeSerial } from './serial.ts';
import { x509 } from './x509.ts';

/** Inputs of {@link issueFromCsr}. */
export interface IssueFromCsrInput {
  /** The PKCS#10 request, DER. */
  readonly csrDer: Uint8Array;
  /** The registry entry the caller proved it is (join token or current certificate). */
  readonly workload: Workload;
  readonly issuer: SigningCa;
  readonly trustDomain: string;
  readonly validityMs: number;
  readonly deps: { readonly now: () => Date; readonly randomSerial?: () => string };
}

/** A certificate issued from a CSR, with the facts its audit event records. */
export interface IssuedFromCsr {
  readonly cert: x509.X509Certificate;
  readonly certDer: Uint8Array;
  /** Canonical lowercase hex. */
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** base64url SHA-256 of the subject public key info (the RFC 7638-style key fingerprint of the CSR's key). */
  readonly keyThumbprint: string;
}

/** Largest CSR accepted: an RSA-4096 request with a few names is under 2 KiB. */
export const MAX_CSR_BYTES = 16_384;

/**
 * Issues a workload leaf for the public key of a PKCS#10 request. The names come from the
 * registry entry alone: the request's subject is ignored, and a request that asks for any URI,
 * DNS or IP name the entry does not hold is refused (`ERR_CA_CSR_IDENTITY`) rather than
 * silently narrowed, so that a workload asking for another identity is visible in the audit log.
 * The request's signature is checked (proof of possession, `ERR_CA_CSR_SIGNATURE`) and its key
 * must be ECDSA P-256/384/521, Ed25519 or RSA of at least 2048 bits. Malformed requests are
 * `ERR_CA_CSR_INVALID`.
 */
export async function issueFromCsr(input: IssueFromCsrInput): Promise<IssuedFromCsr> {
  const csr = parseCsr(input.csrDer);
  const spki = new Uint8Array(csr.publicKey.rawData);
  checkKey(spki);
  let valid: boolean;
  try {
    valid = await csr.verify();
  } catch {
    valid = false;
  }
  if (!valid) throw new CaError('ERR_CA_CSR_SIGNATURE', 'the CSR signature does not verify with its own key');
  checkRequestedNames(csr, input.workload);
  const { workload } = input;
  const cert = await issueCertificate({
    role: 'leaf',
    subject: `O=${input.trustDomain}, CN=${workload.name}`,
    publicKey: csr.publicKey,
    issuer: input.issuer,
    names: {
      spiffeId: workload.spiffeId.uri,
      dnsNames: workload.dnsNames,
      ipAddresses: workload.ipAddresses,
    },
    validityMs: input.validityMs,
    deps: input.deps,
  });
  return {
    cert,
    certDer: new Uint8Array(cert.rawData),
    serial: normalizeSerial(cert.serialNumber),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    keyThumbprint: createHash('sha256').update(spki).digest('base64url'),
  };
}

function parseCsr(der: Uint8Array): x509.Pkcs10CertificateRequest {
  if (der.byteLength === 0) throw new CaError('ERR_CA_CSR_INVALID', 'the CSR is empty');
  if (der.byteLength > MAX_CSR_BYTES)
    throw new CaError('ERR_CA_CSR_INVALID', `the CSR is larger than ${MAX_CSR_BYTES} bytes`);
  try {
    const csr = new x509.Pkcs10CertificateRequest(new Uint8Array(der));
    // Touch what issuance reads, so that a structurally odd request fails here and not later.
    void csr.publicKey.algorithm;
    void csr.extensions;
    return csr;
  } catch (err) {
    throw new CaError('ERR_CA_CSR_INVALID', 'the body is not a DER PKCS#10 certificate request', {
      cause: err,
    });
  }
}

function checkKey(spki: Uint8Array): void {
  let key;
  try {
    key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  } catch (err) {
    throw new CaError('ERR_CA_CSR_INVALID', 'the CSR public key cannot be read', { cause: err });
  }
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  if (type === 'rsa') {
    if ((details.modulusLength ?? 0) < 2048)
      throw new CaError(
        'ERR_CA_KEY_TOO_WEAK',
        `the CSR has a ${details.modulusLength}-bit RSA key (at least 2048 required)`,
      );
    return;
  }
  if (type === 'ec' && ['prime256v1', 'secp384r1', 'secp521r1'].includes(details.namedCurve ?? '')) return;
  if (type === 'ed25519') return;
  throw new CaError(
    'ERR_CA_KEY_UNSUPPORTED',
    `the CSR has an unsupported key type (${type}${details.namedCurve ? ` ${details.namedCurve}` : ''})`,
  );
}

/** Every name the request asks for (subjectAltName in its extensionRequest) must be the entry's. */
function checkRequestedNames(csr: x509.Pkcs10CertificateRequest, workload: Workload): void {
  let sans: x509.SubjectAlternativeNameExtension[];
  try {
    sans = csr.extensions
      .filter((e) => e.type === '2.5.29.17')
      .map((e) => new x509.SubjectAlternativeNameExtension(e.rawData));
  } catch (err) {
    throw new CaError('ERR_CA_CSR_INVALID', 'the CSR subjectAltName cannot be read', { cause: err });
  }
  const ips = new Set(workload.ipAddresses.map(canonicalIp));
  for (const name of sans.flatMap((s) => s.names.items)) {
    const ok =
      (name.type === 'url' && name.value === workload.spiffeId.uri) ||
      (name.type === 'dns' && workload.dnsNames.includes(name.value.toLowerCase())) ||
      (name.type === 'ip' && ips.has(canonicalIp(name.value)));
    if (!ok)
      throw new CaError(
        'ERR_CA_CSR_IDENTITY',
        `the CSR asks for ${name.type === 'url' ? 'URI' : name.type.toUpperCase()} name "${String(name.value).slice(0, 256)}", which registry entry "${workload.name}" (${workload.spiffeId.uri}) does not hold`,
      );
  }
}

function canonicalIp(ip: string): string {
  return ip.includes(':') ? new URL(`http://[${ip}]`).hostname : ip;
}
