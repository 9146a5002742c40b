import type { TLSSocket } from 'node:tls';
import { certificateThumbprint, parseSpiffeId } from '../core/index.ts';
import type { SpiffeId } from '../core/index.ts';
import { CaError } from './errors.ts';
import { splitPemBundle } from './pem.ts';
import {
  checkCertificateProfile,
  checkIntermediate,
  checkLeaf,
  checkNameConstraints,
  parseSvidCertificate,
} from './svid-certificate.ts';
import type { SvidCertificate } from './svid-certificate.ts';

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
   * any others (intermediates) join the known intermediates. They are never trusted by
   * themselves: each must chain to an anchor.
   */
  readonly trustAnchorsPem: string;
  /**
   * Further known intermediates, typically those of the part's own certificate chain (the same CA
   * issues every workload). A TLS server in Node cannot see the intermediates a client sent, so
   * the policy builds every path, on every side, from known intermediates only; whether the peer
   * sent its own is decided by the TLS handshake (see docs/decisions/0006).
   */
  readonly intermediatesPem?: string;
  readonly trustDomain: string;
  /** Called with canonical serials of the leaf and each intermediate; true refuses the chain. */
  readonly isRevoked?: (serial: string) => boolean;
  /** What the peer is to us: a client (`clientAuth`, listeners) or a server (`serverAuth`, dialers). */
  readonly purpose: 'clientAuth' | 'serverAuth';
  /** Allowance on notBefore/notAfter for clock differences (default {@link DEFAULT_PEER_CLOCK_SKEW_MS}, the config default). */
  readonly clockSkewMs?: number;
  readonly clock?: () => number;
}

/**
 * Verifies X.509-SVID chains presented by peers: one policy for every listener and dialer of
 * Portcullis (SPIFFE X509-SVID spec + RFC 5280 path rules; docs/threat-model.md lists each check).
 */
export interface PeerVerifier {
  /**
   * Verifies a DER chain, leaf first, followed by the intermediates the peer sent: the same
   * verdict and code {@link verifySocket} gives a TLS peer that sent that chain. Throws CaError.
   */
  verifyChain(chain: readonly Uint8Array[]): PeerIdentity;
  /**
   * Verifies the certificate a TLS peer presented (server or client side). The verdict on the
   * certificate is computed once per connection (and cached by leaf fingerprint across
   * connections); expiry and revocation are checked again on every call, so a long-lived
   * connection cannot outlive its certificate. Throws CaError `ERR_CA_PEER_NO_CERT` when the
   * peer sent no certificate.
   */
  verifySocket(socket: TLSSocket): PeerIdentity;
}

interface Verified {
  readonly identity: PeerIdentity;
  /** Serials of every certificate on the path below the anchor, to re-check revocation. */
  readonly serials: readonly string[];
  /** Validity window of the whole path, skew applied. */
  readonly notBefore: number;
  readonly notAfter: number;
}

/** The default of every part's `tls.clockSkew`. */
export const DEFAULT_PEER_CLOCK_SKEW_MS = 60_000;
const MAX_CHAIN = 5;
const MAX_CACHED = 10_000;
/**
 * OpenSSL verification results (`socket.authorizationError`) meaning that the chain the peer sent
 * does not lead to the trust bundle. Time errors are left to the policy (it applies the skew),
 * and Node's hostname check is replaced by the SPIFFE ID check.
 */
const TLS_INCOMPLETE = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
]);
const TLS_IGNORED = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'ERR_TLS_CERT_ALTNAME_INVALID']);

