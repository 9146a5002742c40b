// The collector's query API on a log of 1,000,000 events, on the file store and on the PostgreSQL
// store (issue #18): the first page of a filtered query under 1 s, an aggregate over 24 h under
// 2 s, `policy replay` of the whole log through the collector under 30 s. Beside each figure over
// mTLS, the same query on the store in process (the baseline of the same run).
//
//   npm run bench:query                 full run (1,000,000 events per store, a few minutes)
//   npm run bench:query -- --quick      100,000 events, to check it works
//   npm run bench:query -- --events N [--only file|postgres] [--runs R]
//
// The log is written into the store directly (sealed with the collector's key, append times spread
// over the last 24 hours, batches of 10,000), then a real collector is started on it in this process.
// Everything lives in a temp directory and a throw-away PostgreSQL schema, removed at the end.
// Prints one human line per figure and a final machine-readable line: `BENCH_QUERY {json}`.
import { execFile } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { createLogger } from '../../core/index.ts';
import {
  createCollectorApi,
  createSealer,
  loadCheckpointKey,
  openStore,
  parseAuditConfig,
  startCollector,
} from '../../audit/index.ts';
import type {
  AggregateQuery,
  AuditStore,
  CollectorApi,
  FileStore,
  RecordFilter,
  RunningCollector,
} from '../../audit/index.ts';
import { examplePki } from '../pki.ts';
import { COLLECTOR_ID } from '../collector.ts';
import { machineFacts } from '../machine.ts';
import { ADMIN, ORDERS, PROPOSED, expectedReplay, trafficEvent } from '../traffic.ts';

const run = promisify(execFile);
const args = process.argv.slice(2);
const flag = (name: string) => {
  const i = args.indexOf(name);
  return i === -1 ? undefined : args[i + 1];
};
const EVENTS = Number(flag('--events') ?? (args.includes('--quick') ? 100_000 : 1_000_000));
if (!Number.isSafeInteger(EVENTS) || EVENTS < 20_000) throw new Error('--events must be an integer ≥ 20000');
const RUNS = Number(flag('--runs') ?? 3);
const ONLY = flag('--only');
const PG_URL = process.env.PORTCULLIS_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
const BATCH = 10_000;
const ORIGIN = 'example.org/bench/query';

/** Writes the log straight into the store, sealed with the collector's key, append times over the last 24 h. */
async function fill(spec: string, dataDir: string): Promise<number> {
  const signer = loadCheckpointKey(dataDir, ORIGIN);
  const start = Date.now() - 86_400_000 + 60_000;
  let batch = 0;
  const batches = Math.ceil(EVENTS / BATCH);
  const store = await openStore(spec, {
    sealer: createSealer(signer, ORIGIN),
    clock: () => new Date(start + Math.floor((batch * (86_400_000 - 120_000)) / batches)),
  });
  const started = performance.now();
  for (let at = 0; at < EVENTS; at += BATCH, batch++) {
    const n = Math.min(BATCH, EVENTS - at);
    await store.append(Array.from({ length: n }, (_, j) => trafficEvent(at + j, EVENTS)));
  }
  await store.close();
  return (performance.now() - started) / 1000;
}

const quiet = createLogger({ name: 'bench', level: 'silent' });

async function collectorOn(spec: string, dataDir: string, pki: { ids: string; certs: string }) {
  const started = performance.now();
  const collector = await startCollector(
    parseAuditConfig({
      listen: { host: '127.0.0.1', port: 0 },
      origin: ORIGIN,
      identities: pki.ids,
      tls: {
        cert: join(pki.certs, 'audit.pem'),
        key: join(pki.certs, 'audit-key.pem'),
        trustBundle: join(pki.certs, 'root.pem'),
      },
      dataDir,
      store: spec,
      checkpoint: { everyRecords: 1_000_000, interval: '1h' },
      limits: { queryRecords: 10_000 },
    }),
    { logger: quiet, defaultMetrics: false },
  );
  return { collector, seconds: (performance.now() - started) / 1000 };
}

function apiFor(collector: RunningCollector, certs: string): CollectorApi {
  return createCollectorApi({
    url: collector.url,
    tls: {
      cert: join(certs, 'security-console.pem'),
      key: join(certs, 'security-console-key.pem'),
      trustBundle: join(certs, 'root.pem'),
    },
    collectorId: COLLECTOR_ID,
    timeoutMs: 120_000,
  });
}

