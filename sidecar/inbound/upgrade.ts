import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { formatTraceparent } from '../../core/index.ts';
import { SidecarError } from '../errors.ts';
import { answerJson, responseOn, switchProtocols } from '../websocket/answer.ts';
import { checkUpgradeRequest, checkUpstreamAccept, isRefusal } from '../websocket/handshake.ts';
import type { TunnelFacts, Tunnels } from '../websocket/tunnels.ts';
import type { InboundContext } from './context.ts';
import type { InboundHandler } from './handle.ts';
import { responseHeaderList } from './headers.ts';

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
    let settled = false;
    const settle = () => {
      settled = true;
      clearTimeout(timer);
      client.off('close', clientGone);
    };
    const fail = (err: SidecarError) => {
      if (settled) return;
      settle();
      upReq.destroy();
      reject(err);
    };
    const upReq = httpRequest({
      host: up.app.hostname,
      port: up.app.port,
      method: 'GET',
      path: ctx.target!.target,
      headers,
      setHost: false,
      agent: false,
    });
    const timer = setTimeout(
      () => fail(new SidecarError('ERR_SIDECAR_UPSTREAM_TIMEOUT', 'the service did not answer in time')),
      up.headersTimeoutMs,
    );
    // The client gave up while the app was being asked: nothing to relay to.
    const clientGone = () =>
      fail(new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 'the client closed the connection'));
    client.once('close', clientGone);
    upReq.on('error', (err) =>
      fail(
        new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 'the service is unavailable', { cause: err }),
      ),
    );
    upReq.on('upgrade', (upRes: IncomingMessage, upSocket: Duplex, upHead: Buffer) => {
      if (settled) return void upSocket.destroy();
      const problem =
        upRes.statusCode === 101
          ? checkUpstreamAccept(pending.offer, upRes.headers)
          : 'it did not answer 101';
      if (problem) {
        upSocket.destroy();
        return fail(
          new SidecarError(
            'ERR_SIDECAR_UPSTREAM_UNAVAILABLE',
            `the service answered the WebSocket handshake wrongly: ${problem}`,
          ),
        );
      }
      settle();
      switchProtocols(res, client, upRes.headers);
      // Bytes that came with either head are the tunnel's first: counted and followed like the rest.
      if (pending.head.length > 0) client.unshift(pending.head);
      if (upHead.length > 0) upSocket.unshift(upHead);
      up.tunnels.open(client, upSocket, closed);
      resolve(101);
    });
    upReq.on('response', (upRes: IncomingMessage) => {
      if (settled) return void upRes.destroy();
      // A 101 Node did not take for an upgrade (no Upgrade header) is no answer to relay.
      if ((upRes.statusCode ?? 0) < 200) {
        upRes.destroy();
        return fail(
          new SidecarError(
            'ERR_SIDECAR_UPSTREAM_UNAVAILABLE',
            'the service answered the WebSocket handshake wrongly: a 1xx without Upgrade',
          ),
        );
      }
      settle();
      const status = upRes.statusCode ?? 502;
      res.writeHead(status, responseHeaderList(upRes.headers));
      upRes.pipe(res);
      upRes.once('error', () => res.destroy());
      const done = () => resolve(status);
      res.once('finish', done);
      res.once('close', done);
    });
    upReq.end();
  });
}
