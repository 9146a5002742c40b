import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Agent } from 'undici';
import type { AuditRecord, RunningCollector } from '../../audit/index.ts';
import {
  DATA_FILES,
  hashRecord,
  openFileStore,
  recordLeafHash,
  verifyCheckpoint,
  verifyConsistency,
  verifyInclusion,
  verifyStore,
} from '../../audit/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { rawExchange, rawJsonBody } from '../helpers/raw-http.ts';
import type { TestPki } from '../helpers/pki.ts';
import { call, startTestCollector, workloadAgent } from './collector-harness.ts';
import { decision, tempDir } from './helpers.ts';

const WEB = 'spiffe://example.org/ns/shop/sa/web';
const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';

let pki: TestPki;
let tmp: ReturnType<typeof tempDir>;
let collector: RunningCollector;
let web: Agent;
let reader: Agent;

before(async () => {
  pki = await makeTestPki();
  tmp = tempDir();
  // A checkpoint after every append, so that each test finds its records covered.
  collector = await startTestCollector(pki, tmp.dir, { checkpoint: { everyRecords: 1, interval: '1h' } });
  web = workloadAgent(pki, pki.leaf('web'));
  reader = workloadAgent(pki, pki.leaf('security-console'));
});

after(async () => {
  await web.close();
  await reader.close();
  await collector.close();
  tmp.cleanup();
  pki.cleanup();
});

const post = (agent: Agent, events: unknown) =>
  call(agent, `${collector.url}/v1/events`, { method: 'POST', body: { events } });

test('collector: a workload posts a batch and gets it acknowledged with its seqs once durable', async () => {
  const before = collector.log.size;
  const res = await post(web, [decision(1), decision(2)]);
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(res.body, { accepted: 2, firstSeq: before, lastSeq: before + 1 });
  // Durable means readable by a fresh opening of the files.
  const store = await openFileStore({ dir: join(tmp.dir, 'log'), readOnly: true });
  assert.equal((await verifyStore(store)).ok, true);
  await store.close();
});

test('collector: a workload cannot post events as another source; source is its own SPIFFE ID', async () => {
  const res = await post(web, [decision(3, { source: ORDERS })]);
  assert.equal(res.status, 200);
  const seq = (res.body as { firstSeq: number }).firstSeq;
  const q = await call(reader, `${collector.url}/v1/events?fromSeq=${seq}&limit=1`);
  const [record] = (q.body as { records: AuditRecord[] }).records;
  assert.equal(record!.event.source, WEB);
});