const since = () => new Date(Date.now() - 86_400_000).toISOString();
const pages: [string, () => RecordFilter][] = [
  [
    'deny decisions of orders, newest first',
    () => ({ type: 'authz.decision', source: ORDERS, decision: 'deny', order: 'desc', limit: 100 }),
  ],
  ['a rare reason (0.1 %), newest first', () => ({ reason: 'rare-reason', order: 'desc', limit: 100 })],
  [
    'admin-console denied by rule default-deny, last 24 h',
    () => ({ subject: ADMIN, rule: 'default-deny', since: since(), order: 'desc', limit: 100 }),
  ],
];
const aggregates: [string, () => AggregateQuery][] = [
  ['24 h by source and rule', () => ({ filter: { since: since() }, groupBy: ['source', 'rule'] })],
  [
    '24 h service graph',
    () => ({
      filter: { type: 'authz.decision', since: since() },
      groupBy: ['subject', 'source', 'decision'],
    }),
  ],
  [
    '24 h denials per hour by reason',
    () => ({ filter: { decision: 'deny', since: since() }, groupBy: ['reason'], interval: '1h' }),
  ],
];

async function time<T>(f: () => Promise<T>): Promise<{ seconds: number; value: T }> {
  const started = performance.now();
  const value = await f();
  return { seconds: (performance.now() - started) / 1000, value };
}

const r2 = (s: number) => Math.round(s * 1000) / 1000;

/** Each query RUNS times through the collector and on the store; returns the figures. */
async function measure(name: string, api: CollectorApi, store: AuditStore, label: string) {
  const out: Record<string, unknown> = {};
  for (const [title, make] of pages) {
    const viaApi: number[] = [];
    const direct: number[] = [];
    let count = 0;
    for (let i = 0; i < RUNS; i++) {
      const a = await time(() => api.events(make()));
      viaApi.push(r2(a.seconds));
      count = a.value.records.length;
      direct.push(r2((await time(() => store.query(make()))).seconds));
    }
    if (count === 0) throw new Error(`${name}: "${title}" found nothing`);
    console.log(
      `${name} ${label}: first page, ${title}: ${viaApi.join(', ')} s over mTLS (store in process ${direct.join(', ')} s), ${count} records`,
    );
    out[`page: ${title}`] = {
      api: viaApi,
      store: direct,
      target: Math.max(...viaApi) < 1 ? 'met' : 'missed',
    };
  }
  for (const [title, make] of aggregates) {
    const viaApi: number[] = [];
    const direct: number[] = [];
    let total = 0;
    let groups = 0;
    for (let i = 0; i < RUNS; i++) {
      const a = await time(() => api.aggregates(make()));
      viaApi.push(r2(a.seconds));
      total = a.value.groups.reduce((n, g) => n + g.count, 0);
      groups = a.value.groups.length;
      direct.push(r2((await time(() => store.aggregate(make()))).seconds));
    }
    console.log(
      `${name} ${label}: aggregate ${title}: ${viaApi.join(', ')} s over mTLS (store in process ${direct.join(', ')} s), ${total} records in ${groups} groups`,
    );
    out[`aggregate: ${title}`] = {
      api: viaApi,
      store: direct,
      records: total,
      target: Math.max(...viaApi) < 2 ? 'met' : 'missed',
    };
  }
  return out;
}

async function replayThrough(collector: RunningCollector, certs: string, policyFile: string) {
  const started = performance.now();
  const { stdout } = await run(
    process.execPath,
    [
      'cli/portcullis.ts',
      'policy',
      'replay',
      '--policy',
      policyFile,
      '--from',
      collector.url,
      '--cert',
      join(certs, 'security-console.pem'),
      '--key',
      join(certs, 'security-console-key.pem'),
      '--trust',
      join(certs, 'root.pem'),
      '--collector-id',
      COLLECTOR_ID,
      '--page-size',
      '10000',
      '--json',
    ],
    { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: 600_000 },
  );
  const seconds = (performance.now() - started) / 1000;
  const report = JSON.parse(stdout) as Record<string, number>;
  for (const [k, v] of Object.entries(expectedReplay(EVENTS)))
    if (report[k] !== v) throw new Error(`replay through the collector: ${k} is ${report[k]}, expected ${v}`);
  return seconds;
}

