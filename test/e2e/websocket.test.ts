import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { connect as connectTcp } from 'node:net';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import type { AuditEvent } from '../../core/index.ts';
import { ORDERS, WEB, startMesh } from './mesh.ts';
import type { Mesh } from './mesh.ts';
import { rawExchange } from '../helpers/raw-http.ts';

// The orders sidecar closes a WebSocket idle this long; web keeps its default (5 min), so that
// the idle close is orders' alone.
const ORDERS_IDLE_MS = 1_500;
const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';

/** Waits until `find` returns something, or fails after `ms`. */
async function waitFor<T>(what: string, find: () => T | undefined, ms = 3_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const found = find();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves with the close code once `ws` closes, and the ms it took from now. */
function closed(ws: WebSocket): Promise<{ code: number; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve({ code: 1006, ms: 0 });
    ws.once('close', (code) => resolve({ code, ms: performance.now() - t0 }));
  });
}

describe('WebSocket through both sidecars (ws client → web outbound → mTLS → orders inbound → ws server)', () => {
  let mesh: Mesh;
  let wss: WebSocketServer;
  /** Headers of every upgrade request the app's WebSocket server accepted, and its server-side sockets. */
  const upgrades: IncomingHttpHeaders[] = [];
  const serverSockets: WebSocket[] = [];

  before(async () => {
    mesh = await startMesh({ ordersConfig: { websocket: { idleTimeout: `${ORDERS_IDLE_MS}ms` } } });
    // The orders app answers WebSocket handshakes too: an echo; on /orders/bad-accept, a 101
    // with the wrong Sec-WebSocket-Accept.
    wss = new WebSocketServer({ noServer: true });
    mesh.ordersApp.server.on('upgrade', (req, socket, head) => {
      if (req.url === '/orders/bad-accept')
        return void socket.end(
          'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
            'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n',
        );
      wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
    });
    wss.on('connection', (ws, req) => {
      upgrades.push(req.headers);
      serverSockets.push(ws);
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    });
  });
  after(async () => {
    wss?.close();
    await mesh?.close();
  });

  /**
   * Opens a WebSocket to `path` on orders through web's outbound proxy (origin-form, routed by
   * Host), with a trace id of its own (`ws.traceId`) to find its audit events by.
   */
  function connect(
    path: string,
    headers: Record<string, string> = {},
  ): WebSocket & { readonly traceId: string } {
    const traceId = headers.traceparent?.slice(3, 35) ?? randomBytes(16).toString('hex');
    const ws = new WebSocket(`ws://127.0.0.1:${mesh.web.outbound!.port}${path}`, {
      headers: { host: 'orders', traceparent: `00-${traceId}-00f067aa0ba902b7-01`, ...headers },
    });
    return Object.assign(ws, { traceId });
  }

  function opened(ws: WebSocket): Promise<void> {
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`answered ${res.statusCode}`)));
    });
  }

  /** The close event orders recorded for the WebSocket of trace `traceId`. */
  function closeEvent(traceId: string): Promise<AuditEvent> {
    return waitFor('the audited close', () =>
      mesh.ordersEvents.find(
        (e) => e.type === 'authz.response' && e.attributes?.upgrade === 'websocket' && e.traceId === traceId,
      ),
    );
  }

  it('echoes text and a 2 MB binary message both ways; the app sees the verified peer, the caller trace and no forged identity', async () => {
    const ws = connect('/orders/feed', {
      traceparent: `00-${TRACE_ID}-00f067aa0ba902b7-01`,
      'x-portcullis-peer': 'spiffe://example.org/ns/evil',
      'x-forwarded-client-cert': 'By=spiffe://example.org/ns/evil',
    });
    await opened(ws);
    const messages: Buffer[] = [];
    ws.on('message', (m: Buffer) => messages.push(m));
    ws.send('hello');
    const big = Buffer.alloc(2 * 1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = i % 251;
    ws.send(big);
    await waitFor('both echoes', () => (messages.length === 2 ? true : undefined), 10_000);
    assert.equal(messages[0]!.toString(), 'hello');
    assert.ok(messages[1]!.equals(big), 'the 2 MB message came back intact');

    const seen = upgrades.at(-1)!;
    assert.equal(seen['x-portcullis-peer'], WEB);
    assert.equal(seen['x-forwarded-client-cert'], undefined);
    assert.equal(seen.authorization, undefined);
    assert.match(String(seen.traceparent), new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-01$`));

    const decision = mesh.ordersEvents.find((e) => e.type === 'authz.decision' && e.traceId === TRACE_ID);
    assert.ok(decision, 'the upgrade is an audited decision');
    assert.equal(decision.decision, 'allow');
    assert.equal(decision.status, 101);
    assert.equal(decision.subject, WEB);
    assert.equal(decision.rule, 'storefront-reads-orders');
    assert.equal(decision.action, 'GET /orders/feed');

    const done = closed(ws);
    ws.close(1000, 'bye');
    assert.equal((await done).code, 1000);
    const ev = await closeEvent(TRACE_ID);
    assert.equal(ev.decision, 'allow');
    assert.equal(ev.status, 101);
    assert.equal(ev.subject, WEB);
    assert.equal(ev.attributes!.closedBy, 'client');
    assert.equal(ev.attributes!.closeCode, 1000);
    assert.ok((ev.attributes!.bytesFromClient as number) > big.length);
    assert.ok((ev.attributes!.bytesToClient as number) > big.length);
    assert.ok((ev.attributes!.durationMs as number) > 0);
  });

  it('a denied path gets 403 before any upgrade, and the app never sees it', async () => {
    const before = upgrades.length;
    const ws = connect('/admin/feed');
    const status = await new Promise<number>((resolve, reject) => {
      ws.once('unexpected-response', (_req, res) => resolve(res.statusCode!));
      ws.once('open', () => reject(new Error('the upgrade went through')));
      ws.once('error', reject);
    });
    assert.equal(status, 403);
    assert.equal(upgrades.length, before);
    const ev = await waitFor('the denial', () =>
      mesh.ordersEvents.find((e) => e.action === 'GET /admin/feed' && e.status === 403),
    );
    assert.equal(ev.decision, 'deny');
    assert.equal(ev.reason, 'ERR_SIDECAR_POLICY_DENIED');
    assert.equal(ev.rule, 'nobody-touches-admin');
  });

  it('the client killed (its socket destroyed): the app side closes within a second, audited as closed by the client', async () => {
    const ws = connect('/orders/feed');
    await opened(ws);
    const server = await waitFor('the server side', () =>
      serverSockets.at(-1)?.readyState === WebSocket.OPEN ? serverSockets.at(-1) : undefined,
    );
    const serverClosed = closed(server);
    (ws as unknown as { _socket: { destroy(): void } })._socket.destroy();
    const { ms } = await serverClosed;
    assert.ok(ms < 1_000, `the app's side closed ${Math.round(ms)} ms after the client was killed`);
    const ev = await closeEvent(ws.traceId);
    assert.equal(ev.attributes!.closedBy, 'client');
  });

  it('the upstream killed (its socket destroyed): the client closes within a second (1001), audited as closed by the upstream', async () => {
    const ws = connect('/orders/feed');
    await opened(ws);
    const server = await waitFor('the server side', () =>
      serverSockets.at(-1)?.readyState === WebSocket.OPEN ? serverSockets.at(-1) : undefined,
    );
    const clientClosed = closed(ws);
    (server as unknown as { _socket: { destroy(): void } })._socket.destroy();
    const { code, ms } = await clientClosed;
    assert.ok(ms < 1_000, `the client closed ${Math.round(ms)} ms after the upstream was killed`);
    assert.equal(code, 1001);
    const ev = await closeEvent(ws.traceId);
    assert.equal(ev.attributes!.closedBy, 'upstream');
  });

  it('an idle WebSocket is closed by the sidecar (1001) after its idle limit, and audited as idle', async () => {
    const ws = connect('/orders/feed');
    await opened(ws);
    const t0 = performance.now();
    const { code } = await closed(ws);
    const after = performance.now() - t0;
    assert.equal(code, 1001);
    assert.ok(after >= ORDERS_IDLE_MS - 50, `closed after ${Math.round(after)} ms`);
    assert.ok(after < ORDERS_IDLE_MS + 1_500, `closed after ${Math.round(after)} ms`);
    const ev = await closeEvent(ws.traceId);
    assert.equal(ev.attributes!.closedBy, 'idle');
    const metrics = await (await fetch(mesh.orders.metricsUrl!)).text();
    assert.match(
      metrics,
      /^portcullis_sidecar_websockets_closed_total\{side="inbound",closed_by="idle"\} 1$/m,
    );
    assert.match(metrics, /^portcullis_sidecar_websockets_open\{side="inbound"\} 0$/m);
  });

  it('an absolute-form handshake (as through HTTP_PROXY) is routed by its URL and upgraded with the right accept key', async () => {
    const key = randomBytes(16).toString('base64');
    const socket = connectTcp(mesh.web.outbound!.port, '127.0.0.1');
    const head = await new Promise<string>((resolve, reject) => {
      let text = '';
      socket.on('data', (c: Buffer) => {
        text += c.toString('latin1');
        if (text.includes('\r\n\r\n')) resolve(text);
      });
      socket.on('error', reject);
      socket.write(
        'GET http://orders.shop.internal/orders/feed HTTP/1.1\r\nHost: orders.shop.internal\r\n' +
          `Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`,
      );
    });
    socket.destroy();
    assert.match(head, /^HTTP\/1\.1 101 /, head);
    const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    assert.match(head, new RegExp(`sec-websocket-accept: ${accept.replace(/[+/]/g, '\\$&')}`, 'i'));
  });

  it('Upgrade: h2c and other protocols are refused 400 on both sides with the reason; another WebSocket version gets 426', async () => {
    const h2c =
      'GET /orders/1 HTTP/1.1\r\nHost: orders\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n';
    const out = await rawExchange({ port: mesh.web.outbound!.port }, h2c);
    assert.match(out, /^HTTP\/1\.1 400 /, out);
    assert.match(out, /"error":"ERR_SIDECAR_UPGRADE_REFUSED"/);
    assert.match(out, /Upgrade: h2c is not supported/);
    const w = mesh.pki.leaf('web');
    const inb = await rawExchange(
      { port: mesh.orders.inbound.port, tls: { cert: w.certPem, key: w.keyPem } },
      h2c,
    );
    assert.match(inb, /^HTTP\/1\.1 400 /, inb);
    assert.match(inb, /Upgrade: h2c is not supported/);
    const v8 = await rawExchange(
      { port: mesh.web.outbound!.port },
      'GET /orders/feed HTTP/1.1\r\nHost: orders\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        'Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );
    assert.match(v8, /^HTTP\/1\.1 426 /, v8);
    assert.match(v8, /sec-websocket-version: 13/i);
  });

  it("an app whose 101 carries the wrong Sec-WebSocket-Accept: the client gets 502, not the app's 101", async () => {
    const ws = connect('/orders/bad-accept');
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      ws.once('unexpected-response', (_req, r) => resolve(r));
      ws.once('open', () => reject(new Error('the upgrade went through')));
      ws.once('error', reject);
    });
    assert.equal(res.statusCode, 502);
    const ev = await waitFor('the event', () =>
      mesh.ordersEvents.find((e) => e.traceId === ws.traceId && e.status === 502),
    );
    assert.equal(ev.reason, 'ERR_SIDECAR_UPSTREAM_UNAVAILABLE');
  });

  it('a handshake straight to the inbound side without a token is refused 401 before any upgrade', async () => {
    const before = upgrades.length;
    const w = mesh.pki.leaf('web');
    const ws = new WebSocket(`wss://127.0.0.1:${mesh.orders.inbound.port}/orders/feed`, {
      cert: w.certPem,
      key: w.keyPem,
      rejectUnauthorized: false,
      headers: { host: 'orders' },
    });
    const status = await new Promise<number>((resolve, reject) => {
      ws.once('unexpected-response', (_req, res) => resolve(res.statusCode!));
      ws.once('open', () => reject(new Error('the upgrade went through')));
      ws.once('error', reject);
    });
    assert.equal(status, 401);
    assert.equal(upgrades.length, before);
  });

  it('shutting the orders sidecar down closes its WebSockets with 1001, audited as shutdown', async () => {
    const ws = connect('/orders/feed');
    await opened(ws);
    const clientClosed = closed(ws);
    const t0 = performance.now();
    await mesh.orders.close();
    const { code } = await clientClosed;
    assert.equal(code, 1001);
    assert.ok(performance.now() - t0 < 3_000);
    const ev = await closeEvent(ws.traceId);
    assert.equal(ev.attributes!.closedBy, 'shutdown');
    assert.equal(ev.target, ORDERS);
  });
});
