import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { MemoryAuditSink } from '../../core/index.ts';
import { ORDERS, WEB, direct, startMesh, viaProxy } from './mesh.ts';
import type { Mesh } from './mesh.ts';
import { rawExchange, servedSerial } from '../helpers/raw-http.ts';

/** A memory sink whose `accepting()` the test flips, as a fail-closed collector client would. */
class SwitchableSink extends MemoryAuditSink {
  open = true;
  override accepting(): boolean {
    return this.open;
  }
}

describe('sidecar operations: reloads, audit back-pressure, upstream failures', () => {
  let mesh: Mesh;
  const sink = new SwitchableSink();
  let web: { cert: string; key: string };
  before(async () => {
    mesh = await startMesh({ ordersSink: sink });
    const w = mesh.pki.leaf('web');
    web = { cert: w.certPem, key: w.keyPem };
  });
  after(async () => {
    await mesh?.close();
  });

  it('serves a renewed certificate on new connections after a reload, and keeps calls working', async () => {
    const old = await servedSerial(mesh.orders.inbound.port, web);
    assert.equal(old, mesh.pki.leaf('orders').serial);
    const renewed = await mesh.pki.mint({ uris: [ORDERS] });
    writeFileSync(`${mesh.pki.certsDir}/orders.pem`, renewed.chainPem);
    writeFileSync(`${mesh.pki.certsDir}/orders-key.pem`, renewed.keyPem);
    assert.equal(mesh.orders.tls.reload(), true);
    assert.equal(await servedSerial(mesh.orders.inbound.port, web), renewed.serial);
    const r = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/orders/1');
    assert.equal(r.status, 200, r.body);
  });

  it("renews web's certificate: tokens are re-fetched bound to the new leaf and calls keep working", async () => {
    const before = mesh.web.tokens!.stats().fetches;
    const renewed = await mesh.pki.mint({ uris: [WEB] });
    writeFileSync(`${mesh.pki.certsDir}/web.pem`, renewed.chainPem);
    writeFileSync(`${mesh.pki.certsDir}/web-key.pem`, renewed.keyPem);
    assert.equal(mesh.web.tls.reload(), true);
    const r = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/orders/2');
    assert.equal(r.status, 200, r.body);
    assert.equal(mesh.web.tokens!.stats().fetches, before + 1);
    const ev = mesh.ordersEvents.at(-1)!;
    assert.equal(ev.decision, 'allow');
  });

  it('keeps the previous certificate when the new files do not make a key pair', async () => {
    const failures = mesh.orders.tls.stats.failures;
    const other = await mesh.pki.mint({ uris: [ORDERS] });
    writeFileSync(`${mesh.pki.certsDir}/orders-key.pem`, other.keyPem);
    assert.equal(mesh.orders.tls.reload(), false);
    assert.equal(mesh.orders.tls.stats.failures, failures + 1);
    const r = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/orders/3');
    assert.equal(r.status, 200, r.body);
  });

  it('refuses a request-smuggling shape the HTTP parser catches (Transfer-Encoding with Content-Length) with 400', async () => {
    const answer = await rawExchange(
      { port: mesh.orders.inbound.port, tls: web },
      'POST /orders/1 HTTP/1.1\r\nHost: orders\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    );
    assert.match(answer, /^HTTP\/1\.1 400 /);
    assert.match(answer, /ERR_SIDECAR_REQUEST_MALFORMED/);
    assert.equal(mesh.ordersEvents.at(-1)!.reason, 'ERR_SIDECAR_REQUEST_MALFORMED');
  });

  it('refuses new requests with 503 ERR_SIDECAR_AUDIT_UNAVAILABLE while the audit sink is not accepting', async () => {
    sink.open = false;
    const seen = mesh.ordersApp.seen.length;
    try {
      const r = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/orders/1');
      assert.equal(r.status, 503);
      assert.equal(r.json().error, 'ERR_SIDECAR_AUDIT_UNAVAILABLE');
      assert.equal(mesh.ordersApp.seen.length, seen);
    } finally {
      sink.open = true;
    }
  });

  it('answers 502 ERR_SIDECAR_PEER_IDENTITY_MISMATCH when the peer sidecar is not the expected service', async () => {
    // web's route to "orders" now points at web's own inbound listener, which presents web's ID.
    const { parseSidecarConfig, startSidecar } = await import('../../sidecar/index.ts');
    const { createLogger } = await import('../../core/index.ts');
    const cfg = parseSidecarConfig({
      service: WEB,
      trustDomain: 'example.org',
      tls: {
        cert: `${mesh.pki.certsDir}/web.pem`,
        key: `${mesh.pki.certsDir}/web-key.pem`,
        trustBundle: mesh.pki.rootFile,
      },
      sts: {
        url: mesh.sts.url,
        spiffeId: 'spiffe://example.org/ns/portcullis/sa/sts',
        issuer: 'https://sts.portcullis.internal',
      },
      inbound: { listen: { host: '127.0.0.1', port: 0 }, app: mesh.webApp.url, policy: 'policies/web.yaml' },
      outbound: {
        listen: { host: '127.0.0.1', port: 0 },
        routes: [{ name: 'orders', address: `127.0.0.1:${mesh.web.inbound.port}`, spiffeId: ORDERS }],
      },
    });
    const rogue = await startSidecar(cfg, {
      sink: new MemoryAuditSink(),
      logger: createLogger({ name: 't', level: 'silent' }),
    });
    try {
      const r = await viaProxy(rogue.outbound!.port, 'GET', 'http://orders/orders/1');
      assert.equal(r.status, 502, r.body);
      assert.equal(r.json().error, 'ERR_SIDECAR_PEER_IDENTITY_MISMATCH');
    } finally {
      await rogue.close();
    }
  });

  it('answers 502 ERR_SIDECAR_UPSTREAM_UNAVAILABLE with a short body when the app is down', async () => {
    await new Promise((r) => {
      mesh.ordersApp.server.closeAllConnections();
      mesh.ordersApp.server.close(r);
    });
    const r = await direct(mesh.orders.inbound.port, web, 'GET', '/orders/1', []);
    assert.equal(r.status, 401, 'no token still refused first');
    const p = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/orders/1');
    assert.equal(p.status, 502, p.body);
    assert.equal(p.json().error, 'ERR_SIDECAR_UPSTREAM_UNAVAILABLE');
    assert.ok(p.body.length < 200);
    assert.equal(mesh.ordersEvents.at(-1)!.reason, 'ERR_SIDECAR_UPSTREAM_UNAVAILABLE');
    assert.equal(mesh.ordersEvents.at(-1)!.decision, 'allow');
  });
});
