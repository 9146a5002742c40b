import { X509Certificate as NodeX509 } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import {
  AlgorithmIdentifier,
  BasicConstraints,
  Certificate,
  ExtendedKeyUsage,
  KeyUsage,
  NameConstraints,
  SubjectAlternativeName,
  id_ce_authorityKeyIdentifier,
  id_ce_basicConstraints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_nameConstraints,
  id_ce_subjectAltName,
  id_ce_subjectKeyIdentifier,
} from '@peculiar/asn1-x509';
import { RsaSaPssParams } from '@peculiar/asn1-rsa';
import { CaError } from './errors.ts';
import { normalizeSerial } from './serial.ts';

/**
 * One certificate of a peer's path, parsed once (node:crypto for keys, signatures and names;
 * @peculiar/asn1-x509 for the extensions node does not decode) and checked against the X.509-SVID
 * profile. The checks, and the RFC 5280 / SPIFFE X509-SVID sections they come from, are listed in
 * docs/threat-model.md ("X.509-SVID peer policy").
 */
export interface SvidCertificate {
  readonly der: Uint8Array;
  readonly node: NodeX509;
  readonly asn: Certificate;
  readonly serial: string;
  readonly notBefore: number;
  readonly notAfter: number;
  /** Human label for messages: "peer certificate" or `CA certificate "<subject>"`. */
  readonly label: string;
  readonly subjectEmpty: boolean;
  readonly basicConstraints: BasicConstraints | undefined;
  readonly basicConstraintsCritical: boolean;
  /** Key usage names (`digitalSignature`, `keyCertSign`…), undefined when the extension is absent. */
  readonly keyUsage: readonly string[] | undefined;
  readonly extKeyUsage: readonly string[] | undefined;
  readonly uris: readonly string[];
  readonly sanCritical: boolean | undefined;
  readonly nameConstraints: NameConstraints | undefined;
  readonly hasAuthorityKeyId: boolean;
  readonly hasSubjectKeyId: boolean;
  /** OIDs of the critical extensions. */
  readonly critical: readonly string[];
}

/** Parses a DER certificate. Throws CaError `ERR_CA_CERT_MALFORMED` (or `ERR_CA_CERT_NONCONFORMING`). */
export function parseSvidCertificate(der: Uint8Array, label: string): SvidCertificate {
  let node: NodeX509;
  let asn: Certificate;
  try {
    node = new NodeX509(der);
    asn = AsnConvert.parse(der, Certificate);
  } catch (err) {
    throw new CaError('ERR_CA_CERT_MALFORMED', `${label} is not a well-formed X.509 certificate`, {
      cause: err,
    });
  }
  const tbs = asn.tbsCertificate;
  const exts = tbs.extensions ?? [];
  const byOid = new Map<string, (typeof exts)[number]>();
  for (const e of exts) {
    // RFC 5280 §4.2: "A certificate MUST NOT include more than one instance of a particular extension."
    if (byOid.has(e.extnID))
      throw new CaError('ERR_CA_CERT_NONCONFORMING', `${label} carries extension ${e.extnID} twice`);
    byOid.set(e.extnID, e);
  }
  // RFC 5280 §4.1.2.1: extensions only in v3 certificates (version field 2).
  if (exts.length > 0 && tbs.version !== 2)
    throw new CaError(
      'ERR_CA_CERT_NONCONFORMING',
      `${label} has extensions but is not an X.509 v3 certificate`,
    );
  const decode = <T>(oid: string, type: new () => T): T | undefined => {
    const e = byOid.get(oid);
    if (!e) return undefined;
    try {
      return AsnConvert.parse(e.extnValue, type);
    } catch (err) {
      throw new CaError('ERR_CA_CERT_MALFORMED', `${label} carries an undecodable extension ${oid}`, {
        cause: err,
      });
    }
  };
  const bc = decode(id_ce_basicConstraints, BasicConstraints);
  const ku = decode(id_ce_keyUsage, KeyUsage);
  const eku = decode(id_ce_extKeyUsage, ExtendedKeyUsage);
  const san = decode(id_ce_subjectAltName, SubjectAlternativeName);
  if (san && san.length === 0)
    throw new CaError('ERR_CA_CERT_NONCONFORMING', `${label} carries an empty subjectAltName`);
  let notBefore: number;
  let notAfter: number;
  try {
    notBefore = node.validFromDate.getTime();
    notAfter = node.validToDate.getTime();
  } catch (err) {
    throw new CaError('ERR_CA_CERT_MALFORMED', `${label} has an unreadable validity period`, { cause: err });
  }
  return {
    der,
    node,
    asn,
    serial: normalizeSerial(node.serialNumber),
    notBefore,
    notAfter,
    label,
    subjectEmpty: tbs.subject.length === 0,
    basicConstraints: bc,
    basicConstraintsCritical: byOid.get(id_ce_basicConstraints)?.critical ?? false,
    keyUsage: ku?.toJSON(),
    extKeyUsage: eku ? [...eku] : undefined,
    uris: san
      ? san.filter((n) => n.uniformResourceIdentifier !== undefined).map((n) => n.uniformResourceIdentifier!)
      : [],
    sanCritical: san ? (byOid.get(id_ce_subjectAltName)?.critical ?? false) : undefined,
    nameConstraints: decode(id_ce_nameConstraints, NameConstraints),
    hasAuthorityKeyId: byOid.has(id_ce_authorityKeyIdentifier),
    hasSubjectKeyId: byOid.has(id_ce_subjectKeyIdentifier),
    critical: exts.filter((e) => e.critical).map((e) => e.extnID),
  };
}

