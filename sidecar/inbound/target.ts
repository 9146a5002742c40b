import { SidecarError } from '../errors.ts';

/** A request target that passed {@link checkRequestTarget}: `path` is what the policy sees, `target` what the app gets. */
export interface CheckedTarget {
  /** The request target exactly as received; forwarded unchanged. */
  readonly target: string;
  /** The path part (before `?`), raw, matched by the policy. */
  readonly path: string;
}

// Characters allowed raw in a path: RFC 3986 pchar and "/" minus ";" (matrix parameters are
// read differently by different servers). Everything else — "\", control bytes, spaces,
// non-ASCII, "#", quotes, brackets — is refused rather than guessed at.
const PATH_CHAR = new Uint8Array(128);
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@/%")
  PATH_CHAR[c.charCodeAt(0)] = 1;
// In the query, "/" and "?" are plain data too (RFC 3986 §3.4).
const QUERY_CHAR = PATH_CHAR.slice();
QUERY_CHAR['?'.charCodeAt(0)] = 1;
QUERY_CHAR[';'.charCodeAt(0)] = 1;

const HEX = /^[0-9A-Fa-f]{2}$/;
const UNRESERVED = /^[A-Za-z0-9._~-]$/;
// Encoded bytes that change how a path splits or that another decoder reads differently:
// "/", "\", "?", "#", ";", "%" (double encoding), NUL and the other controls.
const FORBIDDEN_ENCODED = new Set([0x2f, 0x5c, 0x3f, 0x23, 0x3b, 0x25, 0x7f]);
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Refuses, with `ERR_SIDECAR_PATH_AMBIGUOUS`, every request target that two HTTP stacks could
 * read differently: anything but origin-form (absolute-form, authority-form, `*`), CONNECT,
 * encoded `/`, `\`, `?`, `#`, `;`, `%`, NUL or control bytes, percent-encoded unreserved characters
 * (`%2e`, `%41`: they decode to something the policy did not see), invalid or overlong UTF-8
 * in percent sequences, raw `\`, `;`, `#` or non-ASCII, empty segments (`//`) and `.`/`..`
 * segments. Pure; no decoding is ever forwarded — the app gets the string that was authorized.
 */
export function checkRequestTarget(method: string, target: string): CheckedTarget {
  if (method === 'CONNECT') throw ambiguous('CONNECT is not served');
  if (target.length === 0 || target.charCodeAt(0) !== 0x2f) {
    throw ambiguous(
      target === '*' ? 'asterisk-form target' : 'target is not origin-form (must start with "/")',
    );
  }
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  checkPath(path);
  if (q !== -1) checkQuery(target, q + 1);
  return { target, path };
}

function checkPath(path: string): void {
  let segmentStart = 1;
  let hasPercent = false;
  for (let i = 0; i <= path.length; i++) {
    const c = i < path.length ? path.charCodeAt(i) : 0x2f;
    if (c === 0x2f) {
      if (i > 0) checkSegment(path, segmentStart, i, hasPercent);
      segmentStart = i + 1;
      hasPercent = false;
      continue;
    }
    if (c >= 128 || PATH_CHAR[c] !== 1) throw ambiguous(`character ${describe(c)} not allowed in a path`);
    if (c === 0x25) hasPercent = true;
  }
}

function checkSegment(path: string, start: number, end: number, hasPercent: boolean): void {
  const length = end - start;
  if (length === 0) {
    // "/" alone and one trailing slash are fine; "//" anywhere is not.
    if (end === path.length && (start === 1 || path.charCodeAt(start - 2) !== 0x2f)) return;
    if (path.length === 1) return;
    throw ambiguous('empty path segment ("//")');
  }
  if (!hasPercent) {
    if ((length === 1 && path.charCodeAt(start) === 0x2e) || (length === 2 && path.startsWith('..', start)))
      throw ambiguous('dot segment');
    return;
  }
  checkPercent(path, start, end);
}

/** Validates every %XX in [start, end): no forbidden or unreserved byte, valid UTF-8 for bytes ≥ 0x80. */
function checkPercent(text: string, start: number, end: number): void {
  let bytes: number[] | undefined;
  for (let i = start; i < end; i++) {
    if (text.charCodeAt(i) !== 0x25) {
      flush();
      continue;
    }
    const hex = text.slice(i + 1, i + 3);
    if (!HEX.test(hex)) throw ambiguous('malformed percent-encoding');
    const byte = parseInt(hex, 16);
    if (byte < 0x20 || FORBIDDEN_ENCODED.has(byte)) throw ambiguous(`encoded byte %${hex} not allowed`);
    if (byte < 0x80) {
      flush();
      if (UNRESERVED.test(String.fromCharCode(byte)))
        throw ambiguous(`%${hex} encodes an unreserved character (send it unencoded)`);
    } else (bytes ??= []).push(byte);
    i += 2;
  }
  flush();
  function flush() {
    if (!bytes) return;
    try {
      utf8.decode(Uint8Array.from(bytes));
    } catch {
      throw ambiguous('percent-encoded bytes are not valid UTF-8');
    } finally {
      bytes = undefined;
    }
  }
}

function checkQuery(target: string, from: number): void {
  let hasPercent = false;
  for (let i = from; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c >= 128 || QUERY_CHAR[c] !== 1) throw ambiguous(`character ${describe(c)} not allowed in a query`);
    if (c === 0x25) hasPercent = true;
  }
  if (hasPercent) checkQueryPercent(target, from);
}

/** The query may carry encoded "/", "?", "&"… (it is data), but never NUL, controls or bad UTF-8. */
function checkQueryPercent(text: string, from: number): void {
  let bytes: number[] | undefined;
  for (let i = from; i <= text.length; i++) {
    if (i === text.length || text.charCodeAt(i) !== 0x25) {
      if (bytes) {
        try {
          utf8.decode(Uint8Array.from(bytes));
        } catch {
          throw ambiguous('percent-encoded bytes in the query are not valid UTF-8');
        }
        bytes = undefined;
      }
      continue;
    }
    const hex = text.slice(i + 1, i + 3);
    if (!HEX.test(hex)) throw ambiguous('malformed percent-encoding in the query');
    const byte = parseInt(hex, 16);
    if (byte < 0x20 || byte === 0x7f) throw ambiguous(`encoded byte %${hex} not allowed`);
    if (byte >= 0x80) (bytes ??= []).push(byte);
    else if (bytes) {
      try {
        utf8.decode(Uint8Array.from(bytes));
      } catch {
        throw ambiguous('percent-encoded bytes in the query are not valid UTF-8');
      }
      bytes = undefined;
    }
    i += 2;
  }
}

function describe(c: number): string {
  return c >= 0x21 && c < 0x7f ? `"${String.fromCharCode(c)}"` : `0x${c.toString(16).padStart(2, '0')}`;
}

function ambiguous(why: string): SidecarError {
  return new SidecarError('ERR_SIDECAR_PATH_AMBIGUOUS', `ambiguous request target: ${why}`);
}
