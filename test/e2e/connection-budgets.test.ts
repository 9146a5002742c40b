import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { startBudgetMesh } from './budget-mesh.ts';
import type { BudgetMesh, Caller } from './budget-mesh.ts';

/** Open file descriptors of this process (the servers run in it). */
const fds = () => readdirSync('/proc/self/fd').length;

/** Opens `n` TCP connections that never send a byte; `lifetimes` resolves with how long each stayed open (ms). */
async function silentConnections(
  port: number,
  n: number,
): Promise<{ sockets: Socket[]; lifetimes: Promise<number[]> }> {
  const sockets: Socket[] = [];
  const lifetimes: Promise<number>[] = [];
  // In batches: a burst of 1,000 SYNs at once overflows the listen backlog on a small machine.
  for (let i = 0; i < n; i += 100) {
    const batch = await Promise.all(
      Array.from(
        { length: Math.min(100, n - i) },
        () =>
          new Promise<Socket>((resolve, reject) => {
            let opened = 0;
            const s = connect(port, '127.0.0.1', () => {
              opened = performance.now();
              resolve(s);
            });
            s.once('error', reject);
            s.resume();
            lifetimes.push(new Promise((r) => s.once('close', () => r(performance.now() - opened))));
          }),
      ),
    );
    sockets.push(...batch);
  }
  for (const s of sockets) s.on('error', () => {});
  return { sockets, lifetimes: Promise.all(lifetimes) };
}

/** Waits until the process's open descriptors are back to `baseline` (or `limitMs` passes); returns the count. */
async function fdsBackTo(baseline: number, limitMs: number): Promise<number> {
  const end = performance.now() + limitMs;
  while (fds() > baseline && performance.now() < end) await new Promise((r) => setTimeout(r, 50));
  return fds();
}

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

describe('connection budgets of the STS, the collector and the sidecar', () => {
  let mesh: BudgetMesh;
  let web: Caller;
  before(async () => {
    mesh = await startBudgetMesh();
    web = await mesh.caller('web');
  });
  after(async () => {
    await mesh?.close();
  });

  const targets = ['sts', 'collector', 'sidecar'] as const;
  for (const target of targets)
    it(`${target}: 1,000 connections that never send a ClientHello are all closed within the handshake timeout, descriptors return to the baseline, and a normal request meanwhile takes < 100 ms`, async () => {
      const port =
        target === 'sts'
          ? mesh.sts.port
          : target === 'collector'
            ? mesh.collector.port
            : mesh.orders.inbound.port;
      // One normal request first, so the baseline includes the client's pooled connection.
      const normal = async () => {
        const t0 = performance.now();
        const r =
          target === 'sidecar'
            ? await web.call('GET')
            : await (
                await import('undici')
              )
                .request(`https://127.0.0.1:${port}/healthz`, {
                  dispatcher: web.agent,
                })
                .then(async (res) => ({ status: res.statusCode, text: await res.body.text() }));
        return { status: r.status, ms: performance.now() - t0 };
      };
      assert.equal((await normal()).status, 200);
      const baseline = fds();
      const { sockets, lifetimes } = await silentConnections(port, 1000);
      const open = fds();
      assert.equal(sockets.filter((s) => s.destroyed).length, 0, 'all 1,000 are open at once');
      assert.ok(open >= baseline + 1000, `${open - baseline} more descriptors than the baseline`);
      const during = await normal();
      assert.equal(during.status, 200);
      assert.ok(during.ms < 100, `a normal request took ${during.ms.toFixed(1)} ms`);
      const times = await lifetimes;
      const longest = Math.max(...times);
      // The budget (3 s) runs from each accept; closed by the server, never by the client here.
      assert.ok(longest < 3_000 + 500, `the longest-lived connection lasted ${longest.toFixed(0)} ms`);
      assert.ok(Math.min(...times) >= 2_900, `the shortest-lived lasted ${Math.min(...times).toFixed(0)} ms`);
      const now = await fdsBackTo(baseline, 2_000);
      assert.ok(now <= baseline, `descriptors ${now}, baseline ${baseline}`);
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
