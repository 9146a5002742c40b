// The collector's query API (docs/audit.md § Query API) over real mTLS, on the file store and on
// a real PostgreSQL store: newest-first pages with a cursor while appends go on, aggregates, the
// SSE tail and its resume, the status, and 400s for bad parameters.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:tls';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { AuditRecord, CollectorApi, FileStore, RunningCollector } from '../../audit/index.ts';
import {
  createCollectorApi,
  createSealer,
  loadCheckpointKey,
  openFileStore,
  verifyCheckpoint,
} from '../../audit/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { call, startTestCollector, workloadAgent } from './collector-harness.ts';
import { PG_URL, decision, pgSchema, tempDir } from './helpers.ts';

const COLLECTOR_ID = 'spiffe://example.org/ns/portcullis/sa/audit';
const WEB = 'spiffe://example.org/ns/shop/sa/web';

let pki: TestPki;
const pg = await pgSchema('query');
before(async () => {
  pki = await makeTestPki();
});
after(async () => {
  pki.cleanup();
  await pg.drop();
});

const stores: [string, (dir: string) => Record<string, unknown>][] = [
  ['file store', () => ({})],
  ['postgres store', () => ({ store: `${PG_URL}?table=${pg.schema}.t${Math.floor(Math.random() * 1e9)}` })],
];

