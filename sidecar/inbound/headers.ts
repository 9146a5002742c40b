import { SidecarError } from '../errors.ts';

/** What {@link scanRequestHeaders} learned: the headers the app may see, and the caller's trace context. */
export interface ScannedHeaders {
  /** Flat `[name, value, …]` list, in arrival order, with every stripped header removed. */
  readonly forward: string[];
  /** The caller's `traceparent` value, unparsed (the outbound side parses it; inbound reads its own). */
  readonly traceparent: string | undefined;
}

// RFC 9110 §7.6.1 connection-specific fields, plus the de-facto ones (keep-alive, proxy-connection).
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);
// Never forwarded as sent: the sidecar sets Host, consumes the token, and owns identity and trace
// headers. Expect is answered by the sidecar's own server (100 Continue) and undici refuses it.
const CONSUMED = new Set(['host', 'authorization', 'traceparent', 'expect']);
const METHOD_OVERRIDE = new Set(['x-http-method-override', 'x-http-method', 'x-method-override']);
const IDENTITY = new Set(['x-forwarded-client-cert', 'x-spiffe-id', 'x-client-cert', 'x-ssl-client-cert']);
const DIGITS = /^\d{1,15}$/;
// Connection may not name fields whose removal would change framing or routing.
const NOT_DROPPABLE = new Set(['content-length', 'host', 'content-type']);

/**
 * Single pass over Node's `rawHeaders`. Refuses request-smuggling shapes with
 * `ERR_SIDECAR_REQUEST_MALFORMED` (no Host or more than one, several Content-Length, a
 * non-numeric one, Transfer-Encoding with Content-Length or other than exactly `chunked`,
 * several Transfer-Encoding, Connection naming a framing field); strips hop-by-hop headers, every
 * header named in Connection, identity headers in any case and with `_` for `-`
 * (`x-portcullis-*`, `x-forwarded-client-cert`, `x-spiffe-id`…), method-override headers, Host,
 * Authorization, traceparent and Expect. Pure.
 */
export function scanRequestHeaders(raw: readonly string[]): ScannedHeaders {
  let hosts = 0;
  let contentLength = 0;
  let transferEncoding = 0;
  let teValue = '';
  let connectionNames: Set<string> | undefined;
  let traceparent: string | undefined;
  const kept: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    switch (name) {
      case 'host':
        hosts++;
        continue;
      case 'content-length':
        contentLength++;
        if (!DIGITS.test(value)) throw malformed('Content-Length is not a number');
        break;
      case 'transfer-encoding':
        transferEncoding++;
        teValue = value.trim().toLowerCase();
        continue;
      case 'connection':
        for (const token of value.split(',')) {
          const t = token.trim().toLowerCase();
          if (!t) continue;
          if (NOT_DROPPABLE.has(t)) throw malformed(`Connection may not name ${t}`);
          (connectionNames ??= new Set()).add(t);
        }
        continue;
      case 'traceparent':
        traceparent = value;
        continue;
    }
    if (stripped(name)) continue;
    kept.push(raw[i]!, value);
  }
  if (hosts !== 1) throw malformed(hosts === 0 ? 'Host header missing' : 'more than one Host header');
  if (contentLength > 1) throw malformed('more than one Content-Length header');
  if (transferEncoding > 1) throw malformed('more than one Transfer-Encoding header');
  if (transferEncoding === 1) {
    if (contentLength > 0) throw malformed('Transfer-Encoding together with Content-Length');
    if (teValue !== 'chunked') throw malformed('Transfer-Encoding other than chunked');
  }
  let forward = kept;
  if (connectionNames) {
    forward = [];
    for (let i = 0; i < kept.length; i += 2)
      if (!connectionNames.has(kept[i]!.toLowerCase())) forward.push(kept[i]!, kept[i + 1]!);
  }
  return { forward, traceparent };
}

