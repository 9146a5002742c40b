import { X509Certificate as NodeX509 } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { AsnConvert } from '@peculiar/asn1-schema';
import { NameConstraints, id_ce_nameConstraints } from '@peculiar/asn1-x509';
import { certificateThumbprint, parseSpiffeId } from '../core/index.ts';
import type { SpiffeId } from '../core/index.ts';
import { CaError } from './errors.ts';
import { normalizeSerial } from './serial.ts';
import { splitPemBundle } from './pem.ts';
import { x509 } from './x509.ts';

/** The verified identity of a peer: what every server of Portcullis authorizes on. */
export interface PeerIdentity {
  readonly spiffeId: SpiffeId;
  /** Leaf serial, canonical lowercase hex (see normalizeSerial). */
  readonly serial: string;
  /** RFC 8705 `x5t#S256` thumbprint of the leaf DER. */
  readonly thumbprint: string;
  readonly notAfter: Date;
  readonly leafDer: Uint8Array;
}

/** Options of {@link createPeerVerifier}. */
export interface PeerVerifierOptions {
  /**
   * PEM bundle of the trust domain's CA certificates. Self-signed ones are the trust anchors;
   * any others (intermediates) are kept as a pool that completes chains a peer sent without
   * them. They are never trusted by themselves: each must chain to an anchor.
   */
  readonly trustAnchorsPem: string;
  readonly trustDomain: string;
  /** Called with canonical serials of the leaf and each intermediate; true refuses the chain. */
  readonly isRevoked?: (serial: string) => boolean;
  /** Purpose the leaf must allow when it carries an EKU extension. */
  readonly purpose?: 'clientAuth' | 'serverAuth';
  readonly clock?: () => number;
}

/** Verifies X.509-SVID chains presented by peers (SPIFFE X509-SVID spec + RFC 5280 path rules). */
export interface PeerVerifier {
  /** Verifies a DER chain, leaf first, followed by the intermediates the peer sent. Throws CaError. */
  verifyChain(chain: readonly Uint8Array[]): PeerIdentity;
  /**
   * Verifies the chain a TLS peer presented. Chain validation is cached per socket; expiry and
   * revocation are checked again on every call, so a long-lived connection cannot outlive its
   * certificate. Throws CaError `ERR_CA_PEER_NO_CERT` when the peer sent no certificate.
   */
  verifySocket(socket: TLSSocket): PeerIdentity;
}

interface Parsed {
  readonly der: Uint8Array;
  readonly node: NodeX509;
  readonly cert: x509.X509Certificate;
  readonly serial: string;
  readonly notBefore: number;
  readonly notAfter: number;
}

interface Verified {
  readonly identity: PeerIdentity;
  /** Serials of every certificate on the path below the anchor, to re-check revocation. */
  readonly serials: readonly string[];
  /** Validity window of the whole path. */
  readonly notBefore: number;
  readonly notAfter: number;
}

const MAX_CHAIN = 5;
const EKU = { clientAuth: '1.3.6.1.5.5.7.3.2', serverAuth: '1.3.6.1.5.5.7.3.1' } as const;
const ANY_EKU = '2.5.29.37.0';

