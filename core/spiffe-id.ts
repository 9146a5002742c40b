import { SpiffeIdError } from './errors.ts';

/** A parsed, valid SPIFFE ID. `uri` is the canonical string form. */
export interface SpiffeId {
  readonly trustDomain: string;
  /** Empty, or `/seg/seg…` with no empty, `.` or `..` segments. */
  readonly path: string;
  readonly uri: string;
}

const SCHEME = 'spiffe://';
/** The SPIFFE ID spec caps the whole URI at 2048 bytes. */
export const SPIFFE_ID_MAX_BYTES = 2048;
const TRUST_DOMAIN_CHAR = /^[a-z0-9._-]$/;
const PATH_CHAR = /^[A-Za-z0-9._-]$/;

/**
 * Parses `spiffe://<trust-domain>[/<path>]` strictly per the SPIFFE ID specification
 * (spiffe/spiffe standards/SPIFFE-ID.md §2). Throws {@link SpiffeIdError} naming the broken rule;
 * throws TypeError when `input` is not a string.
 */
export function parseSpiffeId(input: string): SpiffeId {
  if (typeof input !== 'string') throw new TypeError('"input" must be a string');
  if (input.length === 0) throw new SpiffeIdError('cannot be empty');
  if (Buffer.byteLength(input, 'utf8') > SPIFFE_ID_MAX_BYTES) {
    throw new SpiffeIdError(`longer than ${SPIFFE_ID_MAX_BYTES} bytes`);
  }
  if (!input.startsWith(SCHEME))
    throw new SpiffeIdError('scheme is missing or invalid (must be "spiffe://")');
  const rest = input.slice(SCHEME.length);
  const slash = rest.indexOf('/');
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash);
  checkTrustDomain(trustDomain);
  checkPath(path);
  return Object.freeze({ trustDomain, path, uri: `${SCHEME}${trustDomain}${path}` });
}

/** Parses a bare trust domain name (`example.org`). Throws {@link SpiffeIdError}. */
export function parseTrustDomain(input: string): string {
  if (typeof input !== 'string') throw new TypeError('"input" must be a string');
  checkTrustDomain(input);
  return input;
}

/** Builds a SPIFFE ID from a trust domain and path segments, validating both. */
export function formatSpiffeId(trustDomain: string, ...segments: string[]): SpiffeId {
  return parseSpiffeId(`${SCHEME}${trustDomain}${segments.map((s) => `/${s}`).join('')}`);
}

/** True when `id` belongs to `trustDomain`. */
export function isMemberOf(id: SpiffeId, trustDomain: string): boolean {
  return id.trustDomain === trustDomain;
}

function checkTrustDomain(td: string): void {
  if (td.length === 0) throw new SpiffeIdError('trust domain is missing');
  for (const ch of td) {
    if (ch === ':') throw new SpiffeIdError('trust domain cannot contain a port');
    if (ch === '@') throw new SpiffeIdError('trust domain cannot contain userinfo');
    if (ch === '?') throw new SpiffeIdError('cannot contain a query');
    if (ch === '#') throw new SpiffeIdError('cannot contain a fragment');
    if (ch === '%') throw new SpiffeIdError('cannot contain percent-encoded characters');
    if (!TRUST_DOMAIN_CHAR.test(ch)) {
      throw new SpiffeIdError(
        'trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores',
      );
    }
  }
}

function checkPath(path: string): void {
  if (path.length === 0) return;
  if (path.endsWith('/')) throw new SpiffeIdError('path cannot have a trailing slash');
  for (const segment of path.slice(1).split('/')) {
    if (segment.length === 0) throw new SpiffeIdError('path cannot contain empty segments');
    if (segment === '.' || segment === '..') throw new SpiffeIdError('path cannot contain dot segments');
    for (const ch of segment) {
      if (ch === '?') throw new SpiffeIdError('cannot contain a query');
      if (ch === '#') throw new SpiffeIdError('cannot contain a fragment');
      if (ch === '%') throw new SpiffeIdError('cannot contain percent-encoded characters');
      if (!PATH_CHAR.test(ch)) {
        throw new SpiffeIdError(
          'path segment characters are limited to letters, numbers, dots, dashes, and underscores',
        );
      }
    }
  }
}
