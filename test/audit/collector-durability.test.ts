// The collector's promises under retries, abuse and forgery: the Idempotency-Key contract shared
// with the client, 415/403/429 at the door, and records written without the collector's key
// never signed, never proven, and named by verify (file and PostgreSQL stores).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import type { Agent } from 'undici';
import type { AuditRecord, RunningCollector } from '../../audit/index.ts';
import {
  GENESIS_PREV,
  buildRecord,
  openFileStore,
  openPostgresStore,
  parseVerifierKey,
  verifyStore,
} from '../../audit/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { startTestCollector, workloadAgent } from './collector-harness.ts';
import { PG_URL, decision, pgSchema, sql, tempDir } from './helpers.ts';

let pki: TestPki;
let tmp: ReturnType<typeof tempDir>;
let collector: RunningCollector;
let web: Agent;
let orders: Agent;
let reader: Agent;
let n = 0;

before(async () => {
  pki = await makeTestPki();
  tmp = tempDir();
  collector = await startTestCollector(pki, join(tmp.dir, 'main'));
  web = workloadAgent(pki, pki.leaf('web'));
  orders = workloadAgent(pki, pki.leaf('orders'));
  reader = workloadAgent(pki, pki.leaf('security-console'));
});

after(async () => {
  await web.close();
  await orders.close();
  await reader.close();
  await collector.close();
  tmp.cleanup();
  pki.cleanup();
});

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Record<string, unknown>;
}

async function send(
  agent: Agent,
  url: string,
  options: { body?: string; key?: string; type?: string; method?: 'GET' | 'POST' } = {},
): Promise<Answer> {
  const res = await request(url, {
    method: options.method ?? 'POST',
    dispatcher: agent,
    headers: {
      ...(options.body !== undefined ? { 'content-type': options.type ?? 'application/json' } : {}),
      ...(options.key !== undefined ? { 'idempotency-key': options.key } : {}),
    },
    body: options.body,
  });
  const text = await res.body.text();
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { text };
  }
  return { status: res.statusCode, headers: res.headers, body };
}

const batch = (...ids: number[]) => JSON.stringify({ events: ids.map((i) => decision(i)) });
const events = (c: RunningCollector) => `${c.url}/v1/events`;

test('idempotency: a retried batch gets 200 with its original seqs and idempotent-replayed, and appends nothing', async () => {
  const key = `retry-${n++}`;
  const first = await send(web, events(collector), { body: batch(1, 2, 3), key });
  assert.equal(first.status, 200, JSON.stringify(first.body));
  assert.equal(first.headers['idempotent-replayed'], undefined);
  const size = collector.log.size;
  const again = await send(web, events(collector), { body: batch(1, 2, 3), key });
  assert.equal(again.status, 200);
  assert.equal(again.headers['idempotent-replayed'], 'true');
  assert.deepEqual(again.body, first.body);
  assert.equal(collector.log.size, size);
  // Keys are scoped per source: the same key from another workload is its own batch.
  const other = await send(orders, events(collector), { body: batch(1, 2, 3), key });
  assert.equal(other.status, 200);
  assert.equal(other.headers['idempotent-replayed'], undefined);
  assert.equal(other.body.firstSeq, size);
  // No key: every post appends.
  const plain = await send(web, events(collector), { body: batch(1, 2, 3) });
  assert.equal(plain.body.firstSeq, size + 3);
});

test('idempotency: the same key with another body is 422 ERR_AUDIT_IDEMPOTENCY_MISMATCH and appends nothing', async () => {
  const key = `mismatch-${n++}`;
  assert.equal((await send(web, events(collector), { body: batch(1), key })).status, 200);
  const size = collector.log.size;
  const res = await send(web, events(collector), { body: batch(2), key });
  assert.equal(res.status, 422);
  assert.equal(res.body.error, 'ERR_AUDIT_IDEMPOTENCY_MISMATCH');
  assert.equal(collector.log.size, size);
});

const badKeys: [string, string][] = [
  ['an empty key', ''],
  ['a key of 129 characters', 'k'.repeat(129)],
  ['a key with a space', 'a b'],
  ['a key with a slash', 'a/b'],
  ['a key with a non-ASCII letter', 'clé'],
];
for (const [label, key] of badKeys)
  test(`idempotency: ${label} is refused with 400 ERR_AUDIT_BAD_REQUEST and appends nothing`, async () => {
    const size = collector.log.size;
    const res = await send(web, events(collector), { body: batch(1), key });
    assert.equal(res.status, 400, JSON.stringify(res.body));
    assert.equal(res.body.error, 'ERR_AUDIT_BAD_REQUEST');
    assert.equal(collector.log.size, size);
  });