for (const [label, storeConfig] of stores) {
  describe(`query API on the ${label}`, () => {
    let tmp: { dir: string; cleanup: () => void };
    let collector: RunningCollector;
    let api: CollectorApi;
    let web: ReturnType<typeof workloadAgent>;
    let reader: ReturnType<typeof workloadAgent>;
    const post = (events: unknown[]) =>
      call(web, `${collector.url}/v1/events`, { method: 'POST', body: { events } });

    before(async () => {
      tmp = tempDir();
      collector = await startTestCollector(pki, tmp.dir, {
        ...storeConfig(tmp.dir),
        limits: { queryRecords: 50, liveTails: 2 },
      } as never);
      const leaf = pki.leaf('security-console');
      api = createCollectorApi({
        url: collector.url,
        tls: { cert: leaf.certFile, key: leaf.keyFile, trustBundle: pki.rootFile },
        collectorId: COLLECTOR_ID,
      });
      web = workloadAgent(pki, pki.leaf('web'));
      reader = workloadAgent(pki, leaf);
      // 120 decisions of the orders sidecar (posted as web here: source is stamped with the peer).
      for (let b = 0; b < 4; b++)
        await post(
          Array.from({ length: 30 }, (_, j) => {
            const i = b * 30 + j;
            return decision(i, {
              rule: i % 3 === 0 ? 'default-deny' : 'storefront-reads-orders',
              reason: i % 3 === 0 ? 'ERR_SIDECAR_POLICY_DENIED' : 'allowed',
            });
          }),
        );
    });
    after(async () => {
      await api.close();
      await web.close();
      await reader.close();
      await collector.close();
      tmp.cleanup();
    });

    test('pages newest first with a cursor; appends between pages neither skip nor repeat a record', async () => {
      const seen: number[] = [];
      let cursor: string | undefined;
      let pages = 0;
      for (;;) {
        const page = await api.events({ type: 'authz.decision', order: 'desc', limit: 17, cursor });
        seen.push(...page.records.map((r) => r.seq));
        pages++;
        // Records arriving meanwhile are newer than the traversal: they must not show up in it.
        await post([decision(1000 + pages)]);
        if (!page.next) break;
        cursor = page.next;
      }
      assert.equal(seen.length, 120);
      assert.deepEqual(
        seen,
        [...seen].sort((a, b) => b - a),
      );
      assert.equal(new Set(seen).size, 120);
      assert.equal(pages, 8);
      // Oldest first by cursor: the same 120 and the ones added since, in order.
      const asc: AuditRecord[] = [];
      cursor = undefined;
      for (;;) {
        const page = await api.events({ type: 'authz.decision', order: 'asc', limit: 50, cursor });
        asc.push(...page.records);
        if (!page.next) break;
        cursor = page.next;
      }
      assert.equal(asc.length, 128);
      assert.deepEqual(
        asc.map((r) => r.seq),
        [...seen].reverse().concat(asc.slice(120).map((r) => r.seq)),
      );
    });

    test('filters by rule and reason, newest first', async () => {
      const page = await api.events({ rule: 'default-deny', order: 'desc', limit: 5 });
      assert.equal(page.records.length, 5);
      for (const r of page.records) assert.equal(r.event.rule, 'default-deny');
      assert.deepEqual(
        page.records.map((r) => r.event.action),
        [117, 114, 111, 108, 105].map((i) => `GET /orders/${i}`),
      );
      const reason = await api.events({ reason: 'ERR_SIDECAR_POLICY_DENIED', limit: 50 });
      assert.equal(reason.records.length, 40);
    });

    test('a cursor is refused with another order, other filters, or when it is not one', async () => {
      const page = await api.events({ type: 'authz.decision', order: 'desc', limit: 3 });
      const base = `${collector.url}/v1/events?type=authz.decision&limit=3`;
      for (const [q, message] of [
        [`&cursor=${page.next}`, /order=desc/],
        [`&order=desc&cursor=${page.next}&rule=x`, /other filters/],
        ['&order=desc&cursor=bm90IGEgY3Vyc29y', /not a cursor/],
        ['&order=desc&cursor=%%%', /not a cursor/],
        ['&order=desc&fromSeq=3', /fromSeq pages ascending/],
        [`&order=desc&cursor=${page.next}&fromSeq=1`, /not both|fromSeq/],
      ] as const) {
        const res = await call(reader, base + q);
        assert.equal(res.status, 400, q);
        assert.match((res.body as { message: string }).message, message, q);
      }
    });

    test('aggregates count by source and rule, by the service graph fields, and in time buckets', async () => {
      const since = new Date(Date.now() - 3_600_000).toISOString();
      const { groups } = await api.aggregates({
        filter: { type: 'authz.decision', since },
        groupBy: ['source', 'rule'],
      });
      const of = (rule: string) => groups.find((g) => g.key.rule === rule && g.key.source === WEB)?.count;
      assert.equal(of('default-deny'), 40);
      assert.equal(of('storefront-reads-orders'), 80);
      // The service graph: who called whom (subject → source) with volume and denials.
      const graph = await api.aggregates({
        filter: { type: 'authz.decision', since },
        groupBy: ['subject', 'source', 'decision'],
      });
      const deny = graph.groups.find((g) => g.key.subject === WEB && g.key.decision === 'deny');
      assert.ok(deny && deny.count >= 40);
      const hourly = await api.aggregates({
        filter: { rule: 'default-deny', since },
        groupBy: [],
        interval: '1m',
      });
      assert.equal(
        hourly.groups.reduce((n, g) => n + g.count, 0),
        40,
      );
      for (const g of hourly.groups) assert.match(g.bucket!, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:00\.000Z$/);
      // Without since: the last 24 hours.
      const day = await api.aggregates({ filter: { rule: 'default-deny' }, groupBy: ['rule'] });
      assert.equal(Date.parse(day.until) - Date.parse(day.since), 86_400_000);
      assert.deepEqual(day.groups, [{ key: { rule: 'default-deny' }, count: 40 }]);
    });

    test('the live tail sends new matching records, resumes after Last-Event-ID, and is bounded per caller', async () => {
      const control = new AbortController();
      const got: AuditRecord[] = [];
      const reading = (async () => {
        for await (const r of api.stream({ rule: 'tail-test' }, { signal: control.signal })) {
          got.push(r);
          if (got.length === 3) break;
        }
      })();
      // Let the stream open (it starts at the head), then append.
      await waitFor(async () => (await api.status()).collector.liveTails === 1);
      const sent = Date.now();
      await post([decision(1, { rule: 'tail-test' }), decision(2), decision(3, { rule: 'tail-test' })]);
      await post([decision(4, { rule: 'tail-test' })]);
      await reading;
      assert.ok(Date.now() - sent < 2000, 'records reach the tail within 2 s');
      assert.deepEqual(
        got.map((r) => r.event.action),
        ['GET /orders/1', 'GET /orders/3', 'GET /orders/4'],
      );
      // Resume after the first: the two after it, again.
      const resumed: AuditRecord[] = [];
      const again = new AbortController();
      for await (const r of api.stream(
        { rule: 'tail-test' },
        { lastEventId: got[0]!.seq, signal: again.signal },
      )) {
        resumed.push(r);
        if (resumed.length === 2) break;
      }
      assert.deepEqual(
        resumed.map((r) => r.seq),
        [got[1]!.seq, got[2]!.seq],
      );
      control.abort();
      again.abort();
      await waitFor(async () => (await api.status()).collector.liveTails === 0);

      // At most limits.liveTails (2 here) at once per caller.
      const holders = [new AbortController(), new AbortController()];
      const held = holders.map((c) =>
        (async () => {
          for await (const _ of api.stream({ rule: 'never' }, { signal: c.signal }));
        })(),
      );
      await waitFor(async () => (await api.status()).collector.liveTails === 2);
      const third = await call(reader, `${collector.url}/v1/events/stream?rule=never`);
      assert.equal(third.status, 429);
      assert.equal((third.body as { error: string }).error, 'ERR_AUDIT_RATE_LIMITED');
      for (const c of holders) c.abort();
      await Promise.all(held);
      await waitFor(async () => (await api.status()).collector.liveTails === 0);

      // Three opened at the same moment: still two, the third refused.
      const racers = [0, 1, 2].map(() => new AbortController());
      const outcomes = racers.map((c) =>
        (async () => {
          try {
            for await (const _ of api.stream({ rule: 'never' }, { signal: c.signal }));
            return 'ended';
          } catch (err) {
            return (err as Error).message;
          }
        })(),
      );
      const first = await Promise.race([
        ...outcomes,
        new Promise<string>((r) => setTimeout(() => r('none refused within 5 s'), 5000).unref()),
      ]);
      assert.match(first, /collector answered 429: .*ERR_AUDIT_RATE_LIMITED/);
      await waitFor(async () => (await api.status()).collector.liveTails === 2);
      for (const c of racers) c.abort();
      await Promise.all(outcomes);
      await waitFor(async () => (await api.status()).collector.liveTails === 0);
    });

    test('the status shows the store, the latest checkpoint and the chain', async () => {
      await collector.log.checkpoint();
      const status = await api.status();
      assert.equal(status.store.kind, label === 'file store' ? 'file' : 'postgres');
      assert.ok(status.store.records >= 120);
      assert.ok(status.checkpoint);
      assert.equal(
        verifyCheckpoint(status.checkpoint.note, collector.verifierKey).size,
        status.checkpoint.size,
      );
      assert.equal(status.chain.ok, true);
      assert.ok(status.chain.verifiedThrough >= status.checkpoint.size);
      assert.equal(status.collector.ready, true);
    });

    const bad: [string, string, RegExp][] = [
      ['/v1/events', 'order=sideways', /order/],
      ['/v1/events', 'rule=', /rule/],
      ['/v1/events', 'since=2026-12-06', /since/],
      ['/v1/events', 'since=2026-12-07T00:00:00Z&until=2026-12-06T00:00:00Z', /before until/],
      ['/v1/events', 'limit=51', /limit/],
      ['/v1/events', 'colour=red', /unknown parameter "colour"/],
      ['/v1/events', 'type=a&type=b', /type/],
      ['/v1/aggregates', 'groupBy=colour', /groupBy/],
      ['/v1/aggregates', 'groupBy=rule,rule', /twice/],
      ['/v1/aggregates', 'interval=2m', /interval/],
      ['/v1/aggregates', 'interval=1m&since=2020-01-01T00:00:00Z', /buckets/],
      ['/v1/aggregates', 'limit=3', /unknown parameter "limit"/],
      ['/v1/events/stream', 'cursor=abc', /unknown parameter "cursor"/],
      ['/v1/events/stream', 'decision=maybe', /decision/],
      ['/v1/status', 'verbose=1', /unknown parameter/],
    ];
    for (const [route, q, message] of bad)
      test(`GET ${route}?${q} is 400 ERR_AUDIT_BAD_REQUEST naming the parameter`, async () => {
        const res = await call(reader, `${collector.url}${route}?${q}`);
        assert.equal(res.status, 400, res.text);
        assert.equal((res.body as { error: string }).error, 'ERR_AUDIT_BAD_REQUEST');
        assert.match((res.body as { message: string }).message, message);
      });

    test('a bad Last-Event-ID is 400; a workload without audit-reader gets 403 on every query route', async () => {
      const res = await request(`${collector.url}/v1/events/stream`, { 'last-event-id': 'yesterday' });
      assert.match(res, /^HTTP\/1\.1 400/);
      for (const route of ['/v1/events', '/v1/aggregates', '/v1/events/stream', '/v1/status']) {
        const refused = await call(web, `${collector.url}${route}`);
        assert.equal(refused.status, 403, route);
      }
    });
  });
}

