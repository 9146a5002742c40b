// The ops listener of the STS, the collector and the sidecar, in process (decision 0059): once started it answers
// the same checks as the mTLS /readyz plus `listener`, serves the part's metrics, and is closed with
// the part — also when a later start-up step fails. The 503 window while they load is seen by
// test/e2e/readiness.test.ts, which spawns the parts as the CLI starts them.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AddressInfo, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Agent, request } from 'undici';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { startTestSts } from '../sts/helpers.ts';
import { startTestCollector } from '../audit/collector-harness.ts';
import { createLogger } from '../../core/index.ts';
import { parseSidecarConfig, startSidecar } from '../../sidecar/index.ts';
import { ISSUER, ORDERS, STS_ID, WEB } from './mesh.ts';

let pki: TestPki;
let anonymous: Agent;
before(async () => {
  pki = await makeTestPki();
  anonymous = new Agent({ connect: { ca: pki.rootPem, servername: 'localhost' } });
});
after(async () => {
  await anonymous.close();
  pki.cleanup();
});

async function get(url: string) {
  const res = await request(url, { dispatcher: anonymous });
  return { status: res.statusCode, text: await res.body.text() };
}

/** Holds a port the OS handed out; `release()` frees it. */
async function holdPort(): Promise<{ port: number; release: () => Promise<void> }> {
  const s: Server = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return {
    port: (s.address() as AddressInfo).port,
    release: () => new Promise<void>((r) => s.close(() => r())),
  };
}

/** True when nothing listens on `port` any more (binding it succeeds). */
async function portFree(port: number): Promise<boolean> {
  const s = createServer();
  return new Promise((resolve) => {
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

test('the STS: ops /readyz has the mTLS checks plus listener, /metrics the key ages; closed with the STS', async () => {
  const sts = await startTestSts(pki, { metrics: { listen: { host: '127.0.0.1', port: 0 } } });
  let opsPort: number;
  try {
    assert.match(sts.opsUrl!, /^http:\/\/127\.0\.0\.1:\d+$/);
    opsPort = Number(new URL(sts.opsUrl!).port);
    const ops = await get(`${sts.opsUrl}/readyz`);
    const main = await get(`${sts.url}/readyz`);
    assert.equal(ops.status, 200, ops.text);
    assert.deepEqual(JSON.parse(ops.text), {
      status: 'ready',
      checks: { ...JSON.parse(main.text).checks, listener: 'ok' },
    });
    assert.deepEqual(Object.keys(JSON.parse(main.text).checks), ['certificate', 'keys', 'audit']);
    assert.deepEqual(await get(`${sts.opsUrl}/healthz`), { status: 200, text: '{"status":"ok"}' });
    const metrics = await get(`${sts.opsUrl}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(metrics.text, /^portcullis_sts_key_age_seconds\{state="current"\} \d/m);
    assert.match(metrics.text, /^# TYPE portcullis_sts_tokens_issued_total counter$/m);
    assert.equal((await get(`${sts.opsUrl}/oauth2/token`)).status, 404);
  } finally {
    await sts.close();
  }
  assert.ok(await portFree(opsPort), 'the ops listener is closed with the STS');
});

test('an STS that cannot listen closes the ops listener it opened', async () => {
  const taken = await holdPort();
  const ops = await holdPort();
  await ops.release();
  try {
    await assert.rejects(
      startTestSts(pki, {
        listen: { host: '127.0.0.1', port: taken.port },
        metrics: { listen: { host: '127.0.0.1', port: ops.port } },
      }),
      { code: 'EADDRINUSE' },
    );
    assert.ok(await portFree(ops.port), 'the ops listener is closed after the failed start');
  } finally {
    await taken.release();
  }
});

test('the collector: ops /readyz has the mTLS checks plus listener, /metrics the log; closed with it, also after a failed start', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-ops-'));
  try {
    const collector = await startTestCollector(pki, dir, {
      metrics: { listen: { host: '127.0.0.1', port: 0 } },
    });
    const opsPort = Number(new URL(collector.opsUrl!).port);
    try {
      const ops = await get(`${collector.opsUrl}/readyz`);
      const main = await get(`${collector.url}/readyz`);
      assert.equal(ops.status, 200, ops.text);
      assert.deepEqual(Object.keys(JSON.parse(main.text).checks), [
        'certificate',
        'store',
        'signingKey',
        'checkpoint',
      ]);
      assert.deepEqual(JSON.parse(ops.text).checks, { ...JSON.parse(main.text).checks, listener: 'ok' });
      const metrics = await get(`${collector.opsUrl}/metrics`);
      assert.equal(metrics.status, 200);
      assert.match(metrics.text, /^portcullis_audit_log_size 0$/m);
    } finally {
      await collector.close();
    }
    assert.ok(await portFree(opsPort), 'the ops listener is closed with the collector');

    // The main port is taken: the start fails after the store was opened, and the ops listener goes too.
    const taken = await holdPort();
    const ops = await holdPort();
    await ops.release();
    try {
      await assert.rejects(
        startTestCollector(pki, dir, {
          listen: { host: '127.0.0.1', port: taken.port },
          metrics: { listen: { host: '127.0.0.1', port: ops.port } },
        }),
        { code: 'EADDRINUSE' },
      );
      assert.ok(await portFree(ops.port), 'the ops listener is closed after the failed start');
    } finally {
      await taken.release();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a sidecar whose outbound port is taken closes its inbound and ops listeners before the start rejects', async () => {
  const taken = await holdPort();
  // Nothing listens on the STS's port: the start goes on without signing keys (readiness says so).
  const [inbound, ops, sts] = [await holdPort(), await holdPort(), await holdPort()];
  await Promise.all([inbound.release(), ops.release(), sts.release()]);
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-ops-'));
  try {
    const policy = join(dir, 'orders.yaml');
    writeFileSync(policy, readFileSync('policies/orders.yaml', 'utf8'));
    await assert.rejects(
      startSidecar(
        parseSidecarConfig(
          {
            service: ORDERS,
            trustDomain: 'example.org',
            tls: pki.tlsConfig('orders'),
            sts: {
              url: `https://127.0.0.1:${sts.port}`,
              spiffeId: STS_ID,
              issuer: ISSUER,
              timeout: '300ms',
            },
            inbound: {
              listen: { host: '127.0.0.1', port: inbound.port },
              app: 'http://127.0.0.1:9',
              policy,
              policyReloadInterval: '20ms',
            },
            outbound: {
              listen: { host: '127.0.0.1', port: taken.port },
              routes: [{ name: 'web', address: '127.0.0.1:9', spiffeId: WEB }],
            },
            metrics: { listen: { host: '127.0.0.1', port: ops.port } },
          },
          'taken outbound',
        ),
        { logger: createLogger({ name: 'e2e', level: 'info', destination }), defaultMetrics: false },
      ),
      { code: 'EADDRINUSE' },
    );
    assert.ok(await portFree(inbound.port), 'the inbound listener is closed after the failed start');
    assert.ok(await portFree(ops.port), 'the ops listener is closed after the failed start');
    // A policy watcher still running would see this and log that the new policy does not load.
    const logged = lines.length;
    writeFileSync(policy, 'rules: [\n');
    await sleep(200);
    assert.deepEqual(lines.slice(logged), []);
  } finally {
    await taken.release();
    rmSync(dir, { recursive: true, force: true });
  }
});
