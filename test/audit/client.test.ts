import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { createLogger } from '../../core/index.ts';
import type { AuditClient, AuditClientOptions, AuditRecord, RunningCollector } from '../../audit/index.ts';
import { createAuditClient, openFileStore, verifyStore } from '../../audit/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { quiet, startTestCollector } from './collector-harness.ts';
import { decision, tempDir } from './helpers.ts';

const COLLECTOR_ID = 'spiffe://example.org/ns/portcullis/sa/audit';
let pki: TestPki;

before(async () => {
  pki = await makeTestPki();
});
after(() => pki.cleanup());

function clientOptions(
  pkiDir: TestPki,
  url: string,
  spoolDir: string,
  extra: Partial<AuditClientOptions> = {},
): AuditClientOptions {
  const leaf = pkiDir.leaf('web');
  return {
    url,
    tls: { cert: leaf.certFile, key: leaf.keyFile, trustBundle: pkiDir.rootFile },
    collectorId: COLLECTOR_ID,
    spoolDir,
    spoolMaxBytes: 10_000_000,
    failMode: 'open',
    batchSize: 100,
    lossWindow: { events: 1000, ms: 10 },
    retryMinMs: 20,
    retryMaxMs: 100,
    logger: quiet,
    ...extra,
  };
}

/** A logger whose lines the test can read. */
function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { lines, logger: createLogger({ name: 'audit-client-test', level: 'info', destination }) };
}

