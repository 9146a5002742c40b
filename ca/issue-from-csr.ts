import { KeyObject, createHash, createPublicKey, sign, verify } from 'node:crypto';
import type { Workload } from '../core/index.ts';
import { children, derTime, readTlv, tlv } from './der.ts';
import type { Tlv } from './der.ts';
import { CaError } from './errors.ts';
import { generateKeyPair } from './keys.ts';
import { issueCertificate } from './issue.ts';
import type { SigningCa } from './issue.ts';
import { normalizeSerial } from './serial.ts';
import { randomSerial } from './templates.ts';
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
  readonly certDer: Uint8Array;
  /** Canonical lowercase hex. */
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** base64url SHA-256 of the request's SubjectPublicKeyInfo. */
  readonly keyThumbprint: string;
}

/** Largest CSR accepted: an RSA-4096 request with a few names is under 2 KiB. */
export const MAX_CSR_BYTES = 16_384;
/** Certificates start a minute in the past so that peers with a slightly slow clock accept them (as issue.ts). */
const BACKDATE_MS = 60_000;

/** Hash of each CSR signature algorithm accepted (OID content bytes, hex); `null`: the algorithm has its own. */
const CSR_SIGNATURE_HASHES: Readonly<Record<string, string | null>> = {
  '2a8648ce3d040302': 'sha256', // ecdsa-with-SHA256
  '2a8648ce3d040303': 'sha384',
  '2a8648ce3d040304': 'sha512',
  '2a864886f70d01010b': 'sha256', // sha256WithRSAEncryption
  '2a864886f70d01010c': 'sha384',
  '2a864886f70d01010d': 'sha512',
  '2b6570': null, // Ed25519
};

/**
 * Issues a workload leaf for the public key of a PKCS#10 request, with the same profile as
 * {@link issueCertificate} (decision 0060). The names come from the registry entry alone: the
 * request's subject is ignored, and a request that asks for any URI, DNS or IP name the entry
 * does not hold is refused (`ERR_CA_CSR_IDENTITY`) rather than narrowed, so that a workload asking
 * for another identity is visible in the audit log. The request's signature must verify with its
 * own key (proof of possession, `ERR_CA_CSR_SIGNATURE`); the key must be ECDSA P-256/384,
 * Ed25519 or RSA ≥ 2048. Malformed requests are `ERR_CA_CSR_INVALID`.
 *
 * The certificate is assembled from a per-issuer, per-entry template made once by
 * {@link issueCertificate} (the library path), with only the serial, validity, key and subject
 * key identifier changing, and signed with node:crypto (decision 0063: the library path costs
 * about 40 times more per certificate).
 */
export async function issueFromCsr(input: IssueFromCsrInput): Promise<IssuedFromCsr> {
  const csr = parseCsr(input.csrDer);
  const key = publicKeyOf(csr.spki);
  let valid: boolean;
  try {
    valid = verify(csr.hash, csr.info, { key, dsaEncoding: 'der' }, csr.signature);
  } catch {
    valid = false;
  }
  if (!valid) throw new CaError('ERR_CA_CSR_SIGNATURE', 'the CSR signature does not verify with its own key');
  if (csr.hasAttributes) checkRequestedNames(input.csrDer, input.workload);
  const t = await templateFor(input.issuer, input.workload, input.trustDomain);
  const nowMs = input.deps.now().getTime();
  const notBefore = new Date(Math.floor((nowMs - BACKDATE_MS) / 1000) * 1000);
  let notAfter = new Date(Math.floor((nowMs + input.validityMs) / 1000) * 1000);
  // A certificate never outlives its issuer.
  if (notAfter > input.issuer.cert.notAfter) notAfter = input.issuer.cert.notAfter;
  const serialHex = (input.deps.randomSerial ?? randomSerial)();
  const ski = createHash('sha1').update(csr.subjectPublicKey).digest();
  const tbs = tlv(
    0x30,
    t.version,
    derInteger(serialHex),
    t.signatureAlgorithm,
    t.issuer,
    tlv(0x30, derTime(notBefore), derTime(notAfter)),
    t.subject,
    csr.spki,
    tlv(
      0xa3,
      tlv(0x30, t.extensionsBefore, tlv(0x30, SKI_OID, tlv(0x04, tlv(0x04, ski))), t.extensionsAfter),
    ),
  );
  const signature = sign(t.hash, tbs, { key: t.signingKey, dsaEncoding: 'der' });
  const certDer = tlv(0x30, tbs, t.signatureAlgorithm, tlv(0x03, ZERO, signature));
  return {
    certDer: new Uint8Array(certDer),
    serial: normalizeSerial(serialHex),
    notBefore,
    notAfter,
    keyThumbprint: createHash('sha256').update(csr.spki).digest('base64url'),
  };
}