/** Critical extensions the policy processes; any other critical extension refuses the certificate. */
const UNDERSTOOD_CRITICAL = {
  leaf: new Set([id_ce_basicConstraints, id_ce_keyUsage, id_ce_extKeyUsage, id_ce_subjectAltName]),
  ca: new Set([id_ce_basicConstraints, id_ce_keyUsage, id_ce_extKeyUsage, id_ce_nameConstraints]),
} as const;

const SHA2 = new Set(['2.16.840.1.101.3.4.2.1', '2.16.840.1.101.3.4.2.2', '2.16.840.1.101.3.4.2.3']);
const MGF1 = '1.2.840.113549.1.1.8';
const RSASSA_PSS = '1.2.840.113549.1.1.10';
/** Signature algorithms a certificate may be signed with (OID → name for messages). */
const SIGNATURE_ALGORITHMS = new Map([
  ['1.2.840.10045.4.3.2', 'ecdsa-with-SHA256'],
  ['1.2.840.10045.4.3.3', 'ecdsa-with-SHA384'],
  ['1.3.101.112', 'Ed25519'],
  ['1.2.840.113549.1.1.11', 'sha256WithRSAEncryption'],
  ['1.2.840.113549.1.1.12', 'sha384WithRSAEncryption'],
  ['1.2.840.113549.1.1.13', 'sha512WithRSAEncryption'],
  [RSASSA_PSS, 'RSASSA-PSS'],
]);
const SIGNATURE_NAMES = new Map([
  ['1.2.840.10045.4.1', 'ecdsa-with-SHA1'],
  ['1.2.840.113549.1.1.5', 'sha1WithRSAEncryption'],
  ['1.2.840.113549.1.1.4', 'md5WithRSAEncryption'],
  ['1.2.840.10045.4.3.1', 'ecdsa-with-SHA224'],
  ['1.2.840.10045.4.3.4', 'ecdsa-with-SHA512'],
  ['1.2.840.113549.1.1.14', 'sha224WithRSAEncryption'],
  ['1.3.101.113', 'Ed448'],
]);

/**
 * The checks every certificate below the trust anchor passes, leaf and intermediates alike:
 * only understood critical extensions, an allowed signature algorithm (the same in the signed
 * part and outside it), an allowed key.
 */
export function checkCertificateProfile(c: SvidCertificate, role: 'leaf' | 'ca'): void {
  const unknown = c.critical.find((oid) => !UNDERSTOOD_CRITICAL[role].has(oid));
  if (unknown !== undefined)
    throw new CaError(
      'ERR_CA_CRITICAL_EXTENSION_UNKNOWN',
      `${c.label} carries an unknown critical extension ${unknown}`,
    );
  checkSignatureAlgorithm(c);
  checkKey(c);
  // RFC 5280 §4.2.1.1: every certificate but a self-signed one names its issuer's key.
  if (!c.hasAuthorityKeyId)
    throw new CaError('ERR_CA_CERT_NONCONFORMING', `${c.label} lacks the authorityKeyIdentifier extension`);
}

