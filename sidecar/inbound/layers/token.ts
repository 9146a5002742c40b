import type { PeerIdentity } from '../../../ca/index.ts';
import type { ClaimsCache } from '../../token/claims-cache.ts';
import { findAuthorization, parseBearer } from '../../token/bearer.ts';
import { verifyAccessToken } from '../../token/verify.ts';
import type { TokenRules, VerifiedToken } from '../../token/verify.ts';
import type { JwksCache } from '../../jwks/cache.ts';
import { SidecarError } from '../../errors.ts';
import type { InboundContext, InboundLayer } from '../context.ts';

/** The last `Authorization` value a connection's peer presented, with the token it verified to. */
interface Presented {
  readonly value: string;
  readonly token: string;
  readonly verified: VerifiedToken;
}

/**
 * Layer 2, token: exactly one bearer token, verified in full the first time it is seen on a
 * given client certificate, then served from the claims cache — still checking, on every
 * request, expiry, revocation of its `jti`, and that the JWKS is usable and holds its key.
 * A keep-alive connection that presents the same `Authorization` value as on its previous request
 * skips the header parse and the cache lookup (a hash of the whole token) too; the per-request
 * checks are the same.
 */
export function tokenLayer(
  rules: TokenRules & { readonly jwks: JwksCache },
  cache: ClaimsCache,
): InboundLayer {
  // Keyed by the peer identity, which the verifier keeps per connection: gone with the connection.
  const last = new WeakMap<PeerIdentity, Presented>();
  return (ctx) => {
    const value = findAuthorization(ctx.req.rawHeaders);
    const peer = ctx.peer!;
    const seen = last.get(peer);
    if (seen !== undefined && seen.value === value) {
      ctx.token = seen.token;
      return accept(ctx, seen.verified, rules);
    }
    const token = parseBearer(value, rules.maxTokenBytes);
    ctx.token = token;
    const hit = cache.get(peer.thumbprint, token);
    if (hit) {
      accept(ctx, hit, rules);
      last.set(peer, { value, token, verified: hit });
      return;
    }
    return verifyAndCache(ctx, value, token, rules, cache, last);
  };
}

/** The checks a cached verification does not settle: expiry, revocation, and the key still being served. */
function accept(
  ctx: InboundContext,
  verified: VerifiedToken,
  rules: TokenRules & { readonly jwks: JwksCache },
) {
  const { claims } = verified;
  if (rules.clock() >= claims.exp * 1000)
    throw new SidecarError('ERR_SIDECAR_TOKEN_EXPIRED', 'token has expired');
  if (rules.isJtiRevoked(claims.jti))
    throw new SidecarError('ERR_SIDECAR_TOKEN_REVOKED', 'token has been revoked');
  rules.jwks.assertKnown(verified.kid);
  ctx.verified = verified;
}

async function verifyAndCache(
  ctx: InboundContext,
  value: string,
  token: string,
  rules: TokenRules,
  cache: ClaimsCache,
  last: WeakMap<PeerIdentity, Presented>,
): Promise<void> {
  const verified = await verifyAccessToken(token, rules);
  // Only a token bound to this certificate is worth keeping: one replayed from another
  // connection is refused by the binding layer and must not displace its owner's entry.
  const peer = ctx.peer!;
  if (verified.claims.cnf['x5t#S256'] === peer.thumbprint) {
    cache.set(peer.thumbprint, token, verified);
    last.set(peer, { value, token, verified });
  }
  ctx.verified = verified;
}
