import { createHash } from 'node:crypto';
import { TokenClaimsError } from './errors.ts';

/** JOSE `typ` of every Portcullis access token (RFC 9068). */
export const ACCESS_TOKEN_TYP = 'at+jwt';
/** Confirmation method of RFC 8705 §3.1: SHA-256 thumbprint of the client certificate's DER. */
export const CNF_THUMBPRINT = 'x5t#S256';
/** RFC 8693 token type URI of the tokens the STS issues. */
export const ACCESS_TOKEN_TYPE_URI = 'urn:ietf:params:oauth:token-type:access_token';
/** RFC 8693 grant type URI. */
export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
/** Signing algorithms the STS may use and verifiers may accept. Never `none`, never HMAC. */
export const TOKEN_ALGORITHMS = ['ES256', 'EdDSA'] as const;
export type TokenAlgorithm = (typeof TOKEN_ALGORITHMS)[number];

/** The claims of a Portcullis access token (docs/architecture.md § Tokens). Times are seconds since the epoch. */
export interface AccessTokenClaims {
  readonly iss: string;
  /** The caller's SPIFFE ID. */
  readonly sub: string;
  /** Exactly one audience: the SPIFFE ID of the service the token is for. */
  readonly aud: string;
  readonly iat: number;
  readonly nbf: number;
  readonly exp: number;
  readonly jti: string;
  readonly client_id: string;
  readonly cnf: { readonly 'x5t#S256': string };
  /** RFC 8693 delegation: the actor that presented a subject token on `sub`'s behalf. */
  readonly act?: { readonly sub: string };
}

/** Inputs of {@link buildAccessTokenClaims}; all times in seconds. */
export interface BuildClaimsInput {
  readonly issuer: string;
  readonly subject: string;
  readonly audience: string;
  readonly clientId: string;
  readonly nowSeconds: number;
  readonly ttlSeconds: number;
  readonly jti: string;
  readonly thumbprint: string;
  readonly actor?: string;
}

/** Builds the claims set of an access token. Pure: time and jti come from the caller. */
export function buildAccessTokenClaims(input: BuildClaimsInput): AccessTokenClaims {
  if (
    !Number.isSafeInteger(input.nowSeconds) ||
    !Number.isSafeInteger(input.ttlSeconds) ||
    input.ttlSeconds <= 0
  ) {
    throw new TypeError('"nowSeconds" and "ttlSeconds" must be integers, ttl positive');
  }
  return {
    iss: input.issuer,
    sub: input.subject,
    aud: input.audience,
    iat: input.nowSeconds,
    nbf: input.nowSeconds,
    exp: input.nowSeconds + input.ttlSeconds,
    jti: input.jti,
    client_id: input.clientId,
    cnf: { [CNF_THUMBPRINT]: input.thumbprint } as { 'x5t#S256': string },
    ...(input.actor ? { act: { sub: input.actor } } : {}),
  };
}

/** base64url(SHA-256(DER)): the RFC 8705 `x5t#S256` thumbprint of a certificate. */
export function certificateThumbprint(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('base64url');
}

const THUMBPRINT = /^[A-Za-z0-9_-]{43}$/;

/**
 * Parses an untrusted JWT payload into {@link AccessTokenClaims}: every claim present with the
 * right type, `aud` a single string, times integers, `cnf.x5t#S256` a SHA-256 thumbprint.
 * Signature and time checks are the verifier's job; this only fixes the shape.
 */
export function parseAccessTokenClaims(payload: unknown): AccessTokenClaims {
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
    throw new TokenClaimsError('claims must be a JSON object');
  }
  const p = payload as Record<string, unknown>;
  for (const name of ['iss', 'sub', 'jti', 'client_id'] as const) {
    if (typeof p[name] !== 'string' || (p[name] as string).length === 0) {
      throw new TokenClaimsError(`"${name}" claim must be a non-empty string`);
    }
  }
  if (typeof p.aud !== 'string') throw new TokenClaimsError('"aud" claim must be a single string');
  for (const name of ['iat', 'nbf', 'exp'] as const) {
    if (!Number.isSafeInteger(p[name])) throw new TokenClaimsError(`"${name}" claim must be an integer`);
  }
  const cnf = p.cnf as Record<string, unknown> | undefined;
  if (
    !cnf ||
    typeof cnf !== 'object' ||
    typeof cnf[CNF_THUMBPRINT] !== 'string' ||
    !THUMBPRINT.test(cnf[CNF_THUMBPRINT])
  ) {
    throw new TokenClaimsError('"cnf" claim must carry an "x5t#S256" SHA-256 thumbprint');
  }
  let act: { sub: string } | undefined;
  if (p.act !== undefined) {
    const a = p.act as Record<string, unknown>;
    if (!a || typeof a !== 'object' || typeof a.sub !== 'string')
      throw new TokenClaimsError('"act" claim must carry a "sub"');
    act = { sub: a.sub };
  }
  return {
    iss: p.iss as string,
    sub: p.sub as string,
    aud: p.aud,
    iat: p.iat as number,
    nbf: p.nbf as number,
    exp: p.exp as number,
    jti: p.jti as string,
    client_id: p.client_id as string,
    cnf: { 'x5t#S256': cnf[CNF_THUMBPRINT] as string },
    ...(act ? { act } : {}),
  };
}