function checkSignatureAlgorithm(c: SvidCertificate): void {
  const outer = c.asn.signatureAlgorithm;
  const inner = c.asn.tbsCertificate.signature;
  const oid = outer.algorithm;
  const name = SIGNATURE_ALGORITHMS.get(oid) ?? SIGNATURE_NAMES.get(oid) ?? oid;
  if (!SIGNATURE_ALGORITHMS.has(oid))
    throw new CaError(
      'ERR_CA_SIGNATURE_ALGORITHM',
      `${c.label} is signed with ${name}, which is not allowed`,
    );
  // RFC 5280 §4.1.1.2: the signatureAlgorithm field MUST match the signature field of the TBS part.
  if (
    inner.algorithm !== oid ||
    !bytesEqual(
      inner.parameters ? new Uint8Array(inner.parameters) : undefined,
      outer.parameters ? new Uint8Array(outer.parameters) : undefined,
    )
  )
    throw new CaError('ERR_CA_SIGNATURE_ALGORITHM', `${c.label} names two different signature algorithms`);
  if (oid !== RSASSA_PSS) return;
  let params: RsaSaPssParams;
  try {
    params = AsnConvert.parse(outer.parameters!, RsaSaPssParams);
  } catch (err) {
    throw new CaError('ERR_CA_SIGNATURE_ALGORITHM', `${c.label} has unreadable RSASSA-PSS parameters`, {
      cause: err,
    });
  }
  const mgfHash = params.maskGenAlgorithm.parameters
    ? safeOid(params.maskGenAlgorithm.parameters)
    : undefined;
  if (
    !SHA2.has(params.hashAlgorithm.algorithm) ||
    params.maskGenAlgorithm.algorithm !== MGF1 ||
    !mgfHash ||
    !SHA2.has(mgfHash)
  )
    throw new CaError('ERR_CA_SIGNATURE_ALGORITHM', `${c.label} uses RSASSA-PSS without SHA-256 or stronger`);
}

/** The hash OID inside MGF1's parameters, itself an AlgorithmIdentifier (RFC 4055 §3.1). */
function safeOid(params: ArrayBuffer): string | undefined {
  try {
    return AsnConvert.parse(params, AlgorithmIdentifier).algorithm;
  } catch {
    return undefined;
  }
}

function bytesEqual(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  // An absent parameter and an explicit NULL are the same thing (RFC 5754 §3, RFC 4055 §2.1).
  const norm = (x: Uint8Array | undefined) =>
    x === undefined || (x.length === 2 && x[0] === 5 && x[1] === 0) ? '' : Buffer.from(x).toString('hex');
  return norm(a) === norm(b);
}

function checkKey(c: SvidCertificate): void {
  const key = c.node.publicKey;
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  if (type === 'rsa' || type === 'rsa-pss') {
    if ((details.modulusLength ?? 0) < 2048)
      throw new CaError(
        'ERR_CA_KEY_TOO_WEAK',
        `${c.label} has a ${details.modulusLength}-bit RSA key (at least 2048 required)`,
      );
    return;
  }
  if (type === 'ec' && (details.namedCurve === 'prime256v1' || details.namedCurve === 'secp384r1')) return;
  if (type === 'ed25519') return;
  throw new CaError(
    'ERR_CA_KEY_UNSUPPORTED',
    `${c.label} has an unsupported key type (${type}${details.namedCurve ? ` ${details.namedCurve}` : ''})`,
  );
}

const EKU = { clientAuth: '1.3.6.1.5.5.7.3.2', serverAuth: '1.3.6.1.5.5.7.3.1' } as const;

/** The leaf rules of the X509-SVID spec §4 and RFC 5280 §4.2.1.3/.6/.9/.12. */
export function checkLeaf(leaf: SvidCertificate, purpose: 'clientAuth' | 'serverAuth'): void {
  if (leaf.basicConstraints?.cA)
    throw new CaError(
      'ERR_CA_LEAF_IS_CA',
      'peer certificate is a CA certificate (CA:true), not a workload leaf',
    );
  if (leaf.basicConstraints?.pathLenConstraint !== undefined)
    throw new CaError('ERR_CA_CERT_NONCONFORMING', 'peer certificate sets a path length but is not a CA');
  const ku = leaf.keyUsage;
  if (ku && (ku.includes('keyCertSign') || ku.includes('cRLSign')))
    throw new CaError(
      'ERR_CA_LEAF_KEY_USAGE',
      'peer certificate may sign certificates or CRLs (keyCertSign/cRLSign on a leaf)',
    );
  if (ku && !ku.includes('digitalSignature'))
    throw new CaError('ERR_CA_LEAF_KEY_USAGE', 'peer certificate lacks the digitalSignature key usage');
  // anyExtendedKeyUsage alone does not name the purpose (OpenSSL's ssl_client/ssl_server purposes agree).
  if (leaf.extKeyUsage && !leaf.extKeyUsage.includes(EKU[purpose]))
    throw new CaError('ERR_CA_LEAF_EXTENDED_KEY_USAGE', `peer certificate is not valid for ${purpose}`);
  if (leaf.subjectEmpty && leaf.sanCritical !== true)
    throw new CaError(
      'ERR_CA_EMPTY_SUBJECT_SAN_NOT_CRITICAL',
      'peer certificate has an empty subject and a subjectAltName not marked critical',
    );
}