test('idempotency: keys of 128 characters of the allowed alphabet are accepted', async () => {
  const key = `${'aZ09._:-'.repeat(16)}`;
  assert.equal(key.length, 128);
  assert.equal((await send(web, events(collector), { body: batch(1), key })).status, 200);
});

test('idempotency: concurrent copies of one keyed batch append it once; the others get 409 with Retry-After: 1 or the replay', async () => {
  const key = `race-${n++}`;
  const size = collector.log.size;
  const answers = await Promise.all(
    Array.from({ length: 12 }, () => send(web, events(collector), { body: batch(7, 8), key })),
  );
  const fresh = answers.filter((a) => a.status === 200 && a.headers['idempotent-replayed'] === undefined);
  assert.equal(fresh.length, 1);
  for (const a of answers) {
    if (a.status === 409) {
      assert.equal(a.headers['retry-after'], '1');
      assert.equal(a.body.error, 'ERR_AUDIT_IDEMPOTENCY_IN_FLIGHT');
    } else {
      assert.equal(a.status, 200);
      assert.deepEqual(a.body, fresh[0]!.body);
    }
  }
  assert.equal(collector.log.size, size + 2);
});

test('idempotency: a batch stored before a restart is replayed with its original seqs after it', async () => {
  const dir = join(tmp.dir, `restart-${n++}`);
  let c = await startTestCollector(pki, dir);
  const first = await send(web, events(c), { body: batch(1, 2), key: 'before-restart' });
  assert.equal(first.status, 200);
  await c.close();
  c = await startTestCollector(pki, dir);
  try {
    const again = await send(web, events(c), { body: batch(1, 2), key: 'before-restart' });
    assert.equal(again.status, 200);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.deepEqual(again.body, first.body);
    assert.equal(c.log.size, 2);
  } finally {
    await c.close();
  }
});

const mediaTypes: [string, string][] = [
  ['text/plain', 'text/plain'],
  ['a form', 'application/x-www-form-urlencoded'],
  ['XML', 'application/xml'],
];
for (const [label, type] of mediaTypes)
  test(`POST /v1/events refuses ${label} with 415 and appends nothing`, async () => {
    const size = collector.log.size;
    const res = await send(web, events(collector), { body: batch(1), type });
    assert.equal(res.status, 415, JSON.stringify(res.body));
    assert.equal(res.body.error, 'ERR_AUDIT_BAD_REQUEST');
    assert.equal(collector.log.size, size);
  });

for (const type of ['admin.audit.read', 'admin.audit.export'])
  test(`POST /v1/events refuses events of the collector's own type ${type} with 403 ERR_AUDIT_FORBIDDEN`, async () => {
    const size = collector.log.size;
    const body = JSON.stringify({ events: [decision(1), { ...decision(2), type }] });
    const res = await send(web, events(collector), { body });
    assert.equal(res.status, 403, JSON.stringify(res.body));
    assert.equal(res.body.error, 'ERR_AUDIT_FORBIDDEN');
    assert.match(String(res.body.message), /events\[1\]/);
    assert.equal(collector.log.size, size);
  });

test('a source past its byte budget gets 429 ERR_AUDIT_RATE_LIMITED with Retry-After; another source does not', async () => {
  const dir = join(tmp.dir, `budget-${n++}`);
  const body = batch(...Array.from({ length: 6 }, (_, i) => i));
  // Room for one such body per interval, not two.
  const sourceBytes = Math.max(1024, Math.ceil(Buffer.byteLength(body) * 1.5));
  const c = await startTestCollector(pki, dir, { limits: { sourceBytes, sourceInterval: '30s' } });
  try {
    assert.equal((await send(web, events(c), { body })).status, 200);
    const refused = await send(web, events(c), { body, key: 'over-budget' });
    assert.equal(refused.status, 429);
    assert.equal(refused.body.error, 'ERR_AUDIT_RATE_LIMITED');
    const retryAfter = Number(refused.headers['retry-after']);
    assert.ok(retryAfter >= 1 && retryAfter <= 30, String(retryAfter));
    assert.equal((await send(orders, events(c), { body })).status, 200);
    assert.equal(c.log.size, 12);
  } finally {
    await c.close();
  }
});