async function until(cond: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function records(dir: string): Promise<AuditRecord[]> {
  const store = await openFileStore({ dir: join(dir, 'log'), readOnly: true });
  const out: AuditRecord[] = [];
  for await (const r of store.read(0)) out.push(r);
  const verdict = await verifyStore(store);
  assert.ok(verdict.ok, JSON.stringify(verdict));
  await store.close();
  return out;
}

const actions = (rs: AuditRecord[]) =>
  rs.filter((r) => r.event.type === 'authz.decision').map((r) => r.event.action);
const expectedActions = (n: number, from = 0) =>
  Array.from({ length: n }, (_, i) => `GET /orders/${from + i}`);

test('client: delivers every event in order over mTLS, with metrics', async () => {
  const tmp = tempDir();
  const collector = await startTestCollector(pki, tmp.dir);
  const metricsRegistry = new Registry();
  const client = createAuditClient(
    clientOptions(pki, collector.url, join(tmp.dir, 'spool'), { metricsRegistry }),
  );
  try {
    for (let i = 0; i < 1000; i++) client.emit(decision(i));
    await client.flush();
    const { spoolBytes, ...m } = client.metrics();
    assert.deepEqual(m, {
      queueDepth: 0,
      spoolDepth: 0,
      delivered: 1000,
      spooled: 1000,
      spoolWrites: m.spoolWrites,
      lost: 0,
      failures: 0,
      rejected: 0,
      replayed: 0,
      possiblyLostAtRestart: 0,
    });
    assert.ok(m.spoolWrites >= 1 && m.spoolWrites <= 10, `1,000 events in ${m.spoolWrites} spool writes`);
    assert.ok(spoolBytes < 10_000_000);
    const text = await metricsRegistry.metrics();
    assert.match(text, /portcullis_audit_queue_depth 0/);
    assert.match(text, /portcullis_audit_events_delivered_total 1000/);
    await client.close();
    await collector.close();
    const rs = await records(tmp.dir);
    assert.deepEqual(actions(rs), expectedActions(1000));
    assert.ok(rs.every((r) => r.event.source === 'spiffe://example.org/ns/shop/sa/web'));
  } finally {
    await client.close();
    await collector.close();
    tmp.cleanup();
  }
});

test('client: a lone event leaves within one batch interval, without a flush', async () => {
  const tmp = tempDir();
  const collector = await startTestCollector(pki, tmp.dir);
  const client = createAuditClient(
    clientOptions(pki, collector.url, join(tmp.dir, 'spool'), { lossWindow: { ms: 50 } }),
  );
  try {
    client.emit(decision(0));
    await until(() => client.metrics().delivered === 1, 3_000);
    client.emit(decision(1));
    await until(() => client.metrics().delivered === 2, 3_000);
  } finally {
    await client.close();
    await collector.close();
    tmp.cleanup();
  }
});

test(
  'client: a collector outage in the middle of a stream is spooled and replayed; every event arrives once, in order',
  { timeout: 60_000 },
  async () => {
    const tmp = tempDir();
    let collector: RunningCollector = await startTestCollector(pki, tmp.dir);
    const port = collector.port;
    const client = createAuditClient(clientOptions(pki, collector.url, join(tmp.dir, 'spool')));
    const N = 3000;
    let maxSpool = 0;
    try {
      for (let i = 0; i < N; i++) {
        client.emit(decision(i));
        if (i % 50 === 49) await new Promise((r) => setTimeout(r, 5));
        if (i === 1000) await collector.close();
        if (i > 1000 && i < 2000) maxSpool = Math.max(maxSpool, client.metrics().spoolDepth);
        if (i === 2000) {
          assert.equal(client.accepting(), true, 'failMode open keeps accepting');
          collector = await startTestCollector(pki, tmp.dir, { listen: { host: '127.0.0.1', port } });
        }
      }
      await client.flush();
      await until(() => client.metrics().delivered === N);
      const m = client.metrics();
      assert.ok(maxSpool > 0, 'events were spooled while the collector was away');
      assert.ok(m.spooled > 0 && m.failures > 0);
      assert.equal(m.lost, 0);
      assert.equal(m.spoolDepth, 0);
      await client.close();
      await collector.close();
      const rs = await records(tmp.dir);
      // The count of authz.decision events equals the number emitted, exactly, and order holds.
      assert.deepEqual(actions(rs), expectedActions(N));
    } finally {
      await client.close();
      tmp.cleanup();
    }
  },
);

test(
  'client: a new process replays what a previous one left in the spool, before its own events',
  { timeout: 30_000 },
  async () => {
    const tmp = tempDir();
    const spool = join(tmp.dir, 'spool');
    const collector = await startTestCollector(pki, tmp.dir);
    const port = collector.port;
    await collector.close();
    let back: RunningCollector | undefined;
    try {
      const first = createAuditClient(clientOptions(pki, collector.url, spool));
      for (let i = 0; i < 250; i++) first.emit(decision(i));
      await first.flush();
      assert.equal(first.metrics().spoolDepth, 250);
      await first.close();

      back = await startTestCollector(pki, tmp.dir, { listen: { host: '127.0.0.1', port } });
      const second = createAuditClient(clientOptions(pki, back.url, spool));
      for (let i = 250; i < 300; i++) second.emit(decision(i));
      await until(() => second.metrics().delivered === 300);
      await second.close();
      await back.close();
      assert.deepEqual(actions(await records(tmp.dir)), expectedActions(300));
    } finally {
      await back?.close();
      tmp.cleanup();
    }
  },
);

test('client: failMode open counts and logs what a full spool cannot keep, and keeps accepting', async () => {
  const tmp = tempDir();
  const { lines, logger } = capturingLogger();
  // Nothing listens on port 1: every delivery fails.
  const client = createAuditClient(
    clientOptions(pki, 'https://127.0.0.1:1', join(tmp.dir, 'spool'), { spoolMaxBytes: 4096, logger }),
  );
  try {
    for (let i = 0; i < 100; i++) client.emit(decision(i));
    await client.flush();
    const m = client.metrics();
    assert.ok(m.lost > 0, 'some events were lost');
    assert.equal(m.lost + m.spoolDepth, 100, 'every event is either spooled or counted as lost');
    assert.ok(m.spoolBytes <= 4096);
    assert.equal(client.accepting(), true);
    assert.ok(lines.some((l) => /audit events lost: spool is full/.test(String(l.msg)) && l.level === 50));
  } finally {
    await client.close();
    tmp.cleanup();
  }
});

test('client: failMode closed stops accepting once the spool is full', async () => {
  const tmp = tempDir();
  const client = createAuditClient(
    clientOptions(pki, 'https://127.0.0.1:1', join(tmp.dir, 'spool'), {
      spoolMaxBytes: 4096,
      failMode: 'closed',
    }),
  );
  try {
    assert.equal(client.accepting(), true);
    for (let i = 0; i < 100; i++) client.emit(decision(i));
    await client.flush();
    assert.equal(client.accepting(), false);
    assert.equal(client.metrics().lost + client.metrics().spoolDepth, 100);
  } finally {
    await client.close();
    tmp.cleanup();
  }
});

test('client: a collector that does not carry the expected SPIFFE ID gets nothing; events are spooled', async () => {
  const tmp = tempDir();
  const collector = await startTestCollector(pki, tmp.dir);
  const client = createAuditClient(
    clientOptions(pki, collector.url, join(tmp.dir, 'spool'), {
      collectorId: 'spiffe://example.org/ns/shop/sa/orders',
    }),
  );
  try {
    for (let i = 0; i < 10; i++) client.emit(decision(i));
    await client.flush();
    assert.equal(client.metrics().delivered, 0);
    assert.equal(client.metrics().spoolDepth, 10);
    assert.ok(client.metrics().failures >= 1);
    assert.equal(collector.log.size, 0);
  } finally {
    await client.close();
    await collector.close();
    tmp.cleanup();
  }
});

test('client: invalid events and events after close are counted as lost, never sent', async () => {
  const tmp = tempDir();
  const client: AuditClient = createAuditClient(
    clientOptions(pki, 'https://127.0.0.1:1', join(tmp.dir, 'spool')),
  );
  try {
    client.emit({ ...decision(1), decision: 'perhaps' } as never);
    await client.close();
    client.emit(decision(2));
    assert.equal(client.metrics().lost, 2);
    assert.equal(client.accepting(), false);
  } finally {
    tmp.cleanup();
  }
});

test('client: an event of a type only the collector writes is refused at emit, and does not hold back the events after it', async () => {
  const tmp = tempDir();
  const collector = await startTestCollector(pki, tmp.dir);
  const client = createAuditClient(clientOptions(pki, collector.url, join(tmp.dir, 'spool')));
  try {
    // The collector answers it 403 for good: spooled, it would be retried for ever, first in line.
    client.emit({ ...decision(1), type: 'admin.audit.read' });
    client.emit(decision(2));
    await client.flush();
    assert.equal(client.metrics().lost, 1);
    assert.equal(client.metrics().delivered, 1);
    const types = [];
    for await (const r of collector.log.store().read(0)) types.push(r.event.type);
    assert.ok(!types.includes('admin.audit.read'), types.join(', '));
  } finally {
    await client.close();
    await collector.close();
    tmp.cleanup();
  }
});

const badOptions: [string, Partial<AuditClientOptions>][] = [
  ['failMode', { failMode: 'maybe' as never }],
  ['spoolMaxBytes', { spoolMaxBytes: 10 }],
  ['url', { url: 'http://127.0.0.1:1' }],
  ['batchIntervalMs', { batchIntervalMs: -1 }],
];
for (const [label, change] of badOptions) {
  test(`client: a bad "${label}" option is a TypeError`, () => {
    assert.throws(
      () => createAuditClient(clientOptions(pki, 'https://127.0.0.1:1', '/nonexistent', change)),
      TypeError,
    );
  });
}

test('client: events beyond the byte limit of a request are split into several requests and arrive in order', async () => {
  const tmp = tempDir();
  const collector = await startTestCollector(pki, tmp.dir);
  const client = createAuditClient(
    clientOptions(pki, collector.url, join(tmp.dir, 'spool'), { batchSize: 500, batchMaxBytes: 8192 }),
  );
  try {
    const big = 'x'.repeat(2000);
    for (let i = 0; i < 600; i++) client.emit(decision(i, i % 10 === 0 ? { target: big } : {}));
    await client.flush();
    await until(() => client.metrics().delivered === 600);
    assert.equal(client.metrics().lost, 0);
    assert.equal(client.metrics().failures, 0);
    await client.close();
    await collector.close();
    assert.deepEqual(actions(await records(tmp.dir)), expectedActions(600));
  } finally {
    await client.close();
    await collector.close();
    tmp.cleanup();
  }
});

test('client: events beyond queueMax waiting for the spool are counted and logged as lost, never silently dropped', async () => {
  const tmp = tempDir();
  const { lines, logger } = capturingLogger();
  const client = createAuditClient(
    clientOptions(pki, 'https://127.0.0.1:1', join(tmp.dir, 'spool'), { queueMax: 50, logger }),
  );
  try {
    for (let i = 0; i < 120; i++) client.emit(decision(i));
    await client.flush();
    const m = client.metrics();
    assert.equal(m.spooled + m.lost, 120);
    assert.ok(m.lost > 0);
    assert.ok(lines.some((l) => /audit events lost: 50 events already wait/.test(String(l.msg))));
  } finally {
    await client.close();
    tmp.cleanup();
  }
});

test(
  'close() delivers for at most closeDeliveryMs: a large backlog stays spooled for the next start, and nothing is lost or doubled',
  { timeout: 60_000 },
  async () => {
    const tmp = tempDir();
    const spoolDir = join(tmp.dir, 'spool');
    let collector: RunningCollector | undefined;
    try {
      // A backlog built while the collector is away (nothing listens on port 9).
      const away = createAuditClient(clientOptions(pki, 'https://127.0.0.1:9', spoolDir));
      for (let i = 0; i < 8_000; i++) away.emit(decision(i));
      // (emitted in one turn: more than queueMax, 10,000, would be counted lost by design)
      await away.close();
      assert.equal(away.metrics().lost, 0);
      collector = await startTestCollector(pki, tmp.dir);
      const { lines, logger } = capturingLogger();
      const brief = createAuditClient(
        clientOptions(pki, collector.url, spoolDir, { closeDeliveryMs: 30, logger }),
      );
      const started = performance.now();
      await brief.close();
      const tookMs = performance.now() - started;
      assert.ok(tookMs < 3_000, `close took ${tookMs.toFixed(0)} ms with 8,000 events spooled`);
      const left = lines.find(
        (l) => l.msg === 'audit events left in the spool at shutdown; the next start delivers them',
      );
      assert.ok(left && (left.events as number) > 0, JSON.stringify(lines));
      // The next start delivers the rest: every event once.
      const next = createAuditClient(clientOptions(pki, collector.url, spoolDir));
      await next.flush();
      await next.close();
      await collector.close();
      collector = undefined;
      const actions = (await records(tmp.dir)).map((r) => r.event.action);
      assert.equal(actions.length, 8_000);
      assert.equal(new Set(actions).size, 8_000, 'no event stored twice');
    } finally {
      await collector?.close();
      tmp.cleanup();
    }
  },
);
