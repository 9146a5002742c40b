import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';

/**
 * How long a refused connection may linger after its answer was written, for the peer to read it
 * and close (nginx's `lingering_timeout`): then it is destroyed, so that a peer that never closes
 * cannot keep a half-closed socket on the server.
 */
const LINGER_MS = 5_000;

/**
 * Answers on a raw socket, for requests the HTTP parser or the server refuses before any handler
 * runs (smuggling shapes, bad bytes, oversized headers, CONNECT, upgrades): one JSON body in the
 * server's own error shape, `connection: close`, then the socket is ended and, once the answer is
 * written, destroyed within a few seconds whether or not the peer closes. A socket that can no
 * longer be written to, or that is in the middle of an earlier response on the same connection
 * (an answer written now would land inside that response's body), is destroyed instead. Returns
 * whether the answer was written.
 */
export function endWithHttpError(socket: Duplex, status: number, body: string): boolean {
  if (!canAnswer(socket)) {
    socket.destroy();
    return false;
  }
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${body}`,
    () => {
      if (socket.destroyed) return;
      const linger = setTimeout(() => socket.destroy(), LINGER_MS);
      linger.unref();
      socket.once('close', () => clearTimeout(linger));
    },
  );
  return true;
}

/** Whether a raw answer can go out on `socket` now: writable, and no response of node:http's under way. */
function canAnswer(socket: Duplex): boolean {
  // node:http keeps the response being written on the socket (the same check its default uses).
  const current = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  return socket.writable && !current?.headersSent;
}

/**
 * The answer to a client error Node reports on a connection (the `clientError` event): 408 for a
 * request that timed out, 431 for oversized headers, 400 for everything else the parser refused,
 * each with a short message. `undefined` when there is nobody to answer in HTTP, and the caller
 * destroys the socket: a connection the peer already reset, and every TLS-level failure (a
 * handshake that timed out or failed: no TLS session exists to carry an answer, and ending such
 * a socket instead of destroying it would leave it half-closed for good).
 */
export function describeClientError(
  err: Error & { code?: string; library?: string },
): { readonly status: number; readonly message: string } | undefined {
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE') return undefined;
  if (isTlsFailure(err)) return undefined;
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return { status: 408, message: 'request timed out' };
  if (err.code === 'HPE_HEADER_OVERFLOW') return { status: 431, message: 'request headers too large' };
  return { status: 400, message: 'malformed HTTP request' };
}

/** A failure of the TLS layer (Node's `ERR_TLS_*`, OpenSSL's `ERR_SSL_*`, or an OpenSSL error object). */
function isTlsFailure(err: Error & { code?: string; library?: string }): boolean {
  const code = err.code ?? '';
  return code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_') || err.library !== undefined;
}
