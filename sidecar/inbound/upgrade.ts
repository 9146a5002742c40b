import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { formatTraceparent } from '../../core/index.ts';
import { SidecarError } from '../errors.ts';
import { answerJson, relayHandshake, responseOn } from '../websocket/answer.ts';
import { checkUpgradeRequest, isRefusal } from '../websocket/handshake.ts';
import type { TunnelFacts, Tunnels } from '../websocket/tunnels.ts';
import type { InboundContext } from './context.ts';
import { H2Response } from '../h2/exchange.ts';
import type { InboundHandler } from './handle.ts';

/** Records an upgrade refused before any layer ran: what was asked, the status, the reason code. */
export type UpgradeRefused = (what: string, status: number, reason: string) => void;

/**
 * The inbound listener's `upgrade` listener. A WebSocket opening handshake that is valid (RFC 6455
 * §4.2.1, websocket/handshake.ts) goes to the inbound handler like any request — peer, token,
 * binding, request target, policy, fair share, audit — with a response bound to its socket; the
 * handler relays it ({@link relayUpgradeToApp}) once every layer passed, or answers the refusal
 * (403 for a denied path) and closes: nothing reaches the app. Every other upgrade (`h2c`, any
 * other token) and a malformed handshake is answered 400 `ERR_SIDECAR_UPGRADE_REFUSED` (426 for
 * another WebSocket version) with the reason, and recorded through `refused`.
 */
export function inboundUpgradeListener(
  handler: InboundHandler,
  refused: UpgradeRefused,
): (req: IncomingMessage, socket: Duplex, head: Buffer) => void {
  return (req, socket, head) => {
    socket.on('error', () => {});
    const res = responseOn(req, socket);
    const offer = checkUpgradeRequest(req);
    if (isRefusal(offer)) {
      answerJson(res, offer.status, 'ERR_SIDECAR_UPGRADE_REFUSED', offer.message, offer.headers);
      return refused(offer.what, offer.status, 'ERR_SIDECAR_UPGRADE_REFUSED');
    }
    handler(req, res, { socket, head, offer });
  };
}

/** Where the inbound side relays WebSockets: the local app, and the limits of the exchange. */
export interface UpgradeUpstream {
  /** `http://127.0.0.1:<port>` of the app. */
  readonly app: URL;
  /** How long the app may take to answer the handshake: then 504. */
  readonly headersTimeoutMs: number;
  readonly tunnels: Tunnels;
}

/**
 * Relays an allowed WebSocket handshake to the app on a connection of its own (not the keep-alive
 * pool: the connection becomes the tunnel): the same target string, the scanned (stripped)
 * headers plus `host`, `x-portcullis-peer`, `traceparent`, `Connection: Upgrade` and `Upgrade:
 * websocket`. The app's 101 is checked as a client must check it (accept key, subprotocol,
 * extensions; a wrong one is 502) and passed on, then bytes flow both ways (websocket/tunnels.ts)
 * and `closed` is called when both sockets are closed. Any other answer of the app is relayed as
 * it is and the connection closed. Resolves with the status the client got.
 */
export function relayUpgradeToApp(
  ctx: InboundContext,
  up: UpgradeUpstream,
  closed: (facts: TunnelFacts) => void,
): Promise<number> {
  const { res } = ctx;
  // A handshake is an HTTP/1.1 request (h2.ts refuses extended CONNECT): its answer is node:http's.
  if (res instanceof H2Response) throw new TypeError('relayUpgradeToApp: not an HTTP/1.1 handshake');
  const pending = ctx.upgrade!;
  const client = pending.socket;
  const headers = ctx.headers!.forward;
  headers.push(
    'host',
    up.app.host,
    'x-portcullis-peer',
    ctx.peer!.spiffeId.uri,
    'traceparent',
    ctx.span ? formatTraceparent(ctx.span.spanContext()) : `00-${ctx.traceId}-${ctx.spanId}-01`,
    'connection',
    'Upgrade',
    'upgrade',
    'websocket',
  );
  // The client went away while the layers ran (a token being verified): the app is not asked.
  if (client.destroyed)
    return Promise.reject(
      new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 'the client closed the connection'),
    );
  return new Promise<number>((resolve, reject) => {
    const upReq = httpRequest({
      host: up.app.hostname,
      port: up.app.port,
      method: 'GET',
      path: ctx.target!.target,
      headers,
      setHost: false,
      agent: false,
    });
    relayHandshake(upReq, {
      offer: pending.offer,
      res,
      client,
      head: pending.head,
      tunnels: up.tunnels,
      closed,
      timeoutMs: up.headersTimeoutMs,
      who: 'the service',
      fail: reject,
      answered: resolve,
    });
  });
}