test('collector shutdown ends a live tail cleanly', async () => {
  const tmp = tempDir();
  const collector = await startTestCollector(pki, tmp.dir);
  const leaf = pki.leaf('security-console');
  const api = createCollectorApi({
    url: collector.url,
    tls: { cert: leaf.certFile, key: leaf.keyFile, trustBundle: pki.rootFile },
    collectorId: COLLECTOR_ID,
  });
  try {
    let ended = false;
    const reading = (async () => {
      for await (const _ of api.stream({}));
      ended = true;
    })();
    await waitFor(async () => (await api.status()).collector.liveTails === 1);
    const started = Date.now();
    await collector.close();
    await reading;
    assert.equal(ended, true);
    assert.ok(Date.now() - started < 5000);
  } finally {
    await api.close();
    tmp.cleanup();
  }
});

/** A raw request with extra headers, for what the API client never sends (the status line and headers). */
function request(url: string, headers: Record<string, string>): Promise<string> {
  const u = new URL(url);
  const leaf = pki.leaf('security-console');
  return new Promise((resolve, reject) => {
    const socket = connect(
      {
        host: u.hostname,
        port: Number(u.port),
        ca: pki.rootPem,
        cert: leaf.certPem,
        key: leaf.keyPem,
        servername: 'localhost',
        checkServerIdentity: () => undefined,
      },
      () => {
        const extra = Object.entries(headers)
          .map(([k, v]) => `${k}: ${v}\r\n`)
          .join('');
        socket.write(
          `GET ${u.pathname}${u.search} HTTP/1.1\r\nhost: localhost\r\n${extra}connection: close\r\n\r\n`,
        );
      },
    );
    let text = '';
    socket.on('data', (d: Buffer) => (text += d.toString()));
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
  });
}

