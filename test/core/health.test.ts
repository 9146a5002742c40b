import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { request } from 'undici';
import { readinessReport, serveHealth } from '../../core/index.ts';
import type { ReadinessCheck } from '../../core/index.ts';

test('readiness is 200 only when every check passes, and names each check', () => {
  const ok = readinessReport({ certificate: () => undefined, keys: () => undefined });
  assert.deepEqual(
    [ok.ready, ok.status, JSON.parse(ok.body)],
    [true, 200, { status: 'ready', checks: { certificate: 'ok', keys: 'ok' } }],
  );
  const bad = readinessReport({ certificate: () => undefined, keys: () => 'no signing keys yet' });
  assert.deepEqual(
    [bad.ready, bad.status, JSON.parse(bad.body)],
    [false, 503, { status: 'not ready', checks: { certificate: 'ok', keys: 'no signing keys yet' } }],
  );
});

test('a part still starting is not ready; a check that throws fails with its first line', () => {
  assert.deepEqual(JSON.parse(readinessReport(undefined).body), {
    status: 'not ready',
    checks: { startup: 'starting' },
  });
  const r = readinessReport({
    audit: () => {
      throw new Error('spool unwritable\nat stack line');
    },
  });
  assert.equal(r.status, 503);
  assert.deepEqual(JSON.parse(r.body).checks, { audit: 'spool unwritable' });
  // Not only Errors: a thrown string or undefined fails its check too, and the report is still built.
  const odd = readinessReport({
    keys: () => {
      throw 'keystore locked';
    },
    store: () => {
      throw undefined;
    },
  });
  assert.deepEqual(JSON.parse(odd.body), {
    status: 'not ready',
    checks: { keys: 'keystore locked', store: 'the check failed' },
  });
});

test('serveHealth answers /healthz and /readyz, leaves other paths to the caller, and refuses other methods', async () => {
  let checks: Record<string, ReadinessCheck> | undefined;
  const server = createServer((req, res) => {
    if (!serveHealth(req, res, () => checks)) res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const get = async (path: string, method: 'GET' | 'HEAD' | 'POST' = 'GET') => {
    const res = await request(`${base}${path}`, { method });
    return { status: res.statusCode, body: await res.body.text(), cache: res.headers['cache-control'] };
  };
  try {
    assert.deepEqual(await get('/healthz'), { status: 200, body: '{"status":"ok"}', cache: 'no-store' });
    assert.equal((await get('/readyz')).status, 503, 'starting');
    checks = { certificate: () => undefined };
    assert.deepEqual(await get('/readyz'), {
      status: 200,
      body: '{"status":"ready","checks":{"certificate":"ok"}}',
      cache: 'no-store',
    });
    assert.deepEqual((await get('/readyz', 'HEAD')).body, '');
    assert.equal((await get('/readyz', 'POST')).status, 405);
    assert.equal((await get('/readyz?x=1')).status, 404, 'exact paths only');
    assert.equal((await get('/metrics')).status, 404);
  } finally {
    server.close();
  }
});
