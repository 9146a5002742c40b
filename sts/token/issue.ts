import { buildAccessTokenClaims } from '../../core/index.ts';
import type { AccessTokenClaims, Workload } from '../../core/index.ts';
import { StsError } from '../errors.ts';
import type { TokenRequest } from './parse-request.ts';
import { jwsSigningInput } from './sign.ts';

/** Inputs of {@link issueAccessToken}: the verified caller, its request, and the deps. */
export interface IssueInput {
  readonly issuer: string;
  /** The caller's registry entry (already found from its verified SPIFFE ID). */
  readonly workload: Workload;
  /** `x5t#S256` thumbprint of the caller's certificate on this connection. */
  readonly thumbprint: string;
  readonly request: TokenRequest;
  /** Global cap in milliseconds. */
  readonly ttlCapMs: number;
  readonly nowMs: number;
  readonly jti: string;
  /** The signing key's encoded JOSE header (alg, kid, typ). */
  readonly encodedHeader: string;
  /** For token exchange with a subject token: the `sub` being acted for. */
  readonly delegatedSubject?: string;
}

/** A decided token: its claims and the JWS signing input the caller signs. */
export interface IssuedToken {
  readonly signingInput: string;
  readonly claims: AccessTokenClaims;
  readonly expiresIn: number;
}

/**
 * Decides and signs one access token: the audience must be in the caller's registry entry
 * (`ERR_STS_AUDIENCE_NOT_ALLOWED`), a sent `client_id` must be the caller
 * (`ERR_STS_CLIENT_NOT_REGISTERED`), and the lifetime is the entry's TTL capped by the global
 * cap; asking for more is `ERR_STS_TTL_TOO_LONG`. The token is bound to the certificate (RFC 8705).
 * Pure: signing is the caller's (the STS signs through its signing pool).
 */
export function issueAccessToken(input: IssueInput): IssuedToken {
  const { workload, request } = input;
  const caller = workload.spiffeId.uri;
  if (request.clientId !== undefined && request.clientId !== caller) {
    throw new StsError(
      'ERR_STS_CLIENT_NOT_REGISTERED',
      "client_id does not name the certificate's SPIFFE ID",
    );
  }
  if (!workload.audiences.includes(request.audience)) {
    throw new StsError(
      'ERR_STS_AUDIENCE_NOT_ALLOWED',
      `audience is not among the audiences registered for ${caller}`,
    );
  }
  const maxSeconds = Math.floor(Math.min(workload.tokenTtlMs, input.ttlCapMs) / 1000);
  if (request.requestedTtlSeconds !== undefined && request.requestedTtlSeconds > maxSeconds) {
    throw new StsError(
      'ERR_STS_TTL_TOO_LONG',
      `expires_in may be at most ${maxSeconds} seconds for this client`,
    );
  }
  const ttlSeconds = request.requestedTtlSeconds ?? maxSeconds;
  const delegated = input.delegatedSubject !== undefined && input.delegatedSubject !== caller;
  const claims = buildAccessTokenClaims({
    issuer: input.issuer,
    subject: delegated ? input.delegatedSubject! : caller,
    audience: request.audience,
    clientId: caller,
    nowSeconds: Math.floor(input.nowMs / 1000),
    ttlSeconds,
    jti: input.jti,
    thumbprint: input.thumbprint,
    ...(delegated ? { actor: caller } : {}),
  });
  return { signingInput: jwsSigningInput(claims, input.encodedHeader), claims, expiresIn: ttlSeconds };
}
