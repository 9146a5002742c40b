import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { startBudgetMesh } from './budget-mesh.ts';
import type { BudgetMesh, Caller } from './budget-mesh.ts';

/** Writes a request head and part of its body on a fresh mTLS connection; resolves with the answer and when it came. */
function stalledRequest(
  port: number,
  creds: { cert: string; key: string; ca: string },
  head: string,
  partialBody: string,
): Promise<{ text: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ port, host: '127.0.0.1', servername: 'localhost', ...creds }, () => {
      s.write(head + partialBody);
      t0 = performance.now();
    });
    let t0 = 0;
    let text = '';
    s.setTimeout(10_000, () => s.destroy(new Error('no answer within 10 s')));
    s.on('data', (c: Buffer) => (text += c.toString('latin1')));
    s.on('error', (err) => (text ? resolve({ text, ms: performance.now() - t0 }) : reject(err)));
    s.on('close', () => resolve({ text, ms: performance.now() - t0 }));
  });
}

describe('connection budgets of the STS, the collector and the sidecar: stalled bodies and the metrics listener', () => {
  let mesh: BudgetMesh;
  let web: Caller;
  before(async () => {
    mesh = await startBudgetMesh();
    web = await mesh.caller('web');
  });
  after(async () => {
    await mesh?.close();
  });

  it('sts: a stalled token request body gets 408 within the body timeout, with an RFC 6749 body, and is recorded', async () => {
    const leaf = mesh.pki.leaf('web');
    const creds = { cert: leaf.certPem, key: leaf.keyPem, ca: mesh.pki.rootPem };
    const cases: [string, string][] = [
      ['content-length: 200\r\n\r\n', 'grant_type=client_credentials&aud'],
      ['transfer-encoding: chunked\r\n\r\n', 'ffffffffffffffff\r\ngrant_type='],
    ];
    for (const [framing, partial] of cases) {
      const before = mesh.sts.events.length;
      const { text, ms } = await stalledRequest(
        mesh.sts.port,
        creds,
        `POST /oauth2/token HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/x-www-form-urlencoded\r\n${framing}`,
        partial,
      );
      assert.match(text, /^HTTP\/1\.1 408 /, framing);
      assert.match(text, /"error":"invalid_request"/);
      assert.ok(ms >= 900 && ms < 2_000, `answered after ${ms.toFixed(0)} ms`);
      const ev = mesh.sts.events.slice(before).find((e) => e.status === 408);
      assert.equal(ev?.reason, 'ERR_STS_REQUEST_INVALID');
      assert.deepEqual(ev?.attributes, { timeout: 'body' });
    }
  });

  it('collector: a stalled event batch gets 408 within the body timeout', async () => {
    const leaf = mesh.pki.leaf('web');
    const creds = { cert: leaf.certPem, key: leaf.keyPem, ca: mesh.pki.rootPem };
    const { text, ms } = await stalledRequest(
      mesh.collector.port,
      creds,
      'POST /v1/events HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n',
      '{"events":[{"type":"authz.decision",',
    );
    assert.match(text, /^HTTP\/1\.1 408 /);
    assert.match(text, /"error":"ERR_AUDIT_BAD_REQUEST"/);
    assert.ok(ms >= 900 && ms < 2_000, `answered after ${ms.toFixed(0)} ms`);
  });

  it('sidecar: a stalled body forwarded to the app gets 408, frees its pool connection, and is recorded', async () => {
    const leaf = mesh.pki.leaf('web');
    const creds = { cert: leaf.certPem, key: leaf.keyPem, ca: mesh.pki.rootPem };
    const before = mesh.ordersEvents.length;
    const { text, ms } = await stalledRequest(
      mesh.orders.inbound.port,
      creds,
      `POST /orders HTTP/1.1\r\nhost: orders\r\nauthorization: Bearer ${web.token}\r\ncontent-length: 100000\r\n\r\n`,
      'x'.repeat(100),
    );
    assert.match(text, /^HTTP\/1\.1 408 /);
    assert.match(text, /"error":"ERR_SIDECAR_BODY_TIMEOUT"/);
    assert.ok(ms >= 900 && ms < 2_000, `answered after ${ms.toFixed(0)} ms`);
    for (let i = 0; i < 50 && mesh.ordersEvents.length === before; i++)
      await new Promise((r) => setTimeout(r, 20));
    const ev = mesh.ordersEvents.slice(before).find((e) => e.status === 408);
    assert.equal(ev?.reason, 'ERR_SIDECAR_BODY_TIMEOUT');
    assert.equal(ev?.subject, 'spiffe://example.org/ns/shop/sa/web');
    const scrape = await fetch(mesh.orders.metricsUrl!).then((r) => r.text());
    assert.match(
      scrape,
      /portcullis_sidecar_connections_closed_total\{listener="inbound",reason="body"\} 1\n/,
    );
    assert.match(scrape, /portcullis_sidecar_connections_open\{listener="inbound"\} \d+\n/);
    assert.equal((await web.call('POST', 'x')).status, 200);
  });

  it('sidecar metrics listener: the same budgets — headers not complete within headersTimeout get 408 and the connection closes', async () => {
    const port = Number(new URL(mesh.orders.metricsUrl!).port);
    const answer = await new Promise<{ text: string; ms: number }>((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => s.write('GET /metrics HTTP/1.1\r\nhost: x\r\n'));
      const t0 = performance.now();
      let text = '';
      s.on('data', (c: Buffer) => (text += c.toString('latin1')));
      s.on('error', reject);
      s.on('close', () => resolve({ text, ms: performance.now() - t0 }));
    });
    assert.match(answer.text, /^HTTP\/1\.1 408 /);
    assert.ok(answer.ms >= 1_900 && answer.ms < 3_500, `closed after ${answer.ms.toFixed(0)} ms`);
  });
});