const badBatches: [string, unknown, RegExp][] = [
  [
    'an invalid event, naming its index',
    { events: [decision(1), { ...decision(2), decision: 'maybe' }] },
    /events\[1\]: decision/,
  ],
  ['an unknown field', { events: [{ ...decision(1), extra: 1 }] }, /events\[0\]/],
  ['an empty batch', { events: [] }, /non-empty/],
  ['a bare list', [decision(1)], /\{"events"/],
  ['an extra top-level key', { events: [decision(1)], more: 1 }, /\{"events"/],
];
for (const [label, body, message] of badBatches) {
  test(`collector: POST /v1/events refuses ${label} with 400 ERR_AUDIT_BAD_REQUEST and appends nothing`, async () => {
    const size = collector.log.size;
    const res = await call(web, `${collector.url}/v1/events`, { method: 'POST', body });
    assert.equal(res.status, 400);
    assert.equal((res.body as { error: string }).error, 'ERR_AUDIT_BAD_REQUEST');
    assert.match((res.body as { message: string }).message, message);
    assert.equal(collector.log.size, size);
  });
}

test('collector: an event holding a lone surrogate is refused with 400, not 500, and fails no batch appended with it', async () => {
  const size = collector.log.size;
  const orders = workloadAgent(pki, pki.leaf('orders'));
  try {
    // Both posts reach the store in the same turn: a bad event must not take the other batch down.
    const [bad, good] = await Promise.all([
      call(web, `${collector.url}/v1/events`, {
        method: 'POST',
        body: { events: [{ ...decision(1), reason: 'x\ud800y' }] },
      }),
      call(orders, `${collector.url}/v1/events`, { method: 'POST', body: { events: [decision(2)] } }),
    ]);
    assert.equal(bad.status, 400, bad.text);
    assert.equal((bad.body as { error: string }).error, 'ERR_AUDIT_BAD_REQUEST');
    assert.match((bad.body as { message: string }).message, /events\[0\]: reason/);
    assert.equal(good.status, 200, good.text);
    assert.equal(collector.log.size, size + 1);
  } finally {
    await orders.close();
  }
});

test('collector: a body over the limit is refused with 413, and bad JSON with 400, without internals', async () => {
  const big = await call(web, `${collector.url}/v1/events`, {
    method: 'POST',
    rawBody: `{"events":["${'x'.repeat(1_100_000)}"]}`,
  });
  assert.equal(big.status, 413);
  assert.equal((big.body as { error: string }).error, 'ERR_AUDIT_BAD_REQUEST');
  const bad = await call(web, `${collector.url}/v1/events`, { method: 'POST', rawBody: '{"events": [' });
  assert.equal(bad.status, 400);
  assert.doesNotMatch(bad.text, /at .*\.js|node_modules/);
});

test('collector: an unknown route is 404 ERR_AUDIT_NOT_FOUND in the API shape, without echoing the query', async () => {
  const res = await call(web, `${collector.url}/v1/records?limit=abc&secret=x`);
  assert.equal(res.status, 404, res.text);
  assert.deepEqual(res.body, { error: 'ERR_AUDIT_NOT_FOUND', message: 'no route GET /v1/records' });
});

test('collector: what the HTTP parser refuses gets 400 ERR_AUDIT_BAD_REQUEST, not the framework default', async () => {
  const leaf = pki.leaf('web');
  const answer = await rawExchange(
    {
      port: Number(new URL(collector.url).port),
      tls: { cert: leaf.certPem, key: leaf.keyPem, ca: pki.rootPem },
    },
    'POST /v1/events HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n',
  );
  assert.match(answer, /^HTTP\/1\.1 400 /, answer);
  assert.deepEqual(rawJsonBody(answer), {
    error: 'ERR_AUDIT_BAD_REQUEST',
    message: 'malformed HTTP request',
  });
});

test('collector: peers without a trusted certificate or outside the registry are refused', async () => {
  const unregistered = await pki.mint({ uris: ['spiffe://example.org/ns/shop/sa/stranger'] });
  const foreign = await pki.mint({ signer: 'foreign' });
  const cases: [string, Agent, number, string][] = [
    ['no certificate', workloadAgent(pki), 401, 'ERR_AUDIT_PEER_REFUSED'],
    [
      'a foreign CA',
      workloadAgent(pki, { certPem: foreign.chainPem, keyPem: foreign.keyPem }),
      401,
      'ERR_AUDIT_PEER_REFUSED',
    ],
    [
      'an unregistered ID',
      workloadAgent(pki, { certPem: unregistered.chainPem, keyPem: unregistered.keyPem }),
      403,
      'ERR_AUDIT_PEER_NOT_REGISTERED',
    ],
  ];
  for (const [label, agent, status, code] of cases) {
    const res = await post(agent, [decision(1)]);
    assert.equal(res.status, status, label);
    assert.equal((res.body as { error: string }).error, code, label);
    await agent.close();
  }
});

test('collector: a workload without audit-reader cannot query (403), and the refusal is itself in the log', async () => {
  const res = await call(web, `${collector.url}/v1/events`);
  assert.equal(res.status, 403);
  assert.equal((res.body as { error: string }).error, 'ERR_AUDIT_FORBIDDEN');
  const q = await call(
    reader,
    `${collector.url}/v1/events?type=admin.audit.read&decision=deny&subject=${encodeURIComponent(WEB)}`,
  );
  assert.equal(q.status, 200);
  const records = (q.body as { records: AuditRecord[] }).records;
  assert.equal(records.length, 1);
  assert.equal(records[0]!.event.status, 403);
  assert.equal(records[0]!.event.source, 'spiffe://example.org/ns/portcullis/sa/audit');
  const inclusion = await call(web, `${collector.url}/v1/proofs/inclusion?seq=0&size=1`);
  assert.equal(inclusion.status, 403);
});

test('collector: an audit-reader queries with filters and pages with nextSeq', async () => {
  for (let i = 0; i < 5; i++)
    await post(web, [decision(100 + i, { subject: 'spiffe://example.org/ns/x/sa/pager' })]);
  const url = (extra: string) =>
    `${collector.url}/v1/events?subject=${encodeURIComponent('spiffe://example.org/ns/x/sa/pager')}&limit=3${extra}`;
  const first = await call(reader, url(''));
  const page1 = first.body as { records: AuditRecord[]; nextSeq: number | null };
  assert.equal(page1.records.length, 3);
  assert.ok(page1.nextSeq !== null);
  const page2 = (await call(reader, url(`&fromSeq=${page1.nextSeq}`))).body as {
    records: AuditRecord[];
    nextSeq: number | null;
  };
  assert.equal(page2.records.length, 2);
  assert.equal(page2.nextSeq, null);
});

const badFilters = [
  'limit=0',
  'limit=abc',
  'since=yesterday',
  'decision=perhaps',
  'colour=red',
  'fromSeq=-1',
  'limit=100000',
];
for (const q of badFilters) {
  test(`collector: GET /v1/events?${q} is refused with 400 ERR_AUDIT_BAD_REQUEST`, async () => {
    const res = await call(reader, `${collector.url}/v1/events?${q}`);
    assert.equal(res.status, 400);
    assert.equal((res.body as { error: string }).error, 'ERR_AUDIT_BAD_REQUEST');
  });
}

test('collector: an inclusion proof for a chosen event verifies offline against a saved checkpoint and fails for a modified event', async () => {
  const posted = await post(web, [decision(7, { action: 'GET /orders/chosen' })]);
  const seq = (posted.body as { firstSeq: number }).firstSeq;
  // Checkpoints are signed just after the append that triggers them: poll briefly.
  let checkpoint = verifyCheckpoint(
    (await call(web, `${collector.url}/v1/checkpoints/latest`)).text,
    collector.verifierKey,
  );
  for (let i = 0; i < 50 && checkpoint.size <= seq; i++) {
    await new Promise((r) => setTimeout(r, 20));
    checkpoint = verifyCheckpoint(
      (await call(web, `${collector.url}/v1/checkpoints/latest`)).text,
      collector.verifierKey,
    );
  }
  assert.ok(checkpoint.size > seq);
  const res = await call(reader, `${collector.url}/v1/proofs/inclusion?seq=${seq}&size=${checkpoint.size}`);
  assert.equal(res.status, 200, res.text);
  const { record, proof } = res.body as { record: AuditRecord; proof: string[] };
  const check = (r: AuditRecord) =>
    verifyInclusion({
      leafHash: recordLeafHash(hashRecord(r)),
      index: r.seq,
      size: checkpoint.size,
      proof: proof.map((p) => Buffer.from(p, 'base64')),
      root: checkpoint.root,
    });
  check(record);
  assert.equal(record.event.action, 'GET /orders/chosen');
  assert.throws(() => check({ ...record, event: { ...record.event, decision: 'deny' } }), {
    code: 'ERR_AUDIT_PROOF_INVALID',
  });
});

test('collector: consistency proofs link an older checkpoint to a newer one', async () => {
  const old = verifyCheckpoint(
    (await call(web, `${collector.url}/v1/checkpoints/latest`)).text,
    collector.verifierKey,
  );
  await post(web, [decision(8), decision(9), decision(10)]);
  const { body: newer } = await collector.log.checkpoint();
  const res = await call(web, `${collector.url}/v1/proofs/consistency?from=${old.size}&to=${newer.size}`);
  assert.equal(res.status, 200);
  verifyConsistency({
    fromSize: old.size,
    toSize: newer.size,
    fromRoot: old.root,
    toRoot: newer.root,
    proof: (res.body as { proof: string[] }).proof.map((p) => Buffer.from(p, 'base64')),
  });
  const beyond = await call(web, `${collector.url}/v1/proofs/consistency?from=1&to=${newer.size + 10}`);
  assert.equal(beyond.status, 400);
  assert.equal((beyond.body as { error: string }).error, 'ERR_AUDIT_PROOF_RANGE');
});

test("collector: the checkpoint key is the collector's own Ed25519 key, 0600 in its data dir, served as a verifier key", async () => {
  const keyFile = join(tmp.dir, 'data', DATA_FILES.key);
  assert.equal(statSync(keyFile).mode & 0o777, 0o600);
  const served = (await call(web, `${collector.url}/v1/checkpoints/key`)).text.trim();
  assert.equal(served, collector.verifierKey);
  assert.equal(readFileSync(join(tmp.dir, 'data', DATA_FILES.verifierKey), 'utf8').trim(), served);
});

test('collector: a restart keeps the key and the log; a store rewritten behind its back is refused at start', async () => {
  const dir = tempDir();
  try {
    let c = await startTestCollector(pki, dir.dir);
    const vkey = c.verifierKey;
    const agent = workloadAgent(pki, pki.leaf('orders'));
    const res = await call(agent, `${c.url}/v1/events`, {
      method: 'POST',
      body: { events: [decision(1), decision(2)] },
    });
    assert.equal(res.status, 200);
    const second = await call(agent, `${c.url}/v1/events`, {
      method: 'POST',
      body: { events: [decision(3)] },
    });
    assert.equal(second.status, 200);
    await c.close();
    c = await startTestCollector(pki, dir.dir);
    assert.equal(c.verifierKey, vkey);
    assert.equal(c.log.size, 3);
    await c.close();
    // Rewrite the log with a fresh, self-consistent chain of one record (no seal of the key): the
    // collector refuses to start rather than move the whole log aside.
    const logDir = join(dir.dir, 'log');
    const seg = join(logDir, '0000000000000000.jsonl');
    const original = readFileSync(seg, 'utf8');
    writeFileSync(seg, `${original.split('\n')[0]}\n`);
    await assert.rejects(startTestCollector(pki, dir.dir), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_AUDIT_STORE_CORRUPT');
      assert.match(err.message, /none of its 1 newest records is covered by a seal of a trusted key/);
      return true;
    });
    // Cut after its first batch, seal kept: sealed, but it contradicts the last checkpoint (size 3).
    writeFileSync(seg, original.slice(0, original.indexOf('\n', original.indexOf('{"commit":')) + 1));
    await assert.rejects(startTestCollector(pki, dir.dir), { code: 'ERR_AUDIT_CHECKPOINT_INCONSISTENT' });
    await agent.close();
  } finally {
    dir.cleanup();
  }
});