const loadBefore = loadavg();
const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-query-'));
const schema = `bench_query_${process.pid}`;
const results: Record<string, unknown> = { events: EVENTS, runs: RUNS };
try {
  const pki = await examplePki(dir);
  const policyFile = join(dir, 'orders-proposed.yaml');
  writeFileSync(policyFile, PROPOSED);
  const stores: [string, string][] = [
    ['file', `file:${join(dir, 'log')}`],
    ['postgres', `${PG_URL}?table=${schema}.log`],
  ];
  for (const [name, spec] of stores) {
    if (ONLY && ONLY !== name) continue;
    const dataDir = join(dir, `data-${name}`);
    const fillSeconds = await fill(spec, dataDir);
    console.log(`${name}: wrote ${EVENTS.toLocaleString('en-US')} events in ${fillSeconds.toFixed(1)} s`);
    let rebuild: Record<string, unknown> | undefined;
    if (name === 'file') {
      // What a store without index files (written before decision 0095) costs once: every
      // segment's index built from its bytes, on a read-only store (which saves nothing).
      const log = join(dir, 'log');
      renameSync(join(log, 'index'), join(dir, 'index-aside'));
      let built;
      try {
        const ro = (await openStore(`file:${log}`, { readOnly: true })) as FileStore;
        built = await time(() => ro.prepareQueries());
        rebuild = { seconds: r2(built.seconds), ...ro.indexStats() };
        await ro.close();
      } finally {
        // The index files go back whatever happened: the figures below read them.
        renameSync(join(dir, 'index-aside'), join(log, 'index'));
      }
      console.log(`${name}: every segment's index built from its bytes: ${built.seconds.toFixed(2)} s`);
    }
    if (name === 'postgres') {
      // A million rows written in minutes outpace autovacuum's ANALYZE; without statistics the
      // planner picks bitmap scans and sorts over the whole table (seconds per page). Analyze now,
      // as autovacuum does once it catches up with a table that grows.
      const client = new pg.Client({ connectionString: PG_URL });
      await client.connect();
      const analyzed = await time(() => client.query(`ANALYZE ${schema}.log`));
      await client.end();
      console.log(`${name}: ANALYZE took ${analyzed.seconds.toFixed(1)} s`);
    }
    const figures: Record<string, unknown> = { fillSeconds: r2(fillSeconds) };
    if (rebuild) figures.rebuildAllIndexesFromSegments = rebuild;
    let { collector, seconds } = await collectorOn(spec, dataDir, pki);
    figures.collectorStartSeconds = r2(seconds);
    let api = apiFor(collector, pki.certs);
    // The store the collector serves, read in process for the baseline (same indexes, same data).
    let store = collector.log.store();
    if (name === 'file') {
      // The writer saved each complete segment's index as it completed, the live one at close:
      // the first query after a start reads index files back (decision 0095).
      const first = await time(() =>
        api.events({ type: 'authz.decision', decision: 'deny', order: 'desc', limit: 100 }),
      );
      figures.firstStartFirstPageSeconds = r2(first.seconds);
      console.log(
        `${name}: first page after the first start (index files saved by the writer): ${first.seconds.toFixed(2)} s`,
      );
      await api.close();
      await collector.close();
      // A restart: the first 24 h aggregate right after it, while the background read-back may run.
      ({ collector, seconds } = await collectorOn(spec, dataDir, pki));
      figures.collectorRestartSeconds = r2(seconds);
      api = apiFor(collector, pki.certs);
      store = collector.log.store();
      const [title, make] = aggregates[0]!;
      const agg = await time(() => api.aggregates(make()));
      figures.afterRestartFirstAggregateSeconds = r2(agg.seconds);
      console.log(`${name}: first aggregate after a restart (${title}): ${agg.seconds.toFixed(2)} s`);
      const warm = await time(() =>
        api.events({ type: 'authz.decision', decision: 'deny', order: 'desc', limit: 100 }),
      );
      figures.afterRestartFirstPageSeconds = r2(warm.seconds);
      console.log(`${name}: first page after a restart: ${warm.seconds.toFixed(2)} s`);
    }
    Object.assign(figures, await measure(name, api, store, 'collector'));
    if (name === 'file') {
      // What the index of the collector's store did since its start: 0 records parsed means every
      // segment's index was read back from its file or kept by the writer.
      figures.indexAfterRestart = (store as FileStore).indexStats();
      console.log(`${name}: query index since the restart: ${JSON.stringify(figures.indexAfterRestart)}`);
    }
    const replay = await replayThrough(collector, pki.certs, policyFile);
    figures.replayThroughCollectorSeconds = r2(replay);
    figures.replayTarget = replay < 30 ? 'met' : 'missed';
    console.log(
      `${name}: policy replay of the whole log through the collector (CLI, pages of 10,000): ${replay.toFixed(1)} s`,
    );
    await api.close();
    await collector.close();
    results[name] = figures;
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await client.end();
}
console.log(`BENCH_QUERY ${JSON.stringify({ ...machineFacts(loadBefore, loadavg()), ...results })}`);
