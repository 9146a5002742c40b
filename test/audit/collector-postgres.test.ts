import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { Agent } from 'undici';
import type { AuditRecord, RunningCollector } from '../../audit/index.ts';
import {
  loadCheckpointKey,
  hashRecord,
  openPostgresStore,
  recordLeafHash,
  verifyCheckpoint,
  verifyInclusion,
  verifyStore,
} from '../../audit/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { call, startTestCollector, workloadAgent } from './collector-harness.ts';
import { PG_URL, decision, pgSchema, tempDir } from './helpers.ts';

let pki: TestPki;
let tmp: ReturnType<typeof tempDir>;
let pgs: Awaited<ReturnType<typeof pgSchema>>;
let a: RunningCollector;
let b: RunningCollector;
let web: Agent;
let reader: Agent;

before(async () => {
  pki = await makeTestPki();
  tmp = tempDir();
  pgs = await pgSchema('collectors');
  const shared = {
    store: PG_URL,
    table: `${pgs.schema}.log`,
    checkpoint: { everyRecords: 100_000, interval: '200ms' },
  };
  // Each collector seals with its own key and trusts the other's.
  const keyA = loadCheckpointKey(join(tmp.dir, 'a', 'data'), 'example.org/audit').verifierKey;
  const keyB = loadCheckpointKey(join(tmp.dir, 'b', 'data'), 'example.org/audit').verifierKey;
  a = await startTestCollector(pki, join(tmp.dir, 'a'), { ...shared, trustedKeys: [keyB] });
  b = await startTestCollector(pki, join(tmp.dir, 'b'), { ...shared, trustedKeys: [keyA] });
  web = workloadAgent(pki, pki.leaf('web'));
  reader = workloadAgent(pki, pki.leaf('security-console'));
});

after(async () => {
  await web.close();
  await reader.close();
  await a.close();
  await b.close();
  await pgs.drop();
  tmp.cleanup();
  pki.cleanup();
});

test('collector on postgres: two collectors sharing one table build one chain, and either proves records the other appended', async () => {
  await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      call(web, `${(i % 2 ? a : b).url}/v1/events`, {
        method: 'POST',
        body: { events: [decision(i), decision(i + 100)] },
      }),
    ),
  );
  const store = await openPostgresStore({ connectionString: PG_URL, table: `${pgs.schema}.log` });
  const verdict = await verifyStore(store);
  assert.ok(verdict.ok, JSON.stringify(verdict));
  assert.equal(verdict.size, 40);
  await store.close();

  const cpA = await a.log.checkpoint();
  const cpB = await b.log.checkpoint();
  assert.equal(cpA.body.size, 40);
  assert.deepEqual(Buffer.from(cpA.body.root), Buffer.from(cpB.body.root));
  assert.equal(cpA.body.chainHead, cpB.body.chainHead);

  // A record B appended, proved by A against A's signed checkpoint.
  const q = await call(reader, `${b.url}/v1/events?limit=1&fromSeq=17`);
  const chosen = (q.body as { records: AuditRecord[] }).records[0]!;
  const res = await call(reader, `${a.url}/v1/proofs/inclusion?seq=${chosen.seq}&size=40`);
  assert.equal(res.status, 200, res.text);
  const checkpoint = verifyCheckpoint(cpA.note, a.verifierKey);
  verifyInclusion({
    leafHash: recordLeafHash(hashRecord(chosen)),
    index: chosen.seq,
    size: 40,
    proof: (res.body as { proof: string[] }).proof.map((p) => Buffer.from(p, 'base64')),
    root: checkpoint.root,
  });
});

test('collector: a checkpoint is signed on the interval once records were appended', async () => {
  const before = a.log.latest()!.body.size;
  const res = await call(web, `${a.url}/v1/events`, { method: 'POST', body: { events: [decision(1)] } });
  assert.equal(res.status, 200);
  const end = Date.now() + 5000;
  while (a.log.latest()!.body.size === before && Date.now() < end)
    await new Promise((r) => setTimeout(r, 50));
  assert.ok(a.log.latest()!.body.size > before);
  const note = (await call(web, `${a.url}/v1/checkpoints/latest`)).text;
  assert.equal(verifyCheckpoint(note, a.verifierKey).size, a.log.latest()!.body.size);
});
