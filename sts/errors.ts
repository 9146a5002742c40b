import { PortcullisError } from '../core/index.ts';

/** Stable error codes raised by sts/. Callers and tests match on `code`, never on the message. */
export type StsErrorCode =
  | 'ERR_STS_PEER_REFUSED'
  | 'ERR_STS_CLIENT_NOT_REGISTERED'
  | 'ERR_STS_REQUEST_INVALID'
  | 'ERR_STS_BODY_TOO_LARGE'
  | 'ERR_STS_MEDIA_TYPE_UNSUPPORTED'
  | 'ERR_STS_GRANT_UNSUPPORTED'
  | 'ERR_STS_AUDIENCE_MISSING'
  | 'ERR_STS_AUDIENCE_MULTIPLE'
  | 'ERR_STS_AUDIENCE_NOT_ALLOWED'
  | 'ERR_STS_TTL_TOO_LONG'
  | 'ERR_STS_SUBJECT_TOKEN_INVALID'
  | 'ERR_STS_RATE_LIMITED'
  | 'ERR_STS_FORBIDDEN'
  | 'ERR_STS_NOT_FOUND'
  | 'ERR_STS_AUDIT_UNAVAILABLE'
  | 'ERR_STS_KEYRING_NOT_READY'
  | 'ERR_STS_MASTER_KEY_MISSING'
  | 'ERR_STS_MASTER_KEY_INVALID'
  | 'ERR_STS_MASTER_KEY_WRONG'
  | 'ERR_STS_KEYSTORE_CONFLICT'
  | 'ERR_STS_KEYSTORE_CORRUPT'
  | 'ERR_STS_KEYSTORE_UNAVAILABLE'
  | 'ERR_STS_ADMIN_CALL_FAILED'
  | 'ERR_STS_INTERNAL'
  | 'ERR_STS_CRL_INVALID'
  | 'ERR_STS_STATE_UNAVAILABLE'
  | 'ERR_STS_STATE_CORRUPT'
  | 'ERR_STS_STATE_CONFLICT'
  | 'ERR_STS_JOIN_TOKEN_INVALID'
  | 'ERR_STS_CSR_INVALID'
  | 'ERR_STS_CSR_IDENTITY'
  | 'ERR_STS_CA_NOT_CONFIGURED';

/** Every failure of sts/. `reason` carries the underlying code (e.g. a ca/ peer code) when there is one. */
export class StsError extends PortcullisError<StsErrorCode> {
  /** The more specific cause code, e.g. `ERR_CA_CERT_EXPIRED` for a refused peer. */
  readonly reason: string;
  /** Seconds a client should wait before retrying (rate limiting only). */
  readonly retryAfterSeconds: number | undefined;
  constructor(
    code: StsErrorCode,
    message: string,
    options?: { cause?: unknown; reason?: string; retryAfterSeconds?: number },
  ) {
    super(code, message, options);
    this.reason = options?.reason ?? code;
    this.retryAfterSeconds = options?.retryAfterSeconds;
  }
}

/** RFC 6749 §5.2 error codes (plus RFC 8693 `invalid_target` and RFC 6749 §4.1.2.1 `temporarily_unavailable`). */
export type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'invalid_target'
  | 'temporarily_unavailable'
  | 'server_error';

/** How one error code appears on the wire: HTTP status and OAuth error. The single place statuses are chosen. */
export const HTTP_ERRORS: Readonly<Record<StsErrorCode, { status: number; error: OAuthErrorCode }>> = {
  ERR_STS_PEER_REFUSED: { status: 401, error: 'invalid_client' },
  ERR_STS_CLIENT_NOT_REGISTERED: { status: 401, error: 'invalid_client' },
  ERR_STS_REQUEST_INVALID: { status: 400, error: 'invalid_request' },
  ERR_STS_BODY_TOO_LARGE: { status: 413, error: 'invalid_request' },
  ERR_STS_MEDIA_TYPE_UNSUPPORTED: { status: 415, error: 'invalid_request' },
  ERR_STS_GRANT_UNSUPPORTED: { status: 400, error: 'unsupported_grant_type' },
  ERR_STS_AUDIENCE_MISSING: { status: 400, error: 'invalid_request' },
  ERR_STS_AUDIENCE_MULTIPLE: { status: 400, error: 'invalid_target' },
  ERR_STS_AUDIENCE_NOT_ALLOWED: { status: 400, error: 'invalid_target' },
  ERR_STS_TTL_TOO_LONG: { status: 400, error: 'invalid_request' },
  ERR_STS_SUBJECT_TOKEN_INVALID: { status: 400, error: 'invalid_grant' },
  ERR_STS_RATE_LIMITED: { status: 429, error: 'temporarily_unavailable' },
  ERR_STS_FORBIDDEN: { status: 403, error: 'unauthorized_client' },
  ERR_STS_NOT_FOUND: { status: 404, error: 'invalid_request' },
  ERR_STS_AUDIT_UNAVAILABLE: { status: 503, error: 'temporarily_unavailable' },
  ERR_STS_KEYRING_NOT_READY: { status: 503, error: 'temporarily_unavailable' },
  ERR_STS_MASTER_KEY_MISSING: { status: 500, error: 'server_error' },
  ERR_STS_MASTER_KEY_INVALID: { status: 500, error: 'server_error' },
  ERR_STS_MASTER_KEY_WRONG: { status: 500, error: 'server_error' },
  ERR_STS_KEYSTORE_CONFLICT: { status: 503, error: 'temporarily_unavailable' },
  ERR_STS_KEYSTORE_CORRUPT: { status: 500, error: 'server_error' },
  ERR_STS_KEYSTORE_UNAVAILABLE: { status: 503, error: 'temporarily_unavailable' },
  ERR_STS_ADMIN_CALL_FAILED: { status: 502, error: 'server_error' },
  ERR_STS_INTERNAL: { status: 500, error: 'server_error' },
  ERR_STS_CRL_INVALID: { status: 500, error: 'server_error' },
  ERR_STS_STATE_UNAVAILABLE: { status: 503, error: 'temporarily_unavailable' },
  ERR_STS_STATE_CORRUPT: { status: 500, error: 'server_error' },
  ERR_STS_STATE_CONFLICT: { status: 409, error: 'invalid_request' },
  ERR_STS_JOIN_TOKEN_INVALID: { status: 401, error: 'invalid_client' },
  ERR_STS_CSR_INVALID: { status: 400, error: 'invalid_request' },
  ERR_STS_CSR_IDENTITY: { status: 403, error: 'unauthorized_client' },
  ERR_STS_CA_NOT_CONFIGURED: { status: 404, error: 'invalid_request' },
};
