import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';

// RFC 6455 §1.3: the fixed GUID the server appends to the client's key.
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
// A base64-encoded 16-byte value is 22 characters and "==" (RFC 6455 §4.1, item 7).
const KEY = /^[A-Za-z0-9+/]{22}==$/;
// An upgrade protocol: a token, optionally "/" and a version token (RFC 9110 §7.8).
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}(?:\/[!#$%&'*+.^_`|~0-9A-Za-z-]{1,16})?$/;

/** What the client offered in a valid WebSocket opening handshake. */
export interface WebSocketOffer {
  /** `Sec-WebSocket-Key`, as sent. */
  readonly key: string;
  /** Subprotocols offered (`Sec-WebSocket-Protocol`), lower-cased. */
  readonly protocols: readonly string[];
  /** Extension names offered (`Sec-WebSocket-Extensions`), lower-cased, parameters dropped. */
  readonly extensions: readonly string[];
}

/** Why an upgrade request is refused before any layer runs: the answer, and a short label for the audit. */
export interface UpgradeRefusal {
  readonly status: number;
  readonly message: string;
  /** Extra response headers (`Sec-WebSocket-Version: 13` on a 426). */
  readonly headers?: Readonly<Record<string, string>>;
  /** `UPGRADE:<token>` (or `UPGRADE:websocket`) for the audit's `parserError` attribute. */
  readonly what: string;
}

/**
 * Checks an `Upgrade` request against RFC 6455 §4.2.1: exactly one upgrade token and it is
 * `websocket` (anything else — `h2c`, `TLS/1.0`, two tokens — is refused 400 with a message naming
 * it), `GET` on HTTP/1.1 without a body, `Connection` naming `upgrade` (Node's parser already
 * requires it to report an upgrade), one `Sec-WebSocket-Key` that is 16 base64-encoded bytes, and
 * `Sec-WebSocket-Version: 13` (else 426 with `Sec-WebSocket-Version: 13`, §4.4). Pure.
 */
export function checkUpgradeRequest(req: IncomingMessage): WebSocketOffer | UpgradeRefusal {
  const tokens = list(req.headers.upgrade);
  if (tokens.length !== 1 || tokens[0] !== 'websocket') {
    const named = tokens.length === 1 && TOKEN.test(tokens[0]!) ? tokens[0]! : undefined;
    const what = `UPGRADE:${named ?? 'other'}`;
    if (named === 'h2c')
      return refusal(
        400,
        'Upgrade: h2c is not supported (HTTP/2 is never upgraded to in cleartext); only WebSocket upgrades are relayed',
        what,
      );
    return refusal(
      400,
      named
        ? `Upgrade: ${named} is not supported; only WebSocket upgrades are relayed`
        : 'the Upgrade header must name exactly one protocol, websocket',
      what,
    );
  }
  const what = 'UPGRADE:websocket';
  if (req.method !== 'GET') return refusal(400, 'a WebSocket handshake must be a GET request', what);
  if (req.httpVersion !== '1.1')
    return refusal(400, 'a WebSocket handshake must be an HTTP/1.1 request', what);
  if (!list(req.headers.connection).includes('upgrade'))
    return refusal(400, 'a WebSocket handshake must say Connection: Upgrade', what);
  const h = req.headers;
  if (
    h['transfer-encoding'] !== undefined ||
    (h['content-length'] !== undefined && h['content-length'] !== '0')
  )
    return refusal(400, 'a WebSocket handshake has no request body', what);
  if (h['sec-websocket-version'] !== '13')
    return {
      ...refusal(426, 'only WebSocket version 13 is supported (Sec-WebSocket-Version: 13)', what),
      headers: { 'sec-websocket-version': '13' },
    };
  const key = h['sec-websocket-key'];
  if (typeof key !== 'string' || !KEY.test(key))
    return refusal(400, 'Sec-WebSocket-Key must be one base64-encoded 16-byte value', what);
  return {
    key,
    protocols: list(h['sec-websocket-protocol']),
    extensions: list(h['sec-websocket-extensions']).map((e) => e.split(';')[0]!.trim()),
  };
}

/** Whether {@link checkUpgradeRequest} refused the request. */
export function isRefusal(r: WebSocketOffer | UpgradeRefusal): r is UpgradeRefusal {
  return 'status' in r;
}

/** `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2 item 5.4): base64 of SHA-1 of key + GUID. */
export function acceptFor(key: string): string {
  return createHash('sha1')
    .update(key + GUID)
    .digest('base64');
}

/**
 * Checks the upstream's `101 Switching Protocols` the way a client must (RFC 6455 §4.1): `Upgrade:
 * websocket`, `Connection: Upgrade`, the `Sec-WebSocket-Accept` of the key sent, and a subprotocol
 * and extensions only from those offered. Returns what is wrong, or undefined. Pure.
 */
export function checkUpstreamAccept(offer: WebSocketOffer, headers: IncomingHttpHeaders): string | undefined {
  if (!list(headers.upgrade).includes('websocket')) return 'its 101 does not say Upgrade: websocket';
  if (!list(headers.connection).includes('upgrade')) return 'its 101 does not say Connection: Upgrade';
  if (headers['sec-websocket-accept'] !== acceptFor(offer.key)) return 'its Sec-WebSocket-Accept is wrong';
  const protocol = headers['sec-websocket-protocol'];
  if (protocol !== undefined && !offer.protocols.includes(protocol.trim().toLowerCase()))
    return 'it chose a subprotocol the client did not offer';
  for (const e of list(headers['sec-websocket-extensions']))
    if (!offer.extensions.includes(e.split(';')[0]!.trim()))
      return 'it chose an extension the client did not offer';
  return undefined;
}

/** A comma-separated header as lower-cased, trimmed, non-empty items (extension parameters kept). */
function list(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const text = Array.isArray(value) ? value.join(',') : value;
  return text
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t.length > 0);
}

function refusal(status: number, message: string, what: string): UpgradeRefusal {
  return { status, message, what };
}
