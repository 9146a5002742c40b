import { SidecarError } from '../errors.ts';

const BEARER = /^Bearer +([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*) *$/i;

/**
 * Finds exactly one `Authorization: Bearer <JWS compact>` in Node's `rawHeaders`. No header is
 * `ERR_SIDECAR_TOKEN_MISSING`; two headers or a comma-joined pair is `ERR_SIDECAR_TOKEN_MULTIPLE`;
 * more than `maxBytes` is `ERR_SIDECAR_TOKEN_TOO_LARGE` (checked before any parsing); any other
 * shape (another scheme, stray characters) is `ERR_SIDECAR_TOKEN_MALFORMED`.
 */
export function extractBearer(raw: readonly string[], maxBytes: number): string {
  let value: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length !== 13 || name.toLowerCase() !== 'authorization') continue;
    if (value !== undefined)
      throw new SidecarError('ERR_SIDECAR_TOKEN_MULTIPLE', 'more than one Authorization header');
    value = raw[i + 1]!;
  }
  if (value === undefined) throw new SidecarError('ERR_SIDECAR_TOKEN_MISSING', 'a bearer token is required');
  if (value.length > maxBytes + 7)
    throw new SidecarError('ERR_SIDECAR_TOKEN_TOO_LARGE', 'bearer token too large');
  if (value.includes(',')) throw new SidecarError('ERR_SIDECAR_TOKEN_MULTIPLE', 'more than one credential');
  const match = BEARER.exec(value);
  if (!match) throw new SidecarError('ERR_SIDECAR_TOKEN_MALFORMED', 'Authorization must be "Bearer <JWT>"');
  return match[1]!;
}
