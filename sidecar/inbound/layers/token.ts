import type { ClaimsCache } from '../../token/claims-cache.ts';
import { extractBearer } from '../../token/bearer.ts';
import { verifyAccessToken } from '../../token/verify.ts';
import type { TokenRules } from '../../token/verify.ts';
import type { JwksCache } from '../../jwks/cache.ts';
import { SidecarError } from '../../errors.ts';
import type { InboundContext, InboundLayer } from '../context.ts';

/**
 * Layer 2, token: exactly one bearer token, verified in full the first time it is seen on a
 * given client certificate, then served from the claims cache — still checking, on every
 * request, expiry, revocation of its `jti`, and that the JWKS is usable and holds its key.
 */
export function tokenLayer(
  rules: TokenRules & { readonly jwks: JwksCache },
  cache: ClaimsCache,
): InboundLayer {
  return (ctx) => {
    const token = extractBearer(ctx.req.rawHeaders, rules.maxTokenBytes);
    ctx.token = token;
    const hit = cache.get(ctx.peer!.thumbprint, token);
    if (hit) {
      const { claims } = hit;
      if (rules.clock() >= claims.exp * 1000)
        throw new SidecarError('ERR_SIDECAR_TOKEN_EXPIRED', 'token has expired');
      if (rules.isJtiRevoked(claims.jti))
        throw new SidecarError('ERR_SIDECAR_TOKEN_REVOKED', 'token has been revoked');
      rules.jwks.assertKnown(hit.kid);
      ctx.verified = hit;
      return;
    }
    return verifyAndCache(ctx, token, rules, cache);
  };
}

async function verifyAndCache(
  ctx: InboundContext,
  token: string,
  rules: TokenRules,
  cache: ClaimsCache,
): Promise<void> {
  const verified = await verifyAccessToken(token, rules);
  // Only a token bound to this certificate is worth keeping: one replayed from another
  // connection is refused by the binding layer and must not displace its owner's entry.
  if (verified.claims.cnf['x5t#S256'] === ctx.peer!.thumbprint)
    cache.set(ctx.peer!.thumbprint, token, verified);
  ctx.verified = verified;
}
