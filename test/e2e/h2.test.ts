// HTTP/2 (non-gRPC) through the same layers as HTTP/1.1: an h2 client straight to orders' inbound
// listener, and the app calling its sidecar's outbound side with h2c prior knowledge, to an
// HTTP/1.1 echo app. The refusals, stripping and trace handling are those of HTTP/1.1.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect as h2connect, constants } from 'node:http2';
import type { ClientHttp2Session, OutgoingHttpHeaders } from 'node:http2';
import { after, before, describe, it } from 'node:test';
import { ORDERS, WEB, direct, startMesh } from './mesh.ts';
import type { Mesh } from './mesh.ts';

interface H2Answer {
  status: number;
  headers: Record<string, unknown>;
  body: string;
}

function call(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body?: string): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const s = session.request(headers);
    let status = 0;
    let head: Record<string, unknown> = {};
    let text = '';
    s.on('response', (h) => ((status = Number(h[':status'])), (head = h)));
    s.on('data', (c: Buffer) => (text += c));
    s.on('end', () => resolve({ status, headers: head, body: text }));
    s.on('error', reject);
    s.end(body);
  });
}

describe('HTTP/2 clients through the same layers as HTTP/1.1', () => {
  let mesh: Mesh;
  let token: string;
  let inbound: ClientHttp2Session;
  before(async () => {
    mesh = await startMesh();
    const leaf = mesh.pki.leaf('web');
    token = await mesh.web.tokens!.get(ORDERS);
    inbound = h2connect(`https://127.0.0.1:${mesh.orders.inbound.port}`, {
      cert: leaf.certPem,
      key: leaf.keyPem,
      rejectUnauthorized: false,
    });
  });
  after(async () => {
    inbound?.close();
    await mesh?.close();
  });

  it('negotiates h2 by ALPN and forwards an allowed stream with the verified identity and the caller trace', async () => {
    const traceId = randomBytes(16).toString('hex');
    const a = await call(inbound, {
      ':path': '/orders/7?x=1',
      authorization: `Bearer ${token}`,
      traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01`,
      'x-portcullis-peer': 'spiffe://example.org/ns/evil/sa/forged',
      x_spiffe_id: 'forged',
      'x-http-method-override': 'DELETE',
    });
    assert.equal(inbound.alpnProtocol, 'h2');
    assert.equal(a.status, 200);
    const seen = JSON.parse(a.body);
    assert.equal(seen.method, 'GET');
    assert.equal(seen.url, '/orders/7?x=1');
    assert.equal(seen.headers['x-portcullis-peer'], WEB);
    assert.equal(seen.headers.x_spiffe_id, undefined);
    assert.equal(seen.headers['x-http-method-override'], undefined);
    assert.equal(seen.headers.authorization, undefined);
    assert.equal(seen.headers.traceparent.slice(3, 35), traceId);
    const event = mesh.ordersEvents.findLast((e) => e.action === 'GET /orders/7?x=1')!;
    assert.equal(event.decision, 'allow');
    assert.equal(event.subject, WEB);
    assert.equal(event.traceId, traceId);
  });

  it('gives HTTP/2 streams the HTTP/1.1 refusals, each audited once', async () => {
    const cases: [OutgoingHttpHeaders, number, string][] = [
      [{ ':path': '/orders/1' }, 401, 'ERR_SIDECAR_TOKEN_MISSING'],
      [
        { ':path': '/orders/%2e%2e/admin', authorization: `Bearer ${token}` },
        400,
        'ERR_SIDECAR_PATH_AMBIGUOUS',
      ],
      [{ ':path': '//admin', authorization: `Bearer ${token}` }, 400, 'ERR_SIDECAR_PATH_AMBIGUOUS'],
      [{ ':path': '/admin', authorization: `Bearer ${token}` }, 403, 'ERR_SIDECAR_POLICY_DENIED'],
      [
        { ':path': '/orders/1', ':authority': 'orders', host: 'admin', authorization: `Bearer ${token}` },
        400,
        'ERR_SIDECAR_REQUEST_MALFORMED',
      ],
    ];
    for (const [headers, status, code] of cases) {
      const before = mesh.ordersEvents.length;
      const a = await call(inbound, headers);
      assert.equal(a.status, status, `${String(headers[':path'])} → ${status}`);
      assert.equal(JSON.parse(a.body).error, code);
      if (status === 401) assert.equal(a.headers['www-authenticate'], 'Bearer error="invalid_token"');
      const events = mesh.ordersEvents.slice(before);
      assert.equal(events.length, 1, `one audit event for ${code}`);
      assert.equal(events[0]!.reason, code);
    }
    // The connection survives a malformed stream: HTTP/2 refuses the stream, not the connection.
    assert.equal(
      (await call(inbound, { ':path': '/orders/1', authorization: `Bearer ${token}` })).status,
      200,
    );
  });

  it('answers CONNECT and Expect on an HTTP/2 stream as on HTTP/1.1, audited', async () => {
    let before = mesh.ordersEvents.length;
    const connect = await call(inbound, {
      ':method': 'CONNECT',
      ':authority': 'orders:443',
      authorization: `Bearer ${token}`,
    });
    assert.equal(connect.status, 400);
    assert.equal(JSON.parse(connect.body).error, 'ERR_SIDECAR_PATH_AMBIGUOUS');
    assert.deepEqual(
      mesh.ordersEvents.slice(before).map((e) => [e.action, e.reason]),
      [['CONNECT orders:443', 'ERR_SIDECAR_PATH_AMBIGUOUS']],
    );

    // Expect: 100-continue is answered 100 at once; the body then follows, and the app sees no Expect.
    const continued = await new Promise<H2Answer>((resolve, reject) => {
      const s = inbound.request(
        { ':path': '/orders/4', authorization: `Bearer ${token}`, expect: '100-continue' },
        { endStream: false },
      );
      let status = 0;
      let text = '';
      s.once('continue', () => s.end('the body, after the 100'));
      s.on('response', (h) => (status = Number(h[':status'])));
      s.on('data', (c: Buffer) => (text += c));
      s.on('end', () => resolve({ status, headers: {}, body: text }));
      s.on('error', reject);
    });
    assert.equal(continued.status, 200);
    const seen = JSON.parse(continued.body);
    assert.equal(seen.body, 'the body, after the 100');
    assert.equal(seen.headers.expect, undefined);

    // A client that resets its stream halfway through the body: the exchange with the app ends and
    // is recorded, and the connection serves the next stream.
    const partial = inbound.request(
      { ':path': '/orders/5', authorization: `Bearer ${token}` },
      { endStream: false },
    );
    partial.on('error', () => {});
    partial.write('half a body');
    await new Promise((r) => setTimeout(r, 100));
    partial.close(constants.NGHTTP2_CANCEL);
    const deadline = Date.now() + 2_000;
    while (!mesh.ordersEvents.some((e) => e.action === 'GET /orders/5') && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    const cut = mesh.ordersEvents.find((e) => e.action === 'GET /orders/5');
    assert.ok(cut, 'the reset exchange is recorded');
    assert.equal(cut.reason, 'ERR_SIDECAR_UPSTREAM_UNAVAILABLE');
    assert.equal(
      (await call(inbound, { ':path': '/orders/6', authorization: `Bearer ${token}` })).status,
      200,
    );

    // HEAD: the app's head without a body, and the stream ends cleanly.
    const head = await call(inbound, {
      ':method': 'HEAD',
      ':path': '/orders/7',
      authorization: `Bearer ${token}`,
    });
    assert.equal(head.status, 403, 'the policy allows GET only');
    assert.equal(head.body, '');

    before = mesh.ordersEvents.length;
    const expectation = await call(inbound, {
      ':path': '/orders/4',
      authorization: `Bearer ${token}`,
      expect: 'x-unknown',
    });
    assert.equal(expectation.status, 417);
    assert.equal(JSON.parse(expectation.body).error, 'ERR_SIDECAR_REQUEST_MALFORMED');
    const refused = mesh.ordersEvents.slice(before);
    assert.equal(refused.length, 1, 'the 417 is one audit event');
    assert.equal(refused[0]!.status, 417);
    assert.equal(refused[0]!.decision, 'deny');
    assert.equal(refused[0]!.action, 'GET /orders/4', 'the refused request is named');
  });

  it('lets the app call its sidecar with h2c prior knowledge, and HTTP/1.1 on the same port', async () => {
    const out = h2connect(`http://127.0.0.1:${mesh.web.outbound!.port}`);
    try {
      const a = await call(out, {
        ':path': '/orders/3',
        ':authority': 'orders',
        'x-portcullis-peer': 'forged',
      });
      assert.equal(a.status, 200);
      const seen = JSON.parse(a.body);
      assert.equal(seen.app, 'orders');
      assert.equal(seen.headers['x-portcullis-peer'], WEB);
      const unknown = await call(out, { ':path': '/x', ':authority': 'nowhere' });
      assert.equal(unknown.status, 404);
      assert.equal(JSON.parse(unknown.body).error, 'ERR_SIDECAR_ROUTE_UNKNOWN');
    } finally {
      out.close();
    }
    const viaHttp1 = await direct(mesh.orders.inbound.port, undefined, 'GET', '/orders/1');
    assert.equal(viaHttp1.status, 403, 'HTTP/1.1 on the inbound listener is unchanged (no certificate: 403)');
  });
});
