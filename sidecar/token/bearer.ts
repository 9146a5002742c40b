import { SidecarError } from '../errors.ts';

const BEARER = /^Bearer +([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*) *$/i;

/**
 * The value of the one `Authorization` header in Node's `rawHeaders`. No header is
 * `ERR_SIDECAR_TOKEN_MISSING`; two headers are `ERR_SIDECAR_TOKEN_MULTIPLE`.
 */
export function findAuthorization(raw: readonly string[]): string {
  let value: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length !== 13 || name.toLowerCase() !== 'authorization') continue;
    if (value !== undefined)
      throw new SidecarError('ERR_SIDECAR_TOKEN_MULTIPLE', 'more than one Authorization header');
    value = raw[i + 1]!;
  }
  if (value === undefined) throw new SidecarError('ERR_SIDECAR_TOKEN_MISSING', 'a bearer token is required');
  return value;
}

/**
 * The JWS compact token of one `Authorization` value `Bearer <token>`. More than `maxBytes` is
 * `ERR_SIDECAR_TOKEN_TOO_LARGE` (checked before any parsing); a comma-joined pair is
 * `ERR_SIDECAR_TOKEN_MULTIPLE`; any other shape (another scheme, stray characters) is
 * `ERR_SIDECAR_TOKEN_MALFORMED`.
 */
export function parseBearer(value: string, maxBytes: number): string {
  if (value.length > maxBytes + 7)
    throw new SidecarError('ERR_SIDECAR_TOKEN_TOO_LARGE', 'bearer token too large');
  if (value.includes(',')) throw new SidecarError('ERR_SIDECAR_TOKEN_MULTIPLE', 'more than one credential');
  const match = BEARER.exec(value);
  if (!match) throw new SidecarError('ERR_SIDECAR_TOKEN_MALFORMED', 'Authorization must be "Bearer <JWT>"');
  return match[1]!;
}
