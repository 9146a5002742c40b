import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SHIPPING, WEB, startBudgetMesh } from './budget-mesh.ts';
import type { BudgetMesh, Caller } from './budget-mesh.ts';

describe('fair sharing of the app between callers at the sidecar', () => {
  let mesh: BudgetMesh;
  let web: Caller;
  let shipping: Caller;
  before(async () => {
    // A 3 s body budget: the slow caller's 200 handshakes may keep its own loop busy for a second.
    mesh = await startBudgetMesh(
      {
        upstreamConnections: 48,
        fairShare: { perCaller: 16, queue: 32, queueTimeout: '4s', retryAfter: '2s' },
      },
      { bodyTimeout: '3s' },
    );
    web = await mesh.caller('web');
    shipping = await mesh.caller('shipping', 4);
  });
  after(async () => {
    await mesh?.close();
  });

  it('200 slow-body requests from one caller leave a second caller at 10 req/s unharmed (p99 < 50 ms, none fails); the first gets 429 with Retry-After, recorded', async () => {
    // The slow caller is another process (as it would be), its bodies a byte every 300 ms: each
    // stays within the body-progress budget and so holds its place at the app or in the queue.
    const tokenFile = join(mesh.pki.dir, 'web-token');
    writeFileSync(tokenFile, web.token);
    const leaf = mesh.pki.leaf('web');
    const child = spawn(
      process.execPath,
      [
        'test/e2e/slow-caller.ts',
        String(mesh.orders.inbound.port),
        tokenFile,
        leaf.certFile,
        leaf.keyFile,
        mesh.pki.rootFile,
        '200',
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', r));
    try {
      while (!out.includes('ready\n')) {
        if (child.exitCode !== null) throw new Error(`slow caller exited ${child.exitCode}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const latencies: number[] = [];
      const failed: number[] = [];
      for (let i = 0; i < 30; i++) {
        const t0 = performance.now();
        const r = await shipping.call(i % 2 ? 'GET' : 'POST', i % 2 ? undefined : '{"order":1}');
        latencies.push(performance.now() - t0);
        if (r.status !== 200) failed.push(r.status);
        await new Promise((r) => setTimeout(r, Math.max(0, 100 - (performance.now() - t0))));
      }
      latencies.sort((a, b) => a - b);
      const p99 = latencies[Math.ceil(0.99 * latencies.length) - 1]!;
      assert.deepEqual(failed, [], 'every request of the second caller is served');
      assert.ok(p99 < 50, `second caller p99 ${p99.toFixed(1)} ms (median ${latencies[15]!.toFixed(1)})`);
    } finally {
      child.stdin.end();
    }
    assert.equal(await exited, 0);
    const { statuses, first429 } = JSON.parse(out.split('\n')[1]!) as {
      statuses: Record<string, number>;
      first429: string;
    };
    // 16 at the app and 32 waiting: the other 152 are refused at once, the waiting ones at 4 s.
    const tooMany = statuses['HTTP/1.1 429 Too Many Requests'] ?? 0;
    assert.ok(tooMany >= 152, `answers: ${JSON.stringify(statuses)}`);
    assert.equal(statuses['HTTP/1.1 408 Request Timeout'], undefined, 'no body that kept coming timed out');
    assert.match(first429, /retry-after: 2\r\n/i);
    assert.match(first429, /"error":"ERR_SIDECAR_CALLER_OVER_LIMIT"/);
    const events = mesh.ordersEvents.filter((e) => e.reason === 'ERR_SIDECAR_CALLER_OVER_LIMIT');
    assert.ok(events.length >= 152, `${events.length} events`);
    assert.ok(
      events.every((e) => e.subject === WEB && e.status === 429 && e.decision === 'deny'),
      'each refusal is recorded as a deny of the slow caller with 429',
    );
    const shippingEvents = mesh.ordersEvents.filter((e) => e.subject === SHIPPING);
    assert.equal(shippingEvents.length, 30);
    assert.ok(shippingEvents.every((e) => e.status === 200 && e.decision === 'allow'));
  });
});
