import { timingSafeEqual } from 'node:crypto';
import { SidecarError } from '../../errors.ts';
import type { PeerIdentity } from '../../../ca/index.ts';
import type { VerifiedToken } from '../../token/verify.ts';
import type { InboundLayer } from '../context.ts';

/**
 * Layer 3, binding: the token's `sub` is the peer certificate's SPIFFE ID and its
 * `cnf.x5t#S256` the SHA-256 thumbprint of the leaf presented on this very connection, both
 * compared in constant time. A token replayed on another workload's connection fails here
 * with `ERR_SIDECAR_TOKEN_NOT_BOUND`.
 */
export function bindingLayer(): InboundLayer {
  // The last verified token found bound to each peer identity. Both objects are cached (per
  // connection and per token), so a keep-alive connection compares the bytes once per token.
  const bound = new WeakMap<PeerIdentity, VerifiedToken>();
  return (ctx) => {
    const verified = ctx.verified!;
    const peer = ctx.peer!;
    if (bound.get(peer) === verified) return;
    const { claims } = verified;
    const subOk = equal(claims.sub, peer.spiffeId.uri);
    const cnfOk = equal(claims.cnf['x5t#S256'], peer.thumbprint);
    if (!(subOk && cnfOk))
      throw new SidecarError('ERR_SIDECAR_TOKEN_NOT_BOUND', 'token is not bound to this connection');
    bound.set(peer, verified);
  };
}

function equal(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  // Lengths are public (SPIFFE IDs and fixed-size thumbprints); compare the bytes in constant time.
  return x.length === y.length && timingSafeEqual(x, y);
}
