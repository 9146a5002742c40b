import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { Registry, Counter } from 'prom-client';
import { request } from 'undici';
import { connectionBudgetsSchema, opsListenerSchema, startOpsListener } from '../../core/index.ts';

const budgets = connectionBudgetsSchema.parse({});

async function get(url: string, method: 'GET' | 'HEAD' | 'POST' = 'GET') {
  const res = await request(url, { method });
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
}

test('the ops listener says 503 "starting", then the checks, then 200; /metrics follows the registry', async () => {
  const ops = await startOpsListener({ host: '127.0.0.1', port: 0 }, budgets);
  try {
    assert.match(ops.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(ops.port, Number(new URL(ops.url).port));
    assert.deepEqual(await get(`${ops.url}/healthz`).then((r) => [r.status, r.body]), [
      200,
      '{"status":"ok"}',
    ]);
    const starting = await get(`${ops.url}/readyz`);
    assert.deepEqual(
      [starting.status, JSON.parse(starting.body)],
      [503, { status: 'not ready', checks: { startup: 'starting' } }],
    );
    assert.equal(starting.headers['cache-control'], 'no-store');
    assert.equal((await get(`${ops.url}/metrics`)).status, 503);

    let keys: string | undefined = 'the keystore is not open yet';
    ops.state.checks = { certificate: () => undefined, keys: () => keys };
    const loading = await get(`${ops.url}/readyz`);
    assert.deepEqual(
      [loading.status, JSON.parse(loading.body).checks],
      [503, { certificate: 'ok', keys: 'the keystore is not open yet' }],
    );
    keys = undefined;
    assert.equal((await get(`${ops.url}/readyz`)).status, 200);

    const registry = new Registry();
    const counter = new Counter({ name: 'ops_test_scrapes_total', help: 'scrapes', registers: [registry] });
    ops.state.metrics = { registry, beforeScrape: () => counter.inc() };
    const scraped = await get(`${ops.url}/metrics`);
    assert.equal(scraped.status, 200);
    assert.match(scraped.body, /^ops_test_scrapes_total 1$/m);

    assert.deepEqual(await get(`${ops.url}/metrics`, 'POST').then((r) => [r.status, r.headers.allow]), [
      405,
      'GET',
    ]);
    assert.equal((await get(`${ops.url}/readyz`, 'POST')).status, 405);
    const other = await get(`${ops.url}/token`);
    assert.deepEqual([other.status, other.body], [404, '{"error":"not_found"}']);
  } finally {
    await ops.close();
  }
  // Closed: nothing listens there any more (close is idempotent).
  await ops.close();
  await assert.rejects(request(`${ops.url}/healthz`), { code: 'ECONNREFUSED' });
});

test('a taken port is refused with EADDRINUSE; the config section defaults to loopback', async () => {
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
  try {
    const { port } = taken.address() as AddressInfo;
    await assert.rejects(startOpsListener({ host: '127.0.0.1', port }, budgets), { code: 'EADDRINUSE' });
  } finally {
    await new Promise((r) => taken.close(r));
  }
  assert.deepEqual(opsListenerSchema(15093).parse({}), { listen: { host: '127.0.0.1', port: 15093 } });
  assert.throws(() => opsListenerSchema(15093).parse({ listen: { port: 70000 } }));
  assert.throws(() => opsListenerSchema(15093).parse({ port: 1 }));
});