/** Builds a {@link PeerVerifier} over a trust bundle. Throws TypeError for an empty or unreadable bundle. */
export function createPeerVerifier(options: PeerVerifierOptions): PeerVerifier {
  const bundle = splitPemBundle(options.trustAnchorsPem).map((der) => {
    const p = parse(der, 'trust bundle');
    if (!p.node.ca) throw new TypeError('trust bundle holds a certificate that is not a CA');
    return p;
  });
  const anchors = bundle.filter((c) => c.node.checkIssued(c.node) && c.node.verify(c.node.publicKey));
  const pool = bundle.filter((c) => !anchors.includes(c));
  if (anchors.length === 0) throw new TypeError('"trustAnchorsPem" holds no self-signed CA certificate');
  const clock = options.clock ?? Date.now;
  const isRevoked = options.isRevoked ?? (() => false);
  const cache = new WeakMap<TLSSocket, Verified | CaError>();

  function check(v: Verified): PeerIdentity {
    const now = clock();
    if (now > v.notAfter) throw new CaError('ERR_CA_CERT_EXPIRED', 'peer certificate chain has expired');
    if (now < v.notBefore)
      throw new CaError('ERR_CA_CERT_NOT_YET_VALID', 'peer certificate chain is not yet valid');
    for (const serial of v.serials) {
      if (isRevoked(serial))
        throw new CaError('ERR_CA_CERT_REVOKED', `certificate serial ${serial} is revoked`);
    }
    return v.identity;
  }

  function verifyChain(chain: readonly Uint8Array[]): PeerIdentity {
    return check(validate(chain));
  }

  function validate(chain: readonly Uint8Array[], tlsVerified = false): Verified {
    if (chain.length === 0) throw new CaError('ERR_CA_PEER_NO_CERT', 'peer presented no certificate');
    if (chain.length > MAX_CHAIN)
      throw new CaError('ERR_CA_CHAIN_INVALID', `peer chain longer than ${MAX_CHAIN} certificates`);
    const presented = chain.map((der, i) => parse(der, i === 0 ? 'peer leaf' : `peer chain[${i}]`));
    const leaf = presented[0]!;
    // The leaf's own validity first: an expired certificate is reported as expired, whoever signed it.
    checkValidity([leaf], leaf, clock());
    const path = buildPath(leaf, [...presented.slice(1), ...pool], anchors, tlsVerified);
    checkValidity(path, leaf, clock());
    checkLeaf(leaf, options);
    checkCas(path.length > 1 ? path.slice(1, -1) : [], leaf);
    const below = path.length > 1 ? path.slice(0, -1) : path;
    const spiffeId = leafSpiffeId(leaf, options.trustDomain);
    return {
      identity: Object.freeze({
        spiffeId,
        serial: leaf.serial,
        thumbprint: certificateThumbprint(leaf.der),
        notAfter: new Date(leaf.notAfter),
        leafDer: leaf.der,
      }),
      serials: below.map((c) => c.serial),
      notBefore: Math.max(...path.map((c) => c.notBefore)),
      notAfter: Math.min(...path.map((c) => c.notAfter)),
      // tlsVerified paths end at the leaf: OpenSSL validated the part above it.
    };
  }

  function verifySocket(socket: TLSSocket): PeerIdentity {
    let v = cache.get(socket);
    if (v === undefined) {
      try {
        v = validate(peerChain(socket), socket.authorized);
      } catch (err) {
        if (!(err instanceof CaError)) throw err;
        v = err;
      }
      cache.set(socket, v);
    }
    if (v instanceof CaError) throw v;
    return check(v);
  }

  return { verifyChain, verifySocket };
}

/** The DER chain a TLS peer sent, leaf first (Node links it through `issuerCertificate`). */
function peerChain(socket: TLSSocket): Uint8Array[] {
  const first = socket.getPeerCertificate(true);
  const out: Uint8Array[] = [];
  if (!first || !first.raw) return out;
  let cur: typeof first | undefined = first;
  const seen = new Set<string>();
  while (cur && cur.raw && out.length <= MAX_CHAIN) {
    const key = cur.fingerprint256;
    if (seen.has(key)) break;
    seen.add(key);
    out.push(new Uint8Array(cur.raw));
    cur = cur.issuerCertificate as typeof first | undefined;
  }
  return out;
}

function parse(der: Uint8Array, label: string): Parsed {
  try {
    const node = new NodeX509(der);
    const cert = new x509.X509Certificate(new Uint8Array(der));
    return {
      der,
      node,
      cert,
      serial: normalizeSerial(node.serialNumber),
      notBefore: cert.notBefore.getTime(),
      notAfter: cert.notAfter.getTime(),
    };
  } catch (err) {
    if (err instanceof TypeError && label === 'trust bundle') throw err;
    throw new CaError('ERR_CA_CERT_MALFORMED', `${label} is not a well-formed X.509 certificate`, {
      cause: err,
    });
  }
}

/**
 * Walks from the leaf up through presented or pooled intermediates to a trust anchor.
 *
 * Node does not expose the intermediates a TLS client sent (`getPeerCertificate(true)` on the
 * server side returns the leaf alone). When an issuer is missing from both the peer's chain and
 * the pool, `tlsVerified` (OpenSSL validated the full chain against the same trust bundle during
 * the handshake: `socket.authorized`) stands in for the links above the leaf; the path is then
 * the leaf alone, and every leaf check still runs here.
 */