/**
 * The CA rules for the intermediate `below` steps above the leaf (0 = the leaf's issuer), RFC 5280
 * §4.2.1.2/.3/.9 and §6.1.4: a CA, allowed to sign certificates, within its path length, and
 * when it carries an extKeyUsage, one that names the purpose (as OpenSSL's ssl_client and
 * ssl_server purposes require of CAs too).
 */
export function checkIntermediate(
  ca: SvidCertificate,
  below: number,
  purpose: 'clientAuth' | 'serverAuth',
): void {
  const bc = ca.basicConstraints;
  if (!bc?.cA) throw new CaError('ERR_CA_CHAIN_INVALID', `${ca.label} signs others but is not a CA`);
  if (!ca.basicConstraintsCritical)
    throw new CaError('ERR_CA_CERT_NONCONFORMING', `${ca.label} has basicConstraints not marked critical`);
  if (!ca.keyUsage || !ca.keyUsage.includes('keyCertSign'))
    throw new CaError('ERR_CA_CHAIN_INVALID', `${ca.label} lacks the keyCertSign key usage`);
  if (!ca.hasSubjectKeyId)
    throw new CaError('ERR_CA_CERT_NONCONFORMING', `${ca.label} lacks the subjectKeyIdentifier extension`);
  if (ca.subjectEmpty) throw new CaError('ERR_CA_CERT_NONCONFORMING', `${ca.label} has an empty subject`);
  if (bc.pathLenConstraint !== undefined && below > bc.pathLenConstraint)
    throw new CaError('ERR_CA_CHAIN_INVALID', `${ca.label} exceeds its path length constraint`);
  if (ca.extKeyUsage && !ca.extKeyUsage.includes(EKU[purpose]))
    throw new CaError('ERR_CA_CHAIN_INVALID', `${ca.label} restricts its extKeyUsage to exclude ${purpose}`);
}

/**
 * Enforces a CA's name constraints on the leaf's URIs (RFC 5280 §4.2.1.10: a URI constraint is
 * matched against the host). Constraints of other name types are refused rather than ignored:
 * the policy only trusts what it enforces.
 */
export function checkNameConstraints(ca: SvidCertificate, leaf: SvidCertificate): void {
  const nc = ca.nameConstraints;
  if (!nc) return;
  const subtrees = [...(nc.permittedSubtrees ?? [])].concat([...(nc.excludedSubtrees ?? [])]);
  if (subtrees.some((s) => s.base.uniformResourceIdentifier === undefined))
    throw new CaError(
      'ERR_CA_NAME_CONSTRAINTS',
      `${ca.label} carries name constraints of a type other than URI`,
    );
  // Hosts compare as DNS names do, without regard to case (RFC 5280 §4.2.1.10, §7.2); `URL`
  // gives the leaf's host in lowercase.
  const permitted = [...(nc.permittedSubtrees ?? [])].map((s) =>
    s.base.uniformResourceIdentifier!.toLowerCase(),
  );
  const excluded = [...(nc.excludedSubtrees ?? [])].map((s) =>
    s.base.uniformResourceIdentifier!.toLowerCase(),
  );
  for (const uri of leaf.uris) {
    let host: string;
    try {
      host = new URL(uri).hostname;
    } catch {
      throw new CaError('ERR_CA_NAME_CONSTRAINTS', 'peer certificate URI SAN is not a URI');
    }
    const match = (c: string) => (c.startsWith('.') ? host.endsWith(c) : host === c);
    if (excluded.some(match) || (permitted.length > 0 && !permitted.some(match)))
      throw new CaError(
        'ERR_CA_NAME_CONSTRAINTS',
        `URI "${uri}" is outside the name constraints of ${ca.label}`,
      );
  }
}