const ZERO = Buffer.from([0]);
const SKI_OID = Buffer.from([0x06, 0x03, 0x55, 0x1d, 0x0e]);

function derInteger(hex: string): Buffer {
  let bytes = Buffer.from(
    normalizeSerial(hex)
      .padStart(2, '0')
      .replace(/^(.(..)*)$/, '0$1'),
    'hex',
  );
  if (bytes[0]! & 0x80) bytes = Buffer.concat([ZERO, bytes]);
  return tlv(0x02, bytes);
}

interface ParsedCsr {
  readonly info: Buffer;
  readonly spki: Buffer;
  readonly subjectPublicKey: Buffer;
  readonly hash: string | null;
  readonly signature: Buffer;
  readonly hasAttributes: boolean;
}

/** CertificationRequest ::= SEQUENCE { info SEQUENCE { version, subject, spki, [0] attributes }, algorithm, signature BIT STRING } */
function parseCsr(input: Uint8Array): ParsedCsr {
  if (input.byteLength === 0) throw new CaError('ERR_CA_CSR_INVALID', 'the CSR is empty');
  if (input.byteLength > MAX_CSR_BYTES)
    throw new CaError('ERR_CA_CSR_INVALID', `the CSR is larger than ${MAX_CSR_BYTES} bytes`);
  const der = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  const bad = (what: string, cause?: unknown) =>
    new CaError('ERR_CA_CSR_INVALID', `the body is not a DER PKCS#10 certificate request (${what})`, {
      cause,
    });
  let top: Tlv, info: Tlv, alg: Tlv, sig: Tlv, infoKids: Tlv[], spkiKids: Tlv[], oid: Tlv;
  try {
    top = readTlv(der, 0);
    if (top.tag !== 0x30 || top.end !== der.length) throw bad('outer SEQUENCE');
    [info, alg, sig] = children(der, top) as [Tlv, Tlv, Tlv];
    if (children(der, top).length !== 3 || info.tag !== 0x30 || alg.tag !== 0x30 || sig.tag !== 0x03)
      throw bad('CertificationRequest fields');
    infoKids = children(der, info);
    const [version, subject, spki, attributes] = infoKids;
    if (
      infoKids.length !== 4 ||
      version!.tag !== 0x02 ||
      der[version!.contentStart] !== 0 ||
      version!.end - version!.contentStart !== 1 ||
      subject!.tag !== 0x30 ||
      spki!.tag !== 0x30 ||
      attributes!.tag !== 0xa0
    )
      throw bad('CertificationRequestInfo fields');
    spkiKids = children(der, spki!);
    if (spkiKids.length !== 2 || spkiKids[1]!.tag !== 0x03 || der[spkiKids[1]!.contentStart] !== 0)
      throw bad('SubjectPublicKeyInfo');
    oid = children(der, alg)[0]!;
    if (oid.tag !== 0x06) throw bad('signature algorithm');
    if (der[sig.contentStart] !== 0) throw bad('signature BIT STRING');
  } catch (err) {
    if (err instanceof CaError) throw err;
    throw bad((err as Error).message, err);
  }
  const hash = CSR_SIGNATURE_HASHES[der.subarray(oid.contentStart, oid.end).toString('hex')];
  if (hash === undefined)
    throw new CaError('ERR_CA_CSR_SIGNATURE', 'the CSR is signed with an unsupported signature algorithm');
  const spki = infoKids[2]!;
  const attributes = infoKids[3]!;
  return {
    info: der.subarray(info.start, info.end),
    spki: der.subarray(spki.start, spki.end),
    subjectPublicKey: der.subarray(spkiKids[1]!.contentStart + 1, spkiKids[1]!.end),
    hash,
    signature: der.subarray(sig.contentStart + 1, sig.end),
    hasAttributes: attributes.end > attributes.contentStart,
  };
}

