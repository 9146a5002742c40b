import type { TLSSocket } from 'node:tls';
import { CaError } from '../../ca/index.ts';
import type { StsPeer, StsPeerVerifier } from './peer.ts';

/** Options of {@link cachePeerVerifications}. */
export interface PeerCacheOptions {
  readonly clock: { now(): number };
  /** Serial deny-list check, repeated on every hit. */
  readonly isRevoked: (serial: string) => boolean;
  /** Changes whenever the serial deny-list changes; a change empties the cache. */
  readonly generation: () => number;
  /** Longest time a verification is reused, so CA-side changes are picked up (default 60s). */
  readonly ttlMs?: number;
  readonly maxEntries?: number;
}

interface Entry {
  readonly peer: StsPeer;
  readonly until: number;
}

/**
 * Wraps a peer verifier so that a certificate verified on one connection is not parsed and
 * path-validated again on the next one (each new TLS connection otherwise costs an ASN.1 parse
 * and two signature checks). Only successes are cached, keyed on the leaf's SHA-256
 * fingerprint; every hit takes the policy's verdict on expiry (with its skew) and checks the serial against the deny-list, and
 * an entry lives at most `ttlMs` or until the deny-list changes.
 */
export function cachePeerVerifications(inner: StsPeerVerifier, options: PeerCacheOptions): StsPeerVerifier {
  const ttl = options.ttlMs ?? 60_000;
  const max = options.maxEntries ?? 10_000;
  const entries = new Map<string, Entry>();
  const bySocket = new WeakMap<TLSSocket, StsPeer>();
  let generation = options.generation();

  const recheck = (socket: TLSSocket): StsPeer => {
    // Expiry is the policy's verdict (tls.clockSkew, every certificate of the path), from its own
    // per-connection cache: a leaf expiring during a connection is refused when every part refuses it.
    const peer = inner.verifySocket(socket);
    if (options.isRevoked(peer.serial))
      throw new CaError('ERR_CA_CERT_REVOKED', `certificate serial ${peer.serial} is revoked`);
    return peer;
  };

  return {
    verifySocket(socket) {
      // A cached verdict is about the certificate; whether this connection sent the chain that
      // leads to the trust bundle is the handshake's, so such a connection takes the full check.
      if (!socket.authorized) return inner.verifySocket(socket);
      const known = bySocket.get(socket);
      if (known && options.generation() === generation) return recheck(socket);
      const now = options.clock.now();
      if (options.generation() !== generation) {
        generation = options.generation();
        entries.clear();
      }
      // The X509Certificate form: the detailed object of getPeerCertificate() cost ~6 % of a new connection.
      const fingerprint = socket.getPeerX509Certificate?.()?.fingerprint256;
      const hit = fingerprint ? entries.get(fingerprint) : undefined;
      if (hit && hit.until > now) {
        bySocket.set(socket, hit.peer);
        return recheck(socket);
      }
      const peer = inner.verifySocket(socket);
      if (fingerprint) {
        entries.delete(fingerprint);
        if (entries.size >= max) entries.delete(entries.keys().next().value!);
        entries.set(fingerprint, { peer, until: Math.min(now + ttl, peer.notAfter.getTime()) });
      }
      bySocket.set(socket, peer);
      return peer;
    },
  };
}
