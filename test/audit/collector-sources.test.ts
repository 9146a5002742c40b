// Spool health end to end (decision 0096): a real audit client and a real collector over mTLS.
// The collector is away while events pile up in the client's spool; once it is back, the client's
// reports show the backlog on GET /v1/sources, then its drain to 0; a source reports for itself
// only; a bad report is refused (alone) or ignored (on a batch, whose events are still stored).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { request } from 'undici';
import type { Agent } from 'undici';
import type { RunningCollector, SourceView } from '../../audit/index.ts';
import { createAuditClient, formatSpoolReport } from '../../audit/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { call, quiet, startTestCollector, workloadAgent } from './collector-harness.ts';
import { decision, tempDir } from './helpers.ts';

const COLLECTOR_ID = 'spiffe://example.org/ns/portcullis/sa/audit';
const WEB = 'spiffe://example.org/ns/shop/sa/web';
const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';
let pki: TestPki;
const agents: Agent[] = [];
const agent = (name: string) => {
  const a = workloadAgent(pki, pki.leaf(name));
  agents.push(a);
  return a;
};

before(async () => {
  pki = await makeTestPki();
});
after(async () => {
  for (const a of agents) await a.close();
  pki.cleanup();
});

async function sources(collector: RunningCollector, reader: Agent): Promise<SourceView[]> {
  const res = await call(reader, `${collector.url}/v1/sources`);
  assert.equal(res.status, 200, res.text);
  return (res.body as { sources: SourceView[] }).sources;
}

