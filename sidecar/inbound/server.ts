import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TlsMaterial } from '../../ca/index.ts';
import { connectionServerOptions, describeClientError, endWithHttpError } from '../../core/index.ts';
import type { ConnectionBudgets } from '../../core/index.ts';
import { EXPECTATION_FAILED, createH2Side, routeByAlpn } from './h2.ts';
import type { H2Side } from './h2.ts';
import type { InboundRequest, InboundResponse } from '../h2/exchange.ts';
import { auditAction } from './layers/audit.ts';

/**
 * Why the listener itself answered, before any layer ran: a parser error code, `CONNECT`, `UPGRADE`
 * or `EXPECT`; `action` (method and target) when the request was parsed.
 */
export type RawRefusal = (what: string, status: number, reason?: string, action?: string) => void;

/**
 * The inbound mTLS listener: node:https directly (no framework on the hot path), TLS 1.3, a client
 * certificate requested but judged by the peer layer (so that a refused peer gets an HTTP answer
 * and an audit event). What never reaches the handler is still answered and reported through
 * `onRefused`, which records it: requests the HTTP parser refuses (smuggling shapes, bad bytes)
 * and CONNECT get 400 `ERR_SIDECAR_REQUEST_MALFORMED` (431 for oversized headers, 408 for a
 * request that timed out), upgrades go to `upgrade` (WebSocket handshakes through the layers,
 * every other upgrade refused: inbound/upgrade.ts), and an `Expect` other than
 * `100-continue` 417. A connection whose TLS handshake fails or times out is destroyed unanswered.
 * ALPN offers `h2` before `http/1.1`: an HTTP/2 connection's streams go to the same `handler`
 * (`h2.ts`, with its HTTP/2 limits); HTTP/1.1 is node:https' own, unchanged. The HTTP/2 side is
 * `server.h2` (for the drain hook). The caller applies the rest of the connection budgets
 * (`applyConnectionBudgets`).
 */
export function createInboundServer(
  material: TlsMaterial,
  handler: (req: InboundRequest, res: InboundResponse) => void,
  onRefused: RawRefusal,
  budgets: ConnectionBudgets,
  upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void,
): Server & { readonly h2: H2Side } {
  const server = createServer(
    {
      cert: material.cert,
      key: material.key,
      ca: material.ca,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.3',
      ALPNProtocols: ['h2', 'http/1.1'],
      maxHeaderSize: 16_384,
      // Keep-alive, header and request timeouts; the rest of the budgets: applyConnectionBudgets.
      ...connectionServerOptions(budgets),
      noDelay: true,
      // The header scan refuses a request without Host itself (400 ERR_SIDECAR_REQUEST_MALFORMED,
      // audited); Node's own check would answer a bare 400 that no layer records.
      requireHostHeader: false,
    },
    handler,
  );
  const h2 = createH2Side({ streams: handler, onRefused }, budgets);
  routeByAlpn(server, h2);
  const refuse = (socket: Duplex, what: string, status: number, message: string) => {
    // Recorded only when answered: a connection dropped mid-response got no 4xx to record.
    if (endWithHttpError(socket, status, JSON.stringify({ error: 'ERR_SIDECAR_REQUEST_MALFORMED', message })))
      onRefused(what, status);
  };
  server.on('clientError', (err: Error & { code?: string }, socket: Duplex) => {
    const answer = describeClientError(err);
    if (!answer) return void socket.destroy();
    refuse(socket, err.code ?? 'unknown', answer.status, answer.message);
  });
  // CONNECT (authority-form) is not proxied either. Without a listener Node drops the socket
  // unanswered and unrecorded: refuse it like a request the parser refuses.
  server.on('connect', (_req, socket: Duplex) =>
    refuse(socket, 'CONNECT', 400, 'malformed request: CONNECT is not proxied'),
  );
  // WebSocket handshakes go through the layers; every other upgrade is refused (inbound/upgrade.ts).
  server.on('upgrade', upgrade);
  // Node would answer an Expect it does not know with a bare 417; this answers and records it.
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    res
      .writeHead(417, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(EXPECTATION_FAILED),
        'cache-control': 'no-store',
        connection: 'close',
      })
      .end(EXPECTATION_FAILED);
    onRefused('EXPECT', 417, undefined, auditAction(req.method ?? '', req.url ?? ''));
  });
  return Object.assign(server, { h2 });
}

/** Applies renewed TLS material to a listening server: new connections use the new leaf. */
export function updateServerTls(server: Server, material: TlsMaterial): void {
  server.setSecureContext({ cert: material.cert, key: material.key, ca: material.ca, minVersion: 'TLSv1.3' });
}
