import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TlsMaterial } from '../../ca/index.ts';

/**
 * The inbound mTLS listener: node:https directly (no framework on the hot path), TLS 1.3, a client
 * certificate requested but judged by the peer layer (so that a refused peer gets an HTTP answer
 * and an audit event). Requests the HTTP parser itself refuses (smuggling shapes, bad bytes) get
 * a 400 with `ERR_SIDECAR_REQUEST_MALFORMED` and `onParserError` is told.
 */
export function createInboundServer(
  material: TlsMaterial,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  onParserError: (err: Error) => void,
): Server {
  const server = createServer(
    {
      cert: material.cert,
      key: material.key,
      ca: material.ca,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.3',
      ALPNProtocols: ['http/1.1'],
      maxHeaderSize: 16_384,
      keepAliveTimeout: 65_000,
      headersTimeout: 20_000,
      requestTimeout: 120_000,
      noDelay: true,
    },
    handler,
  );
  server.on('clientError', (err: Error & { code?: string }, socket: Duplex) => {
    if (err.code === 'ECONNRESET' || !socket.writable) return void socket.destroy();
    onParserError(err);
    const body = JSON.stringify({ error: 'ERR_SIDECAR_REQUEST_MALFORMED', message: 'malformed request' });
    socket.end(
      `HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  });
  // CONNECT (authority-form) is not proxied either. Without a listener Node drops the socket
  // unanswered and unrecorded: refuse it like a request the parser refuses.
  server.on('connect', (_req, socket: Duplex) => {
    onParserError(Object.assign(new Error('CONNECT is not proxied'), { code: 'CONNECT' }));
    const body = JSON.stringify({
      error: 'ERR_SIDECAR_REQUEST_MALFORMED',
      message: 'malformed request: CONNECT is not proxied',
    });
    socket.end(
      `HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  });
  // Upgrades (WebSocket, h2c) are not proxied: a bare refusal rather than a silent hang.
  server.on('upgrade', (_req, socket: Duplex) =>
    socket.end('HTTP/1.1 501 Not Implemented\r\nconnection: close\r\ncontent-length: 0\r\n\r\n'),
  );
  return server;
}

/** Applies renewed TLS material to a listening server: new connections use the new leaf. */
export function updateServerTls(server: Server, material: TlsMaterial): void {
  server.setSecureContext({ cert: material.cert, key: material.key, ca: material.ca, minVersion: 'TLSv1.3' });
}