test('a second collector on the same file store refuses to start, naming the holder', async () => {
  const dir = join(tmp.dir, `two-${n++}`);
  const first = await startTestCollector(pki, dir);
  try {
    await assert.rejects(
      startTestCollector(pki, dir, { dataDir: join(dir, 'data-2') }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_AUDIT_STORE_LOCKED');
        assert.match(err.message, /held by pid \d+ on /);
        return true;
      },
    );
  } finally {
    await first.close();
  }
});

/** A correctly chained record after the last one stored, made by someone without the key. */
function forgedAfter(lines: readonly string[]): string {
  const records = lines.filter((l) => l.startsWith('{"event":'));
  const last = records.at(-1);
  const prev = last ? (JSON.parse(last) as AuditRecord).hash : GENESIS_PREV;
  return buildRecord(
    records.length,
    '2026-05-05T00:00:00.000Z',
    decision(999, { subject: 'spiffe://example.org/forger' }),
    prev,
  ).line;
}

const segmentLines = (logDir: string) =>
  readdirSync(logDir)
    .filter((f) => f.endsWith('.jsonl'))
    .sort()
    .flatMap((f) => readFileSync(join(logDir, f), 'utf8').split('\n').slice(0, -1));

function lastSegment(logDir: string): string {
  return join(
    logDir,
    readdirSync(logDir)
      .filter((f) => f.endsWith('.jsonl'))
      .sort()
      .at(-1)!,
  );
}

async function prove(c: RunningCollector, seq: number, size: number): Promise<Answer> {
  return send(reader, `${c.url}/v1/proofs/inclusion?seq=${seq}&size=${size}`, { method: 'GET' });
}

async function coverage(spec: { dir?: string; table?: string }, vkey: string) {
  const store = spec.dir
    ? await openFileStore({ dir: spec.dir, readOnly: true })
    : await openPostgresStore({ connectionString: PG_URL, table: spec.table!, readOnly: true });
  try {
    return await verifyStore(store, { sealKeys: [parseVerifierKey(vkey)] });
  } finally {
    await store.close();
  }
}

for (const stop of ['a clean shutdown', 'a SIGKILL-like stop (no final checkpoint)'])
  test(`forgery, file store: a record appended while the collector is stopped (after ${stop}) is never signed, never proven, and named by verify`, async () => {
    const dir = join(tmp.dir, `forge-stopped-${n++}`);
    const logDir = join(dir, 'log');
    let c = await startTestCollector(pki, dir);
    assert.equal((await send(web, events(c), { body: batch(1, 2, 3) })).status, 200);
    await c.close();
    if (stop.startsWith('a SIGKILL')) {
      // The last checkpoint file says nothing about the appended batch: only seals cover it.
      const { rmSync } = await import('node:fs');
      rmSync(join(dir, 'data', 'checkpoint.latest'));
    }
    appendFileSync(lastSegment(logDir), `${forgedAfter(segmentLines(logDir))}\n`);
    const before = await coverage({ dir: logDir }, c.verifierKey);
    assert.ok(before.ok && before.size === 4 && before.covered === 3, JSON.stringify(before));

    c = await startTestCollector(pki, dir);
    try {
      assert.equal(c.log.size, 3);
      const cp = await c.log.checkpoint();
      assert.equal(cp.body.size, 3);
      const proof = await prove(c, 3, 4);
      assert.equal(proof.status, 400);
      assert.equal(proof.body.error, 'ERR_AUDIT_PROOF_RANGE');
      // The next record takes seq 3, and it is the workload's, not the forger's.
      const next = await send(web, events(c), { body: batch(4) });
      assert.equal(next.body.firstSeq, 3);
      const proven = await prove(c, 3, 4);
      assert.equal(proven.status, 200);
      assert.equal((proven.body.record as AuditRecord).event.subject, decision(4).subject);
      const metrics = await send(web, `${c.url}/metrics`, { method: 'GET' });
      assert.match(String(metrics.body.text), /portcullis_audit_uncovered_records_total 1/);
    } finally {
      await c.close();
    }
    const after = await coverage({ dir: logDir }, c.verifierKey);
    assert.ok(after.ok && after.size === 4 && after.covered === 4, JSON.stringify(after));
    assert.doesNotMatch(segmentLines(logDir).join('\n'), /forger/);
  });