test('file store: a collector started over a log written by appends alone answers the first aggregate from the index files, parsing no segment; missing ones are built in the background after it listens', async () => {
  const tmp = tempDir();
  const origin = 'example.org/audit';
  const segments = { records: 10, bytes: 64 * 1_048_576 };
  try {
    // The log, written straight into the store with the collector's key (as an earlier collector would).
    const dir = join(tmp.dir, 'log');
    const writer = await openFileStore({
      dir,
      sealer: createSealer(loadCheckpointKey(join(tmp.dir, 'data'), origin), origin),
      segmentRecords: segments.records,
    });
    for (let b = 0; b < 5; b++)
      await writer.append(
        Array.from({ length: 9 }, (_, j) => decision(b * 9 + j, { rule: `r${(b * 9 + j) % 3}` })),
      );
    await writer.close();
    const leaf = pki.leaf('security-console');
    const ask = async (collector: RunningCollector) => {
      const api = createCollectorApi({
        url: collector.url,
        tls: { cert: leaf.certFile, key: leaf.keyFile, trustBundle: pki.rootFile },
        collectorId: COLLECTOR_ID,
      });
      try {
        return (await api.aggregates({ filter: { type: 'authz.decision' }, groupBy: ['rule'] })).groups;
      } finally {
        await api.close();
      }
    };
    const expected = [
      { rule: 'r0', count: 15 },
      { rule: 'r1', count: 15 },
      { rule: 'r2', count: 15 },
    ];
    let collector = await startTestCollector(pki, tmp.dir, { segments } as never);
    try {
      const groups = await ask(collector);
      assert.deepEqual(
        groups
          .map((g) => ({ rule: g.key.rule, count: g.count }))
          .sort((a, b) => String(a.rule).localeCompare(String(b.rule))),
        expected,
      );
      assert.equal((collector.log.store() as FileStore).indexStats().parsedRecords, 0);
    } finally {
      await collector.close();
    }
    // Index files lost (as from a version that did not save them): the collector builds them in
    // the background once it listens, and saves them.
    rmSync(join(dir, 'index'), { recursive: true });
    collector = await startTestCollector(pki, tmp.dir, { segments } as never);
    try {
      const store = collector.log.store() as FileStore;
      await waitFor(async () => store.indexStats().filesWritten >= 4);
      assert.ok(store.indexStats().parsedRecords >= 40, JSON.stringify(store.indexStats()));
      assert.equal(readdirSync(join(dir, 'index')).filter((f) => f.endsWith('.idx')).length, 4);
    } finally {
      await collector.close();
    }
  } finally {
    tmp.cleanup();
  }
});

async function waitFor(check: () => Promise<boolean>, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 25));
  }
}
