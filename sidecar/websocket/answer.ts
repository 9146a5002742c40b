import { ServerResponse } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { responseHeaderList } from '../inbound/headers.ts';

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