function buildPath(
  leaf: Parsed,
  intermediates: readonly Parsed[],
  anchors: readonly Parsed[],
  tlsVerified: boolean,
): Parsed[] {
  const path = [leaf];
  let cur = leaf;
  for (let depth = 0; depth < MAX_CHAIN; depth++) {
    const anchor = anchors.find((a) => issued(a, cur));
    if (anchor) {
      path.push(anchor);
      return path;
    }
    // A peer may include the root itself; it only counts if it is one of our anchors (handled above).
    const next = intermediates.find((c) => c !== cur && !path.includes(c) && issued(c, cur));
    if (!next && tlsVerified && cur === leaf) return path;
    if (!next) {
      const names = intermediates.some((c) => c.node.subject === cur.node.issuer);
      throw new CaError(
        'ERR_CA_CHAIN_UNTRUSTED',
        names
          ? `certificate "${cur.cert.subject}" carries a signature no trusted CA made`
          : `no trusted path from the peer certificate to the trust bundle (issuer "${cur.cert.issuer}" unknown or missing intermediate)`,
      );
    }
    path.push(next);
    cur = next;
  }
  throw new CaError('ERR_CA_CHAIN_INVALID', 'peer chain too long');
}

function checkValidity(path: readonly Parsed[], leaf: Parsed, now: number): void {
  for (const c of path) {
    const what = c === leaf ? 'peer certificate' : `CA certificate "${c.cert.subject}"`;
    if (now > c.notAfter)
      throw new CaError('ERR_CA_CERT_EXPIRED', `${what} expired at ${new Date(c.notAfter).toISOString()}`);
    if (now < c.notBefore)
      throw new CaError(
        'ERR_CA_CERT_NOT_YET_VALID',
        `${what} is not valid before ${new Date(c.notBefore).toISOString()}`,
      );
  }
}

function issued(issuer: Parsed, subject: Parsed): boolean {
  if (issuer.node.subject !== subject.node.issuer) return false;
  try {
    return subject.node.verify(issuer.node.publicKey);
  } catch {
    return false;
  }
}

function checkKey(c: Parsed, label: string): void {
  const key = c.node.publicKey;
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  if (type === 'rsa' || type === 'rsa-pss') {
    if ((details.modulusLength ?? 0) < 2048) {
      throw new CaError(
        'ERR_CA_KEY_TOO_WEAK',
        `${label} has a ${details.modulusLength}-bit RSA key (at least 2048 required)`,
      );
    }
    return;
  }
  if (type === 'ec' && ['prime256v1', 'secp384r1', 'secp521r1'].includes(details.namedCurve ?? '')) return;
  if (type === 'ed25519') return;
  throw new CaError(
    'ERR_CA_KEY_UNSUPPORTED',
    `${label} has an unsupported key type (${type}${details.namedCurve ? ` ${details.namedCurve}` : ''})`,
  );
}

function checkLeaf(leaf: Parsed, options: PeerVerifierOptions): void {
  const bc = leaf.cert.getExtension(x509.BasicConstraintsExtension);
  if (bc?.ca)
    throw new CaError(
      'ERR_CA_LEAF_IS_CA',
      'peer certificate is a CA certificate (CA:true), not a workload leaf',
    );
  const ku = leaf.cert.getExtension(x509.KeyUsagesExtension);
  if (ku && ku.usages & (x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign)) {
    throw new CaError(
      'ERR_CA_LEAF_KEY_USAGE',
      'peer certificate may sign certificates or CRLs (keyCertSign/cRLSign on a leaf)',
    );
  }
  if (ku && !(ku.usages & x509.KeyUsageFlags.digitalSignature)) {
    throw new CaError('ERR_CA_LEAF_KEY_USAGE', 'peer certificate lacks the digitalSignature key usage');
  }
  if (options.purpose) {
    const eku = leaf.cert.getExtension(x509.ExtendedKeyUsageExtension);
    if (eku && !eku.usages.includes(EKU[options.purpose]) && !eku.usages.includes(ANY_EKU)) {
      throw new CaError(
        'ERR_CA_LEAF_EXTENDED_KEY_USAGE',
        `peer certificate is not valid for ${options.purpose}`,
      );
    }
  }
  checkKey(leaf, 'peer certificate');
}