/** Whether a (lower-case) request header never reaches the other side, whatever the protocol. */
function stripped(name: string): boolean {
  if (HOP_BY_HOP.has(name) || CONSUMED.has(name) || METHOD_OVERRIDE.has(name)) return true;
  if (name.charCodeAt(0) === 0x78 /* x */ || name.includes('_')) {
    const n = name.replaceAll('_', '-');
    if (n.startsWith('x-portcullis-') || IDENTITY.has(n) || METHOD_OVERRIDE.has(n)) return true;
    if (n !== name && (HOP_BY_HOP.has(n) || CONSUMED.has(n) || n === 'content-length')) return true;
  }
  return false;
}

// RFC 9113 §8.2.2: connection-specific fields make an HTTP/2 request malformed (nghttp2 refuses
// most of them before a stream opens; this is the sidecar's own statement of the rule).
const H2_CONNECTION_SPECIFIC = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
]);

/** What {@link scanH2RequestHeaders} learned: as {@link ScannedHeaders}, plus the authority. */
export interface ScannedH2Headers extends ScannedHeaders {
  /** `:authority`, or `host` when the client sent no `:authority` (RFC 9113 §8.3.1). */
  readonly authority: string;
}

/**
 * The HTTP/2 counterpart of {@link scanRequestHeaders}, over the flat `rawHeaders` of an HTTP/2
 * stream (pseudo-headers included): the same identity, trace, token and method-override
 * stripping, and the same refusals (`ERR_SIDECAR_REQUEST_MALFORMED`) for what HTTP/2 makes
 * ambiguous: no `:authority` nor `host`, both present and different, several of either, several
 * or non-numeric `content-length`, connection-specific fields, `te` other than `trailers`, and
 * `:protocol` (extended CONNECT is not served). Pure.
 */
export function scanH2RequestHeaders(raw: readonly string[]): ScannedH2Headers {
  let authority: string | undefined;
  let host: string | undefined;
  let authorities = 0;
  let hosts = 0;
  let contentLength = 0;
  let traceparent: string | undefined;
  const forward: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    if (name.charCodeAt(0) === 0x3a /* : */) {
      if (name === ':authority') {
        authorities++;
        authority = value;
      } else if (name === ':protocol') throw malformed('extended CONNECT (:protocol) is not served');
      continue;
    }
    switch (name) {
      case 'host':
        hosts++;
        host = value;
        continue;
      case 'content-length':
        contentLength++;
        if (!DIGITS.test(value)) throw malformed('Content-Length is not a number');
        break;
      case 'te':
        if (value.trim().toLowerCase() !== 'trailers') throw malformed('TE other than trailers in HTTP/2');
        continue;
      case 'traceparent':
        traceparent = value;
        continue;
    }
    if (H2_CONNECTION_SPECIFIC.has(name)) throw malformed(`connection-specific header ${name} in HTTP/2`);
    if (stripped(name)) continue;
    forward.push(name, value);
  }
  if (authorities > 1 || hosts > 1) throw malformed('more than one :authority or Host');
  if (authority === undefined && host === undefined) throw malformed(':authority and Host missing');
  if (authority !== undefined && host !== undefined && authority.toLowerCase() !== host.toLowerCase())
    throw malformed(':authority and Host disagree');
  if (contentLength > 1) throw malformed('more than one Content-Length header');
  return { forward, traceparent, authority: (authority ?? host)! };
}

/**
 * An upstream response's headers as a flat `[name, value, …]` list for `writeHead`, without
 * hop-by-hop headers and those named in Connection (no `delete`: it would turn the object slow).
 */
export function responseHeaderList(headers: Record<string, string | string[] | undefined>): string[] {
  const connection = headers.connection;
  let named: Set<string> | undefined;
  // The usual `Connection: keep-alive` names only a hop-by-hop header: no set to build per response.
  if (connection && connection !== 'keep-alive')
    named = new Set(
      String(connection)
        .split(',')
        .map((t) => t.trim().toLowerCase()),
    );
  const out: string[] = [];
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || named?.has(name) || name.charCodeAt(0) === 0x3a /* :status */) continue;
    const value = headers[name];
    if (value === undefined) continue;
    if (typeof value === 'string') out.push(name, value);
    else for (const v of value) out.push(name, v);
  }
  return out;
}

function malformed(why: string): SidecarError {
  return new SidecarError('ERR_SIDECAR_REQUEST_MALFORMED', `malformed request: ${why}`);
}