test('forgery, file store: a record appended while the collector runs is cut before its next write, never signed or proven', async () => {
  const dir = join(tmp.dir, `forge-running-${n++}`);
  const logDir = join(dir, 'log');
  const c = await startTestCollector(pki, dir);
  try {
    assert.equal((await send(web, events(c), { body: batch(1, 2, 3) })).status, 200);
    appendFileSync(lastSegment(logDir), `${forgedAfter(segmentLines(logDir))}\n`);
    const named = await coverage({ dir: logDir }, c.verifierKey);
    assert.ok(named.ok && named.size === 4 && named.covered === 3, JSON.stringify(named));
    const next = await send(web, events(c), { body: batch(4, 5) });
    assert.deepEqual([next.body.firstSeq, next.body.lastSeq], [3, 4]);
    const cp = await c.log.checkpoint();
    assert.equal(cp.body.size, 5);
    const proof = await prove(c, 3, 5);
    assert.equal((proof.body.record as AuditRecord).event.subject, decision(4).subject);
    assert.doesNotMatch(segmentLines(logDir).join('\n'), /forger/);
  } finally {
    await c.close();
  }
  const after = await coverage({ dir: logDir }, c.verifierKey);
  assert.ok(after.ok && after.size === 5 && after.covered === 5, JSON.stringify(after));
  assert.ok(readdirSync(join(logDir, 'quarantine')).length >= 1);
});

test('forgery, postgres store: a row inserted while the collector runs is never adopted, signed or proven, named by verify, then moved aside', async () => {
  const pgs = await pgSchema('forge');
  const table = `${pgs.schema}.log`;
  const c = await startTestCollector(pki, join(tmp.dir, `forge-pg-${n++}`), { store: PG_URL, table });
  try {
    assert.equal((await send(web, events(c), { body: batch(1, 2, 3) })).status, 200);
    const { rows } = await sql(`SELECT line FROM ${table} ORDER BY seq`);
    const forged = forgedAfter(rows.map((r: { line: string }) => r.line));
    await sql(
      `INSERT INTO ${table} (seq, at, hash, type, line) VALUES (3, now(), $1, 'authz.decision', $2)`,
      [(JSON.parse(forged) as AuditRecord).hash, forged],
    );
    const named = await coverage({ table }, c.verifierKey);
    assert.ok(named.ok && named.size === 4 && named.covered === 3, JSON.stringify(named));
    const cp = await c.log.checkpoint();
    assert.equal(cp.body.size, 3);
    assert.equal((await prove(c, 3, 4)).status, 400);
    const next = await send(web, events(c), { body: batch(4) });
    assert.equal(next.body.firstSeq, 3);
    assert.equal((await c.log.checkpoint()).body.size, 4);
    const quarantined = await sql(`SELECT line FROM ${table}_quarantine`);
    assert.match(quarantined.rows[0].line, /forger/);
    const after = await coverage({ table }, c.verifierKey);
    assert.ok(after.ok && after.size === 4 && after.covered === 4, JSON.stringify(after));
  } finally {
    await c.close();
    await pgs.drop();
  }
});

test('a torn tail found at start is moved aside, logged and counted; the collector serves the records before it', async () => {
  const dir = join(tmp.dir, `torn-${n++}`);
  const logDir = join(dir, 'log');
  let c = await startTestCollector(pki, dir);
  assert.equal((await send(web, events(c), { body: batch(1, 2) })).status, 200);
  await c.close();
  appendFileSync(lastSegment(logDir), '{"event":{"action":"GET /ord');
  c = await startTestCollector(pki, dir);
  try {
    assert.equal(c.log.size, 2);
    const metrics = await send(web, `${c.url}/metrics`, { method: 'GET' });
    assert.match(String(metrics.body.text), /portcullis_audit_torn_tails_total 1/);
    assert.match(String(metrics.body.text), /portcullis_audit_uncovered_records_total 0/);
    assert.equal(readdirSync(join(logDir, 'quarantine')).length, 1);
    assert.equal((await send(web, events(c), { body: batch(3) })).body.firstSeq, 2);
  } finally {
    await c.close();
  }
});
