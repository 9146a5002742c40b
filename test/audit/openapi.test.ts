// The collector's OpenAPI 3.1 document (GET /openapi.json): kept in docs/api/collector.json, a
// schema for every response of every route, and real answers of every route, allowed and refused,
// valid against it.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { request } from 'undici';
import type { Agent, Dispatcher } from 'undici';
import type { RunningCollector } from '../../audit/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import {
  assertEveryResponseHasASchema,
  assertKeptDocument,
  assertResponsesMatch,
} from '../helpers/openapi.ts';
import type { ApiCase, OpenApiDocument } from '../helpers/openapi.ts';
import { call, startTestCollector, workloadAgent } from './collector-harness.ts';
import { formatSpoolReport } from '../../audit/index.ts';
import { decision } from './helpers.ts';

let pki: TestPki;
let collector: RunningCollector;
let dir: string;
const agents: Agent[] = [];
const agent = (name?: string) => {
  const a = workloadAgent(pki, name ? pki.leaf(name) : undefined);
  agents.push(a);
  return a;
};

before(async () => {
  pki = await makeTestPki();
  dir = mkdtempSync(join(tmpdir(), 'collector-openapi-'));
  // One live tail per caller, so the table can meet the limit (429) with one stream held.
  collector = await startTestCollector(pki, dir, { limits: { liveTails: 1 } });
});
after(async () => {
  for (const a of agents) await a.close();
  await collector?.close();
  pki?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

test('the collector serves its OpenAPI 3.1 document, as kept in docs/api/collector.json', async () => {
  const res = await call(agent(), `${collector.url}/openapi.json`);
  assert.equal(res.status, 200);
  const doc = res.body as OpenApiDocument;
  assertKeptDocument(doc, 'collector.json');
  assertEveryResponseHasASchema(doc);
});

test('every collector route answers, allowed and refused, as its OpenAPI document says', async () => {
  const doc = (await call(agent(), `${collector.url}/openapi.json`)).body as OpenApiDocument;
  const anonymous = agent();
  const web = agent('web');
  const reader = agent('security-console');
  const json = { 'content-type': 'application/json' };
  const batch = (n: number) => JSON.stringify({ events: [decision(n), decision(n + 1)] });
  const spoolReport = {
    pending: 0,
    pendingBytes: 0,
    oldestPendingMs: 0,
    missing: 0,
    lost: 0,
    state: 'idle',
    intervalMs: 30_000,
  };
  // Records to query and prove, and a checkpoint over them.
  assert.equal(
    (await call(web, `${collector.url}/v1/events`, { method: 'POST', rawBody: batch(1) })).status,
    200,
  );
  const ok = (name: string, dispatcher: Agent, status = 200, extra: Partial<ApiCase> = {}): ApiCase => ({
    name,
    dispatcher,
    status,
    ...extra,
  });
  // The stream the 429 case finds held (opened once the 200 case's stream is gone).
  let held: Dispatcher.ResponseData | undefined;
  const liveTails = async () =>
    ((await call(reader, `${collector.url}/v1/status`)).body as { collector: { liveTails: number } })
      .collector.liveTails;
  const holdAStream = async () => {
    const deadline = Date.now() + 5000;
    while ((await liveTails()) !== 0) {
      assert.ok(Date.now() < deadline, 'the first live tail was never released');
      await new Promise((r) => setTimeout(r, 20));
    }
    held = await request(`${collector.url}/v1/events/stream`, { dispatcher: agent('security-console') });
    assert.equal(held.statusCode, 200);
    // The stream is open, and counted, once bytes arrive. Not `for await … break`: that destroys
    // the body, and the stream would be released before the 429 case (it only seemed held while
    // the tail's first query was slow).
    await held.body[Symbol.asyncIterator]().next();
    assert.equal(await liveTails(), 1);
  };
  const table: Record<string, ApiCase[]> = {
    'GET /healthz': [ok('anyone', anonymous)],
    'GET /readyz': [ok('anyone', anonymous)],
    'GET /metrics': [ok('a workload', web), ok('no client certificate', anonymous, 401)],
    'POST /v1/events': [
      ok('a batch', web, 200, { headers: json, body: batch(3) }),
      ok('a batch with its spool report', web, 200, {
        headers: { ...json, 'portcullis-spool': formatSpoolReport({ ...spoolReport, state: 'idle' }) },
        body: batch(9),
      }),
      ok('idempotent', web, 200, { headers: { ...json, 'idempotency-key': 'openapi-1' }, body: batch(5) }),
      ok('replayed', web, 200, { headers: { ...json, 'idempotency-key': 'openapi-1' }, body: batch(5) }),
      ok('an empty batch', web, 400, { headers: json, body: '{"events":[]}' }),
      ok('no client certificate', anonymous, 401, { headers: json, body: batch(7) }),
    ],
    'GET /v1/events': [
      ok('a reader', reader, 200, { path: '/v1/events?type=authz.decision&limit=2' }),
      ok('newest first', reader, 200, { path: '/v1/events?order=desc&limit=1' }),
      ok('an unknown filter', reader, 400, { path: '/v1/events?colour=red' }),
      ok('a limit out of range', reader, 400, { path: '/v1/events?limit=0' }),
      ok('no client certificate', anonymous, 401),
      ok('not a reader', web, 403),
    ],
    'GET /v1/aggregates': [
      ok('a reader', reader, 200, { path: '/v1/aggregates?groupBy=type,decision&interval=1h' }),
      ok('an unknown parameter', reader, 400, { path: '/v1/aggregates?colour=red' }),
      ok('groupBy not a field', reader, 400, { path: '/v1/aggregates?groupBy=colour' }),
      ok('no client certificate', anonymous, 401),
      ok('not a reader', web, 403),
    ],
    'GET /v1/events/stream': [
      ok('a reader (first bytes)', reader, 200, {
        path: '/v1/events/stream?decision=allow',
        firstBytes: true,
      }),
      ok('an unknown parameter', reader, 400, { path: '/v1/events/stream?cursor=abc' }),
      ok('a bad Last-Event-ID', reader, 400, { headers: { 'last-event-id': 'yesterday' } }),
      ok('no client certificate', anonymous, 401),
      ok('not a reader', web, 403),
      ok('one stream already held', reader, 429, { before: holdAStream }),
    ],
    'GET /v1/status': [
      ok('a reader', reader),
      ok('an unknown parameter', reader, 400, { path: '/v1/status?verbose=1' }),
      ok('no client certificate', anonymous, 401),
      ok('not a reader', web, 403),
    ],
    'POST /v1/sources/report': [
      ok('a report', web, 200, { headers: json, body: JSON.stringify(spoolReport) }),
      ok('a bad state', web, 400, { headers: json, body: JSON.stringify({ ...spoolReport, state: 'x' }) }),
      ok('for another source', web, 403, {
        headers: json,
        body: JSON.stringify({ ...spoolReport, source: 'spiffe://example.org/ns/shop/sa/orders' }),
      }),
      ok('no client certificate', anonymous, 401, { headers: json, body: JSON.stringify(spoolReport) }),
    ],
    'GET /v1/sources': [
      ok('a reader', reader),
      ok('an unknown parameter', reader, 400, { path: '/v1/sources?stale=1' }),
      ok('no client certificate', anonymous, 401),
      ok('not a reader', web, 403),
    ],
    'GET /v1/checkpoints/latest': [ok('a workload', web), ok('no client certificate', anonymous, 401)],
    'GET /v1/checkpoints/key': [ok('a workload', web), ok('no client certificate', anonymous, 401)],
    'GET /v1/proofs/inclusion': [
      ok('a reader', reader, 200, { path: '/v1/proofs/inclusion?seq=0&size=2' }),
      ok('seq not below size', reader, 400, { path: '/v1/proofs/inclusion?seq=2&size=2' }),
      ok('not a reader', web, 403, { path: '/v1/proofs/inclusion?seq=0&size=2' }),
    ],
    'GET /v1/proofs/consistency': [
      ok('a workload', web, 200, { path: '/v1/proofs/consistency?from=1&to=2' }),
      ok('from above to', web, 400, { path: '/v1/proofs/consistency?from=2&to=1' }),
    ],
    'GET /openapi.json': [ok('anyone', anonymous)],
  };
  const checked = await assertResponsesMatch(doc, collector.url, table);
  held?.body.destroy();
  assert.ok(checked >= 40, `${checked} requests`);
});
