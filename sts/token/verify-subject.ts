import { verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { ACCESS_TOKEN_TYP, parseAccessTokenClaims } from '../../core/index.ts';
import type { AccessTokenClaims } from '../../core/index.ts';
import { StsError } from '../errors.ts';

/** Inputs of {@link verifySubjectToken}. */
export interface VerifySubjectInput {
  readonly token: string;
  readonly issuer: string;
  /** The caller: the subject token must have been issued for it (its `aud`). */
  readonly caller: string;
  readonly nowSeconds: number;
  readonly skewSeconds: number;
  readonly publicKey: (kid: string) => KeyObject | undefined;
}

const invalid = (why: string) => new StsError('ERR_STS_SUBJECT_TOKEN_INVALID', `subject_token ${why}`);

/**
 * Verifies an RFC 8693 subject token: one of this STS's own access tokens (ES256, `typ`
 * at+jwt, a published kid, our `iss`), unexpired, and addressed to the caller. Throws
 * `ERR_STS_SUBJECT_TOKEN_INVALID`.
 */
export function verifySubjectToken(input: VerifySubjectInput): AccessTokenClaims {
  const parts = input.token.split('.');
  if (parts.length !== 3 || input.token.length > 8192) throw invalid('is not a compact JWS');
  let parsed: unknown;
  let payload: unknown;
  try {
    parsed = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8'));
    payload = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
  } catch {
    throw invalid('is not a compact JWS');
  }
  // JSON.parse also yields null, numbers and strings: only an object is a JOSE header.
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
    throw invalid('has an unexpected header');
  const header = parsed as Record<string, unknown>;
  if (header.alg !== 'ES256' || header.typ !== ACCESS_TOKEN_TYP || typeof header.kid !== 'string')
    throw invalid('has an unexpected header');
  const key = input.publicKey(header.kid);
  if (!key) throw invalid('was signed by a key this STS does not publish');
  const ok = verify(
    'sha256',
    Buffer.from(`${parts[0]}.${parts[1]}`),
    { key, dsaEncoding: 'ieee-p1363' },
    Buffer.from(parts[2]!, 'base64url'),
  );
  if (!ok) throw invalid('has a bad signature');
  let claims: AccessTokenClaims;
  try {
    claims = parseAccessTokenClaims(payload);
  } catch {
    throw invalid('has malformed claims');
  }
  if (claims.iss !== input.issuer) throw invalid('was issued by another issuer');
  if (claims.exp + input.skewSeconds <= input.nowSeconds) throw invalid('has expired');
  if (claims.nbf - input.skewSeconds > input.nowSeconds) throw invalid('is not yet valid');
  if (claims.aud !== input.caller) throw invalid('was not issued to the caller');
  return claims;
}