function checkCas(cas: readonly Parsed[], leaf: Parsed): void {
  cas.forEach((ca, i) => {
    const bc = ca.cert.getExtension(x509.BasicConstraintsExtension);
    if (!bc?.ca)
      throw new CaError(
        'ERR_CA_CHAIN_INVALID',
        `certificate "${ca.cert.subject}" signs others but is not a CA`,
      );
    // i intermediates sit between this CA and the leaf.
    if (bc.pathLength !== undefined && i > bc.pathLength) {
      throw new CaError(
        'ERR_CA_CHAIN_INVALID',
        `certificate "${ca.cert.subject}" exceeds its path length constraint`,
      );
    }
    const ku = ca.cert.getExtension(x509.KeyUsagesExtension);
    if (ku && !(ku.usages & x509.KeyUsageFlags.keyCertSign)) {
      throw new CaError('ERR_CA_CHAIN_INVALID', `CA certificate "${ca.cert.subject}" lacks keyCertSign`);
    }
    checkKey(ca, `CA certificate "${ca.cert.subject}"`);
    checkUriConstraints(ca, leaf);
  });
}

/** Enforces permitted/excluded URI subtrees of a CA on the leaf's URI SANs (RFC 5280 §4.2.1.10, host part). */
function checkUriConstraints(ca: Parsed, leaf: Parsed): void {
  const ext = ca.cert.getExtension(id_ce_nameConstraints);
  if (!ext) return;
  const nc = AsnConvert.parse(ext.value, NameConstraints);
  const permitted = (nc.permittedSubtrees ?? [])
    .map((s) => s.base.uniformResourceIdentifier)
    .filter((u): u is string => !!u);
  const excluded = (nc.excludedSubtrees ?? [])
    .map((s) => s.base.uniformResourceIdentifier)
    .filter((u): u is string => !!u);
  for (const uri of uriSans(leaf)) {
    let host: string;
    try {
      host = new URL(uri).hostname;
    } catch {
      throw new CaError('ERR_CA_NAME_CONSTRAINTS', 'peer certificate URI SAN is not a URI');
    }
    const match = (c: string) => (c.startsWith('.') ? host.endsWith(c) : host === c);
    if (excluded.some(match) || (permitted.length > 0 && !permitted.some(match))) {
      throw new CaError(
        'ERR_CA_NAME_CONSTRAINTS',
        `URI "${uri}" is outside the name constraints of "${ca.cert.subject}"`,
      );
    }
  }
}

function uriSans(c: Parsed): string[] {
  const san = c.cert.getExtension(x509.SubjectAlternativeNameExtension);
  return san ? san.names.items.filter((n) => n.type === 'url').map((n) => n.value) : [];
}

function leafSpiffeId(leaf: Parsed, trustDomain: string): SpiffeId {
  const uris = uriSans(leaf);
  if (uris.length === 0)
    throw new CaError('ERR_CA_SPIFFE_ID_MISSING', 'peer certificate carries no URI SAN (no SPIFFE ID)');
  if (uris.length > 1)
    throw new CaError(
      'ERR_CA_SPIFFE_ID_MULTIPLE',
      `peer certificate carries ${uris.length} URI SANs; exactly one SPIFFE ID is allowed`,
    );
  let id: SpiffeId;
  try {
    id = parseSpiffeId(uris[0]!);
  } catch (err) {
    throw new CaError(
      'ERR_CA_SPIFFE_ID_INVALID',
      `peer certificate URI SAN is not a valid SPIFFE ID: ${(err as Error).message}`,
      { cause: err },
    );
  }
  if (id.path === '')
    throw new CaError('ERR_CA_SPIFFE_ID_INVALID', 'peer SPIFFE ID names a trust domain, not a workload');
  if (id.trustDomain !== trustDomain) {
    throw new CaError(
      'ERR_CA_FOREIGN_TRUST_DOMAIN',
      `peer SPIFFE ID "${id.uri}" is not in trust domain "${trustDomain}"`,
    );
  }
  return id;
}
