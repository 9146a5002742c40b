import { ServerResponse } from 'node:http';
import type { ClientRequest, IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { SidecarError } from '../errors.ts';
import { responseHeaderList } from '../inbound/headers.ts';
import { checkUpstreamAccept } from './handshake.ts';
import type { WebSocketOffer } from './handshake.ts';
import type { TunnelFacts, Tunnels } from './tunnels.ts';

// A refused upgrade's socket may linger this long for the peer to read the answer (as core's raw answers).
const LINGER_MS = 5_000;

/**
 * A `ServerResponse` on the socket of an `upgrade` event (node:http hands such requests over
 * without one), so that refusals and a non-101 upstream answer go out through the same code as on
 * any request. It says `connection: close`, and the socket is ended once the answer is written,
 * then destroyed within a few seconds whether or not the peer closes.
 */
export function responseOn(req: IncomingMessage, socket: Duplex): ServerResponse {
  const res = new ServerResponse(req);
  res.shouldKeepAlive = false;
  res.assignSocket(socket as Parameters<ServerResponse['assignSocket']>[0]);
  res.once('finish', () => {
    if (socket.destroyed) return;
    socket.end();
    const linger = setTimeout(() => socket.destroy(), LINGER_MS);
    linger.unref();
    socket.once('close', () => clearTimeout(linger));
  });
  return res;
}

/** Answers a request on `res` (from {@link responseOn}) with a JSON error body and extra headers. */
export function answerJson(
  res: ServerResponse,
  status: number,
  error: string,
  message: string,
  headers: Readonly<Record<string, string>> = {},
): void {
  const body = JSON.stringify({ error, message });
  res
    .writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      ...headers,
    })
    .end(body);
}

/**
 * Writes the `101 Switching Protocols` the upstream sent, on the client's socket: `Upgrade:
 * websocket`, `Connection: Upgrade` and the upstream's end-to-end headers (`Sec-WebSocket-Accept`,
 * `-Protocol`, `-Extensions`, cookies…) without its hop-by-hop ones. `res` gives the socket back.
 */
export function switchProtocols(res: ServerResponse, socket: Duplex, upstream: IncomingHttpHeaders): void {
  res.detachSocket(socket as Parameters<ServerResponse['detachSocket']>[0]);
  const list = responseHeaderList(upstream);
  let head = 'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n';
  for (let i = 0; i < list.length; i += 2) head += `${list[i]}: ${list[i + 1]}\r\n`;
  socket.write(`${head}\r\n`);
}

/** Both ends of a WebSocket handshake relayed by {@link relayHandshake}, and how it reports. */
export interface HandshakeRelay {
  /** The client's handshake (checked), its response ({@link responseOn}), socket and early bytes. */
  readonly offer: WebSocketOffer;
  readonly res: ServerResponse;
  readonly client: Duplex;
  readonly head: Buffer;
  readonly tunnels: Tunnels;
  /** Called when the tunnel ends (both sockets closed). */
  readonly closed: (facts: TunnelFacts) => void;
  /** How long the upstream may take to answer: then `ERR_SIDECAR_UPSTREAM_TIMEOUT`. */
  readonly timeoutMs: number;
  /** Who answers, for messages (`the service`, `peer`). */
  readonly who: string;
  /** The handshake failed before anything reached the client (the upstream request is destroyed). */
  readonly fail: (err: SidecarError) => void;
  /** The client got the upstream's answer: 101 once the tunnel is open, another status once relayed. */
  readonly answered?: (status: number) => void;
}

/**
 * Relays the upstream's answer to a WebSocket handshake sent as `upReq`: a 101 is checked as a
 * client must check it (accept key, subprotocol, extensions; a wrong one, or a 1xx Node did not
 * take for an upgrade, is `ERR_SIDECAR_UPSTREAM_UNAVAILABLE`) and passed on, the bytes that came
 * with either head go first, and the tunnel opens; any other answer is relayed as it is. A client
 * that goes away, an upstream error or no answer within `timeoutMs` is `fail`. Sends `upReq`.
 */
export function relayHandshake(upReq: ClientRequest, r: HandshakeRelay): void {
  let settled = false;
  const settle = () => {
    settled = true;
    clearTimeout(timer);
    r.client.off('close', clientGone);
  };
  const fail = (err: SidecarError) => {
    if (settled) return;
    settle();
    upReq.destroy();
    r.fail(err);
  };
  const unavailable = (message: string, cause?: unknown) =>
    fail(new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', message, cause ? { cause } : undefined));
  const timer = setTimeout(
    () => fail(new SidecarError('ERR_SIDECAR_UPSTREAM_TIMEOUT', `${r.who} did not answer in time`)),
    r.timeoutMs,
  );
  // The client gave up while the upstream was being asked: nothing to relay to.
  const clientGone = () => unavailable('the client closed the connection');
  r.client.once('close', clientGone);
  upReq.on('error', (err) => unavailable(`${r.who} is unavailable`, err));
  upReq.on('upgrade', (upRes: IncomingMessage, upSocket: Duplex, upHead: Buffer) => {
    if (settled) return void upSocket.destroy();
    const problem =
      upRes.statusCode === 101 ? checkUpstreamAccept(r.offer, upRes.headers) : 'it did not answer 101';
    if (problem) {
      upSocket.destroy();
      return unavailable(`${r.who} answered the WebSocket handshake wrongly: ${problem}`);
    }
    settle();
    switchProtocols(r.res, r.client, upRes.headers);
    // Bytes that came with either head are the tunnel's first: counted and followed like the rest.
    if (r.head.length > 0) r.client.unshift(r.head);
    if (upHead.length > 0) upSocket.unshift(upHead);
    r.tunnels.open(r.client, upSocket, r.closed);
    r.answered?.(101);
  });
  upReq.on('response', (upRes: IncomingMessage) => {
    if (settled) return void upRes.destroy();
    // A 101 Node did not take for an upgrade (no Upgrade header) is no answer to relay.
    if ((upRes.statusCode ?? 0) < 200) {
      upRes.destroy();
      return unavailable(`${r.who} answered the WebSocket handshake wrongly: a 1xx without Upgrade`);
    }
    settle();
    const status = upRes.statusCode ?? 502;
    r.res.writeHead(status, responseHeaderList(upRes.headers));
    upRes.pipe(r.res);
    upRes.once('error', () => r.res.destroy());
    if (r.answered) {
      const done = () => r.answered!(status);
      r.res.once('finish', done);
      r.res.once('close', done);
    }
  });
  upReq.end();
}
