import { compactVerify } from 'jose';
import {
  ACCESS_TOKEN_TYP,
  TOKEN_ALGORITHMS,
  TokenClaimsError,
  parseAccessTokenClaims,
} from '../../core/index.ts';
import type { AccessTokenClaims } from '../../core/index.ts';
import { SidecarError } from '../errors.ts';
import type { JwksCache } from '../jwks/cache.ts';

/** A token whose signature and claims passed; binding to the connection is checked separately. */
export interface VerifiedToken {
  readonly claims: AccessTokenClaims;
  readonly kid: string;
}

/** What {@link verifyAccessToken} checks the token against. Times in milliseconds from `clock`. */
export interface TokenRules {
  readonly jwks: Pick<JwksCache, 'key'>;
  /** Exact `iss`. */
  readonly issuer: string;
  /** This service's SPIFFE ID: `aud` must be this string and nothing else. */
  readonly audience: string;
  readonly maxTokenBytes: number;
  /** Longest accepted `exp - iat`. */
  readonly maxLifetimeSeconds: number;
  /** Tolerance for `nbf`/`iat` in the future (clock skew between STS and sidecar). */
  readonly skewSeconds: number;
  readonly isJtiRevoked: (jti: string) => boolean;
  readonly clock: () => number;
}

const ALLOWED = new Set<string>(TOKEN_ALGORITHMS);
const TYPES = new Set([ACCESS_TOKEN_TYP, `application/${ACCESS_TOKEN_TYP}`]);
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Verifies a Portcullis access token (RFC 9068 profile of docs/architecture.md § Tokens): size-capped before
 * parsing; header `alg` in the allow-list (never `none`, never HMAC) and equal to the key's,
 * `typ` `at+jwt`, `kid` known to the JWKS; signature; then `exp` present and an integer, `aud` a
 * single string equal to this service, exact `iss`, `nbf`/`iat` not in the future beyond the
 * skew, `exp - iat` within the maximum lifetime, `exp` not passed, every other claim of the
 * contract well-formed, `jti` not revoked. Each failure has its own `ERR_SIDECAR_TOKEN_*` code.
 */
export async function verifyAccessToken(token: string, rules: TokenRules): Promise<VerifiedToken> {
  if (token.length > rules.maxTokenBytes) throw fail('ERR_SIDECAR_TOKEN_TOO_LARGE', 'token too large');
  const dot = token.indexOf('.');
  if (dot <= 0) throw fail('ERR_SIDECAR_TOKEN_MALFORMED', 'token is not a JWS');
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(decoder.decode(Buffer.from(token.slice(0, dot), 'base64url'))) as Record<
      string,
      unknown
    >;
  } catch {
    throw fail('ERR_SIDECAR_TOKEN_MALFORMED', 'token header is not JSON');
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header))
    throw fail('ERR_SIDECAR_TOKEN_MALFORMED', 'token header is not a JSON object');
  if (typeof header.alg !== 'string' || !ALLOWED.has(header.alg))
    throw fail('ERR_SIDECAR_TOKEN_ALG_REFUSED', `algorithm ${JSON.stringify(header.alg)} is not accepted`);
  if (header.crit !== undefined)
    throw fail('ERR_SIDECAR_TOKEN_MALFORMED', 'critical header parameters are not supported');
  if (typeof header.typ !== 'string' || !TYPES.has(header.typ.toLowerCase()))
    throw fail('ERR_SIDECAR_TOKEN_TYP_INVALID', 'token typ must be at+jwt');
  if (typeof header.kid !== 'string') throw fail('ERR_SIDECAR_TOKEN_KEY_UNKNOWN', 'token names no key');
  const key = await rules.jwks.key(header.kid);
  if (key.alg !== header.alg) throw fail('ERR_SIDECAR_TOKEN_ALG_REFUSED', 'algorithm does not match the key');
  let payload: unknown;
  try {
    const result = await compactVerify(token, key.key, { algorithms: [key.alg] });
    payload = JSON.parse(decoder.decode(result.payload));
  } catch (err) {
    throw fail('ERR_SIDECAR_TOKEN_SIGNATURE_INVALID', 'token signature does not verify', err);
  }
  return { claims: checkClaims(payload, rules), kid: header.kid };
}

/** The per-claim checks, in an order that gives each common mistake its own code. */
function checkClaims(payload: unknown, rules: TokenRules): AccessTokenClaims {
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload))
    throw fail('ERR_SIDECAR_TOKEN_CLAIMS_INVALID', 'claims are not a JSON object');
  const p = payload as Record<string, unknown>;
  if (p.exp === undefined) throw fail('ERR_SIDECAR_TOKEN_CLAIMS_INVALID', 'token has no "exp"');
  if (!Number.isSafeInteger(p.exp)) throw fail('ERR_SIDECAR_TOKEN_CLAIMS_INVALID', '"exp" is not an integer');
  if (p.aud !== rules.audience)
    throw fail(
      'ERR_SIDECAR_TOKEN_AUDIENCE_INVALID',
      Array.isArray(p.aud) ? 'token names more than one audience' : 'token is for another audience',
    );
  if (p.iss !== rules.issuer) throw fail('ERR_SIDECAR_TOKEN_ISSUER_INVALID', 'token is from another issuer');
  let claims: AccessTokenClaims;
  try {
    claims = parseAccessTokenClaims(payload);
  } catch (err) {
    if (err instanceof TokenClaimsError) throw fail('ERR_SIDECAR_TOKEN_CLAIMS_INVALID', err.message, err);
    throw err;
  }
  const now = Math.floor(rules.clock() / 1000);
  if (claims.nbf > now + rules.skewSeconds || claims.iat > now + rules.skewSeconds)
    throw fail('ERR_SIDECAR_TOKEN_NOT_YET_VALID', 'token is not valid yet');
  if (claims.exp - claims.iat > rules.maxLifetimeSeconds || claims.exp < claims.iat)
    throw fail('ERR_SIDECAR_TOKEN_LIFETIME_TOO_LONG', 'token lifetime exceeds the maximum');
  if (now >= claims.exp) throw fail('ERR_SIDECAR_TOKEN_EXPIRED', 'token has expired');
  if (rules.isJtiRevoked(claims.jti)) throw fail('ERR_SIDECAR_TOKEN_REVOKED', 'token has been revoked');
  return claims;
}

function fail(
  code: ConstructorParameters<typeof SidecarError>[0],
  message: string,
  cause?: unknown,
): SidecarError {
  return new SidecarError(code, message, cause === undefined ? undefined : { cause });
}