/** Builds a {@link PeerVerifier} over a trust bundle. Throws TypeError for an empty or unreadable bundle. */
export function createPeerVerifier(options: PeerVerifierOptions): PeerVerifier {
  const bundle = splitPemBundle(options.trustAnchorsPem).map((der) => {
    const p = parseTrusted(der);
    if (!p.node.ca) throw new TypeError('trust bundle holds a certificate that is not a CA');
    return p;
  });
  const anchors = bundle.filter((c) => c.node.checkIssued(c.node) && c.node.verify(c.node.publicKey));
  const bundlePool = bundle.filter((c) => !anchors.includes(c));
  if (anchors.length === 0) throw new TypeError('"trustAnchorsPem" holds no self-signed CA certificate');
  const extra = options.intermediatesPem
    ? splitPemBundle(options.intermediatesPem)
        .map(parseTrusted)
        .filter((c) => c.node.ca && !bundle.some((b) => b.node.fingerprint256 === c.node.fingerprint256))
    : [];
  const known = [...bundlePool, ...extra];
  const clock = options.clock ?? Date.now;
  const skew = options.clockSkewMs ?? DEFAULT_PEER_CLOCK_SKEW_MS;
  const isRevoked = options.isRevoked ?? (() => false);
  const bySocket = new WeakMap<TLSSocket, Verified | CaError>();
  const byFingerprint = new Map<string, Verified>();
  /** Signature checks between known certificates, which never change for this verifier. */
  const links = new Map<string, boolean>();

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

  function issued(issuer: SvidCertificate, subject: SvidCertificate): boolean {
    if (issuer.node.subject !== subject.node.issuer) return false;
    const cacheable = known.includes(subject);
    const key = cacheable ? `${issuer.node.fingerprint256}>${subject.node.fingerprint256}` : '';
    const memo = cacheable ? links.get(key) : undefined;
    if (memo !== undefined) return memo;
    let ok: boolean;
    try {
      ok = subject.node.verify(issuer.node.publicKey);
    } catch {
      ok = false;
    }
    if (cacheable) links.set(key, ok);
    return ok;
  }

  /**
   * Every path from the leaf through `intermediates` to an anchor, depth first. Two known CAs may
   * share a name and key (a renewed intermediate, a cross-signed one during a root rotation), so
   * the first issuer found is not always the one to use: callers pick among the paths.
   */
  function* paths(
    cur: SvidCertificate,
    intermediates: readonly SvidCertificate[],
    path: SvidCertificate[],
  ): Generator<SvidCertificate[]> {
    for (const anchor of anchors) if (issued(anchor, cur)) yield [...path, anchor];
    if (path.length >= MAX_CHAIN) return;
    for (const next of intermediates) {
      if (next === cur || path.includes(next) || !issued(next, cur)) continue;
      yield* paths(next, intermediates, [...path, next]);
    }
  }

  /** A path from the leaf to an anchor through `intermediates`; undefined when there is none. */
  function buildPath(
    leaf: SvidCertificate,
    intermediates: readonly SvidCertificate[],
  ): SvidCertificate[] | undefined {
    for (const p of paths(leaf, intermediates, [leaf])) return p;
    return undefined;
  }

  /**
   * The path to judge the leaf on: the first whose CAs are all within their validity, as OpenSSL
   * prefers a time-valid issuer; else the first path, whose expired CA names the refusal.
   */
  function choosePath(leaf: SvidCertificate, now: number): SvidCertificate[] | undefined {
    let first: SvidCertificate[] | undefined;
    for (const p of paths(leaf, known, [leaf])) {
      first ??= p;
      if (p.slice(1).every((c) => now <= c.notAfter + skew && now >= c.notBefore - skew)) return p;
    }
    return first;
  }

  /** The whole policy on a leaf, over the known intermediates; everything but the TLS handshake's part. */
  function validate(leafDer: Uint8Array): Verified {
    const leaf = parseSvidCertificate(leafDer, 'peer certificate');
    const now = clock();
    checkValidity(leaf, now, skew);
    checkCertificateProfile(leaf, 'leaf');
    checkLeaf(leaf, options.purpose);
    const spiffeId = leafSpiffeId(leaf, options.trustDomain);
    const path = choosePath(leaf, now);
    if (!path) {
      throw new CaError(
        'ERR_CA_CHAIN_UNTRUSTED',
        `no trusted path from the peer certificate to the trust bundle (issuer "${leaf.node.issuer.replace(/\n/g, ', ')}" is not a known CA)`,
      );
    }
    const cas = path.slice(1, -1);
    for (const c of path.slice(1)) checkValidity(c, now, skew);
    cas.forEach((ca, i) => {
      checkCertificateProfile(ca, 'ca');
      checkIntermediate(ca, i, options.purpose);
      checkNameConstraints(ca, leaf);
    });
    return {
      identity: Object.freeze({
        spiffeId,
        serial: leaf.serial,
        thumbprint: certificateThumbprint(leaf.der),
        notAfter: new Date(leaf.notAfter),
        leafDer: leaf.der,
      }),
      serials: path.slice(0, -1).map((c) => c.serial),
      notBefore: Math.max(...path.map((c) => c.notBefore)) - skew,
      notAfter: Math.min(...path.map((c) => c.notAfter)) + skew,
    };
  }

  /** {@link validate}, cached by leaf fingerprint (successes only; the verdict depends on nothing else). */
  function validateCached(fingerprint: string, der: () => Uint8Array): Verified {
    const hit = byFingerprint.get(fingerprint);
    if (hit) return hit;
    const v = validate(der());
    if (byFingerprint.size >= MAX_CACHED) byFingerprint.delete(byFingerprint.keys().next().value!);
    byFingerprint.set(fingerprint, v);
    return v;
  }

  function verifyChain(chain: readonly Uint8Array[]): PeerIdentity {
    if (chain.length === 0) throw new CaError('ERR_CA_PEER_NO_CERT', 'peer presented no certificate');
    if (chain.length > MAX_CHAIN)
      throw new CaError('ERR_CA_CHAIN_INVALID', `peer chain longer than ${MAX_CHAIN} certificates`);
    const v = validate(chain[0]!);
    // What the TLS handshake checks on a socket: the chain as sent leads to the trust bundle.
    const leaf = parseSvidCertificate(chain[0]!, 'peer certificate');
    const sent = chain.slice(1).map((der, i) => parseSvidCertificate(der, `peer chain[${i + 1}]`));
    if (!buildPath(leaf, [...sent, ...bundlePool])) throw incomplete();
    return check(v);
  }

  function verifySocket(socket: TLSSocket): PeerIdentity {
    let v = bySocket.get(socket);
    if (v === undefined) {
      try {
        v = verifyConnection(socket);
      } catch (err) {
        if (!(err instanceof CaError)) throw err;
        v = err;
      }
      bySocket.set(socket, v);
    }
    if (v instanceof CaError) throw v;
    return check(v);
  }

  function verifyConnection(socket: TLSSocket): Verified {
    // Read once per socket: on a client socket Node 24 hands the peer certificate out once (a
    // second getPeerX509Certificate() or getPeerCertificate() finds none).
    const cert = socket.getPeerX509Certificate();
    if (!cert) throw new CaError('ERR_CA_PEER_NO_CERT', 'peer presented no certificate');
    const v = validateCached(cert.fingerprint256, () => new Uint8Array(cert.raw));
    // The handshake verified the chain the peer sent against the same trust bundle (the
    // listener's or dialer's `ca`): its verdict on that chain completes the policy's.
    if (!socket.authorized) {
      const why = String(socket.authorizationError ?? 'unknown');
      if (TLS_INCOMPLETE.has(why)) throw incomplete();
      if (!TLS_IGNORED.has(why))
        throw new CaError('ERR_CA_CHAIN_INVALID', `the TLS handshake refused the peer chain (${why})`);
    }
    return v;
  }

  return { verifyChain, verifySocket };
}

function incomplete(): CaError {
  return new CaError(
    'ERR_CA_CHAIN_INCOMPLETE',
    'peer did not send the intermediate certificates linking its certificate to the trust bundle',
  );
}

function parseTrusted(der: Uint8Array): SvidCertificate {
  try {
    return parseSvidCertificate(der, 'trust bundle certificate');
  } catch (err) {
    throw new TypeError(`trust material holds an unreadable certificate: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

function checkValidity(c: SvidCertificate, now: number, skew: number): void {
  if (now > c.notAfter + skew)
    throw new CaError('ERR_CA_CERT_EXPIRED', `${c.label} expired at ${new Date(c.notAfter).toISOString()}`);
  if (now < c.notBefore - skew)
    throw new CaError(
      'ERR_CA_CERT_NOT_YET_VALID',
      `${c.label} is not valid before ${new Date(c.notBefore).toISOString()}`,
    );
}

function leafSpiffeId(leaf: SvidCertificate, trustDomain: string): SpiffeId {
  const uris = leaf.uris;
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