async function until<T>(what: string, get: () => Promise<T | undefined>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`${what}: not reached in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test(
  'sources: events pile up in the spool while the collector is away; back, the source shows the backlog, then its drain to 0, then goes stale once the client is gone',
  { timeout: 30_000 },
  async () => {
    const tmp = tempDir();
    const down = await startTestCollector(pki, tmp.dir);
    const port = down.port;
    await down.close();
    const leaf = pki.leaf('web');
    const client = createAuditClient({
      url: down.url,
      tls: { cert: leaf.certFile, key: leaf.keyFile, trustBundle: pki.rootFile },
      collectorId: COLLECTOR_ID,
      spoolDir: join(tmp.dir, 'spool'),
      spoolMaxBytes: 10_000_000,
      failMode: 'closed',
      batchSize: 40,
      retryMinMs: 20,
      retryMaxMs: 100,
      reportIntervalMs: 1000,
      logger: quiet,
    });
    let collector: RunningCollector | undefined;
    try {
      for (let i = 0; i < 120; i++) await client.record(decision(i));
      assert.equal(client.metrics().spoolDepth, 120);
      await new Promise((r) => setTimeout(r, 300)); // events age in the spool
      // Back, with a byte budget that lets one batch of this source through per second: the
      // backlog drains over a few seconds, in sight of the reader.
      collector = await startTestCollector(pki, tmp.dir, {
        listen: { host: '127.0.0.1', port },
        limits: { sourceBytes: 1024, sourceInterval: '1s' },
      });
      const reader = agent('security-console');
      const seen: SourceView[] = [];
      const backlog = await until('a report with a backlog', async () => {
        const web = (await sources(collector!, reader)).find((s) => s.source === WEB);
        if (web) seen.push(web);
        return web?.report && web.report.pending > 0 ? web : undefined;
      });
      // What stays behind the first batch (fixed while the collector was away: 1 to 40 events).
      const first = backlog.report!.pending;
      assert.ok(first >= 80 && first < 120, `pending ${first}`);
      assert.equal(backlog.report!.state, 'delivering');
      assert.ok(backlog.report!.oldestPendingMs >= 300, `oldest ${backlog.report!.oldestPendingMs} ms`);
      assert.ok(backlog.report!.pendingBytes > 0);
      assert.deepEqual([backlog.report!.missing, backlog.report!.lost], [0, 0]);
      assert.equal(backlog.stale, false);
      assert.equal(backlog.backlogGrowing, false);
      const drained = await until('the backlog drained to 0', async () => {
        const web = (await sources(collector!, reader)).find((s) => s.source === WEB);
        if (web) seen.push(web);
        return web?.report?.pending === 0 ? web : undefined;
      });
      assert.deepEqual(
        { state: drained.report!.state, oldest: drained.report!.oldestPendingMs, events: drained.events },
        { state: 'idle', oldest: 0, events: 120 },
      );
      assert.equal(client.metrics().delivered, 120);
      // The backlog only went down.
      const pendings = seen.flatMap((s) => (s.report ? [s.report.pending] : []));
      assert.deepEqual(
        pendings,
        [...pendings].sort((a, b) => b - a),
      );
      assert.ok(seen.every((s) => !s.backlogGrowing));
      // The client gone, nothing arrives: stale after 3 of its 1 s intervals.
      await client.close();
      const stale = await until(
        'stale',
        async () => (await sources(collector!, reader)).find((s) => s.source === WEB && s.stale),
        6_000,
      );
      assert.ok(Date.now() - Date.parse(stale.lastSeen) > 3000);
    } finally {
      await client.close();
      await collector?.close();
      tmp.cleanup();
    }
  },
);

test('sources: a source reports for itself only; bad reports get a 4xx; a bad report on a batch never costs its events', async () => {
  const tmp = tempDir();
  const collector = await startTestCollector(pki, tmp.dir);
  try {
    const web = agent('web');
    const reader = agent('security-console');
    const report = {
      pending: 3,
      pendingBytes: 900,
      oldestPendingMs: 40,
      missing: 0,
      lost: 0,
      state: 'delivering',
      intervalMs: 5000,
    };
    const post = (body: unknown, a = web) =>
      call(a, `${collector.url}/v1/sources/report`, { method: 'POST', rawBody: JSON.stringify(body) });
    // For itself, named or not: kept.
    assert.equal((await post(report)).status, 200);
    const own = await post({ ...report, pending: 4, source: WEB });
    assert.equal(own.status, 200, own.text);
    assert.deepEqual((own.body as { source: string }).source, WEB);
    // For another identity: 403, and nothing is kept for either.
    const other = await post({ ...report, pending: 99, source: ORDERS });
    assert.equal(other.status, 403);
    assert.equal((other.body as { error: string }).error, 'ERR_AUDIT_FORBIDDEN');
    let list = await sources(collector, reader);
    assert.deepEqual(
      list.map((s) => [s.source, s.report?.pending]),
      [[WEB, 4]],
    );
    // Malformed, unknown field, oversized, no certificate: 400, 400, 413, 401.
    for (const [body, status, message] of [
      [{ ...report, state: 'sleepy' }, 400, /state must be one of/],
      [{ ...report, pending: -1 }, 400, /pending must be a non-negative integer/],
      [{ ...report, colour: 'red' }, 400, /unknown field "colour"/],
      [[report], 400, /spool report object/],
      [{ ...report, pad: 'x'.repeat(5000) }, 413, /body exceeds|too large|4096/i],
    ] as const) {
      const res = await post(body);
      assert.equal(res.status, status, res.text);
      assert.match((res.body as { message: string }).message, message);
    }
    // Another workload reports for itself: a second source.
    assert.equal((await post(report, agent('orders'))).status, 200);
    const anonymous = workloadAgent(pki);
    agents.push(anonymous);
    assert.equal((await post(report, anonymous)).status, 401);
    // Not a reader: 403 on the list.
    assert.equal((await call(web, `${collector.url}/v1/sources`)).status, 403);
    // A batch whose report header is bad: its events are stored, the report is named as ignored.
    const batch = JSON.stringify({ events: [decision(1), decision(2)] });
    const res = await request(`${collector.url}/v1/events`, {
      method: 'POST',
      dispatcher: web,
      headers: { 'content-type': 'application/json', 'portcullis-spool': 'pending=lots' },
      body: batch,
    });
    assert.equal(res.statusCode, 200, await res.body.text());
    assert.match(String(res.headers['portcullis-spool-refused']), /pending must be an integer/);
    // …and a good one is kept with the batch.
    const good = await request(`${collector.url}/v1/events`, {
      method: 'POST',
      dispatcher: web,
      headers: {
        'content-type': 'application/json',
        'portcullis-spool': formatSpoolReport({ ...report, state: 'idle', pending: 0 }),
      },
      body: batch,
    });
    assert.equal(good.statusCode, 200, await good.body.text());
    assert.equal(good.headers['portcullis-spool-refused'], undefined);
    list = await sources(collector, reader);
    assert.deepEqual(
      list.map((s) => s.source),
      [WEB, ORDERS],
    );
    const w = list.find((s) => s.source === WEB)!;
    assert.deepEqual(
      { batches: w.batches, events: w.events, pending: w.report?.pending, state: w.report?.state },
      { batches: 2, events: 4, pending: 0, state: 'idle' },
    );
    assert.ok(w.lastBatch !== null);
  } finally {
    await collector.close();
    tmp.cleanup();
  }
});