function publicKeyOf(spki: Buffer): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
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
    return key;
  }
  if (type === 'ec' && ['prime256v1', 'secp384r1'].includes(details.namedCurve ?? '')) return key;
  if (type === 'ed25519') return key;
  throw new CaError(
    'ERR_CA_KEY_UNSUPPORTED',
    `the CSR has an unsupported key type (${type}${details.namedCurve ? ` ${details.namedCurve}` : ''})`,
  );
}

/** Every name the request asks for (subjectAltName in its extensionRequest) must be the entry's. */
function checkRequestedNames(der: Uint8Array, workload: Workload): void {
  let sans: x509.SubjectAlternativeNameExtension[];
  try {
    const csr = new x509.Pkcs10CertificateRequest(new Uint8Array(der));
    sans = csr.extensions
      .filter((e) => e.type === '2.5.29.17')
      .map((e) => new x509.SubjectAlternativeNameExtension(e.rawData));
  } catch (err) {
    throw new CaError('ERR_CA_CSR_INVALID', 'the CSR attributes cannot be read', { cause: err });
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

/** The parts of a leaf that are the same for every certificate of one entry from one issuer. */
interface Template {
  readonly version: Buffer;
  readonly signatureAlgorithm: Buffer;
  readonly issuer: Buffer;
  readonly subject: Buffer;
  /** Extension elements before and after the subject key identifier, in the library's order. */
  readonly extensionsBefore: Buffer;
  readonly extensionsAfter: Buffer;
  readonly signingKey: KeyObject;
  readonly hash: string | null;
}

const templates = new WeakMap<SigningCa, Map<string, Promise<Template>>>();

function templateFor(issuer: SigningCa, workload: Workload, trustDomain: string): Promise<Template> {
  let perIssuer = templates.get(issuer);
  if (!perIssuer) templates.set(issuer, (perIssuer = new Map()));
  const key = JSON.stringify([
    trustDomain,
    workload.name,
    workload.spiffeId.uri,
    workload.dnsNames,
    workload.ipAddresses,
  ]);
  let t = perIssuer.get(key);
  if (!t) {
    t = makeTemplate(issuer, workload, trustDomain);
    perIssuer.set(key, t);
    t.catch(() => perIssuer.delete(key));
  }
  return t;
}

/** Issues one certificate the library way and keeps its fixed parts. */
async function makeTemplate(issuer: SigningCa, workload: Workload, trustDomain: string): Promise<Template> {
  const keys = await generateKeyPair('ecdsa-p256');
  const sample = await issueCertificate({
    role: 'leaf',
    subject: `O=${trustDomain}, CN=${workload.name}`,
    publicKey: keys.publicKey,
    issuer,
    names: {
      spiffeId: workload.spiffeId.uri,
      dnsNames: workload.dnsNames,
      ipAddresses: workload.ipAddresses,
    },
    validityMs: 60_000,
    deps: { now: () => new Date() },
  });
  const der = Buffer.from(sample.rawData);
  const [tbs, sigAlg] = children(der, readTlv(der, 0)) as [Tlv, Tlv];
  const [version, , , issuerName, , subject, , extsWrapper] = children(der, tbs) as Tlv[];
  const exts = children(der, children(der, extsWrapper!)[0]!);
  const isSki = (e: Tlv) => der.subarray(e.contentStart, e.contentStart + SKI_OID.length).equals(SKI_OID);
  const at = exts.findIndex(isSki);
  if (at < 0 || extsWrapper!.tag !== 0xa3) throw new Error('the leaf profile has no subject key identifier');
  const slice = (t: Tlv) => der.subarray(t.start, t.end);
  return {
    version: slice(version!),
    signatureAlgorithm: slice(sigAlg),
    issuer: slice(issuerName!),
    subject: slice(subject!),
    extensionsBefore: Buffer.concat(exts.slice(0, at).map(slice)),
    extensionsAfter: Buffer.concat(exts.slice(at + 1).map(slice)),
    signingKey: KeyObject.from(issuer.privateKey),
    hash: issuer.algorithm === 'ed25519' ? null : 'sha256',
  };
}
