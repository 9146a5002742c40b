import { TOKEN_EXCHANGE_GRANT } from '../../core/index.ts';
import { StsError } from '../errors.ts';

/** RFC 8693 subject token type the STS accepts: its own access tokens. */
export const SUBJECT_TOKEN_TYPES = [
  'urn:ietf:params:oauth:token-type:access_token',
  'urn:ietf:params:oauth:token-type:jwt',
] as const;

/** A parsed token request (RFC 6749 §4.4 client credentials or RFC 8693 token exchange). */
export interface TokenRequest {
  readonly grantType: 'client_credentials' | typeof TOKEN_EXCHANGE_GRANT;
  /** The one audience (a SPIFFE ID) asked for. */
  readonly audience: string;
  /** `expires_in` asked for, in seconds, if any. */
  readonly requestedTtlSeconds?: number;
  /** `client_id`, if sent; it must then name the caller (RFC 8705 §2.1). */
  readonly clientId?: string;
  /** RFC 8693 delegation: a token issued to the caller, on whose `sub` it acts. */
  readonly subjectToken?: string;
}

const SINGLE = [
  'grant_type',
  'expires_in',
  'client_id',
  'subject_token',
  'subject_token_type',
  'requested_token_type',
  'scope',
];

/**
 * Parses an `application/x-www-form-urlencoded` token request body. Refuses, with the
 * matching `ERR_STS_*` code: repeated parameters (RFC 6749 §3.2), an unknown grant type, a
 * missing audience, more than one audience, a malformed `expires_in`, and token-exchange
 * parameters that do not fit together.
 */
export function parseTokenRequest(body: string): TokenRequest {
  if (typeof body !== 'string') throw new TypeError('"body" must be a string');
  const params = new URLSearchParams(body);
  for (const name of SINGLE) {
    if (params.getAll(name).length > 1)
      throw new StsError('ERR_STS_REQUEST_INVALID', `parameter "${name}" must not be repeated`);
  }
  const grant = params.get('grant_type');
  if (!grant) throw new StsError('ERR_STS_REQUEST_INVALID', 'grant_type is required');
  if (grant !== 'client_credentials' && grant !== TOKEN_EXCHANGE_GRANT) {
    throw new StsError(
      'ERR_STS_GRANT_UNSUPPORTED',
      `grant_type must be client_credentials or ${TOKEN_EXCHANGE_GRANT}`,
    );
  }
  const audiences = params.getAll('audience');
  if (audiences.length === 0 || audiences[0] === '')
    throw new StsError(
      'ERR_STS_AUDIENCE_MISSING',
      'audience is required (the SPIFFE ID of the target service)',
    );
  if (audiences.length > 1)
    throw new StsError('ERR_STS_AUDIENCE_MULTIPLE', 'exactly one audience is allowed per token');

  let requestedTtlSeconds: number | undefined;
  const ttl = params.get('expires_in');
  if (ttl !== null) {
    if (!/^[1-9][0-9]{0,8}$/.test(ttl))
      throw new StsError('ERR_STS_REQUEST_INVALID', 'expires_in must be a positive whole number of seconds');
    requestedTtlSeconds = Number(ttl);
  }

  const subjectToken = params.get('subject_token') ?? undefined;
  const subjectTokenType = params.get('subject_token_type') ?? undefined;
  const requestedTokenType = params.get('requested_token_type') ?? undefined;
  if (grant === 'client_credentials' && (subjectToken || subjectTokenType || requestedTokenType)) {
    throw new StsError('ERR_STS_REQUEST_INVALID', 'subject_token belongs to the token-exchange grant');
  }
  if (subjectToken !== undefined) {
    if (!subjectTokenType || !(SUBJECT_TOKEN_TYPES as readonly string[]).includes(subjectTokenType)) {
      throw new StsError(
        'ERR_STS_REQUEST_INVALID',
        `subject_token_type must be one of ${SUBJECT_TOKEN_TYPES.join(', ')}`,
      );
    }
  } else if (subjectTokenType) {
    throw new StsError('ERR_STS_REQUEST_INVALID', 'subject_token_type without subject_token');
  }
  if (requestedTokenType && requestedTokenType !== 'urn:ietf:params:oauth:token-type:access_token') {
    throw new StsError('ERR_STS_REQUEST_INVALID', 'requested_token_type must be an access token');
  }
  const clientId = params.get('client_id') ?? undefined;
  return {
    grantType: grant,
    audience: audiences[0]!,
    ...(requestedTtlSeconds !== undefined ? { requestedTtlSeconds } : {}),
    ...(clientId !== undefined ? { clientId } : {}),
    ...(subjectToken !== undefined ? { subjectToken } : {}),
  };
}
