// /healthz and /readyz of the sidecar (issue 19): the ops listener is up before anything else, so a
// readiness probe sees 503 while the sidecar has no signing keys, and 200 once the STS comes up
// and every check passes; the body names each check.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { request } from 'undici';
import { MemoryAuditSink, createLogger } from '../../core/index.ts';
import { parseSidecarConfig, startSidecar } from '../../sidecar/index.ts';
import { parseStsConfig, startSts } from '../../sts/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { ISSUER, ORDERS, STS_ID } from './mesh.ts';

const quiet = createLogger({ name: 'e2e', level: 'silent' });

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

async function get(
  url: string,
): Promise<{ status: number; body: { status: string; checks?: Record<string, string> } }> {
  const res = await request(url);
  return { status: res.statusCode, body: (await res.body.json()) as { status: string } };
}

test(
  'the sidecar is live at once, not ready without signing keys, and ready once the STS answers',
  { timeout: 30_000 },
  async () => {
    const pki = await makeTestPki();
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-health-'));
    const stsPort = await freePort();
    const policy = join(dir, 'orders.yaml');
    writeFileSync(policy, readFileSync('policies/orders.yaml', 'utf8'));
    const sink = new MemoryAuditSink();
    const sidecar = await startSidecar(
      parseSidecarConfig(
        {
          service: ORDERS,
          trustDomain: 'example.org',
          tls: pki.tlsConfig('orders'),
          // Nothing listens there yet: the first JWKS fetch fails, and retries every second.
          sts: {
            url: `https://127.0.0.1:${stsPort}`,
            spiffeId: STS_ID,
            issuer: ISSUER,
            timeout: '300ms',
            jwksRefresh: '1s',
          },
          inbound: { listen: { host: '127.0.0.1', port: 0 }, app: 'http://127.0.0.1:9', policy },
          metrics: { listen: { host: '127.0.0.1', port: 0 } },
        },
        'health orders',
      ),
      { sink, logger: quiet, defaultMetrics: false },
    );
    let sts: Awaited<ReturnType<typeof startSts>> | undefined;
    try {
      const ops = sidecar.metricsUrl!.replace(/\/metrics$/, '');
      assert.deepEqual(await get(`${ops}/healthz`), { status: 200, body: { status: 'ok' } });
      const before = await get(`${ops}/readyz`);
      assert.equal(before.status, 503);
      assert.deepEqual(before.body, {
        status: 'not ready',
        checks: { certificate: 'ok', jwks: 'no signing keys from the STS yet', policy: 'ok', audit: 'ok' },
      });

      sts = await startSts(
        parseStsConfig(
          {
            listen: { host: '127.0.0.1', port: stsPort },
            tls: pki.tlsConfig('sts'),
            identities: pki.identitiesDir,
            issuer: ISSUER,
            keystore: { type: 'file', dir: join(dir, 'keys') },
            audit: { sink: 'memory' },
          },
          'health sts',
        ),
        { masterKey: randomBytes(32).toString('base64'), audit: new MemoryAuditSink(), logger: quiet },
      );
      // The STS's own /readyz has the same shape (no client certificate needed).
      const stsReady = await request(`${sts.url}/readyz`, {
        dispatcher: new (await import('undici')).Agent({
          connect: { ca: pki.rootPem, checkServerIdentity: () => undefined },
        }),
      });
      assert.equal(stsReady.statusCode, 200);
      assert.deepEqual(((await stsReady.body.json()) as { checks: object }).checks, {
        certificate: 'ok',
        keys: 'ok',
        audit: 'ok',
      });

      const deadline = Date.now() + 10_000;
      let after = await get(`${ops}/readyz`);
      while (after.status !== 200 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        after = await get(`${ops}/readyz`);
      }
      assert.deepEqual(after, {
        status: 200,
        body: { status: 'ready', checks: { certificate: 'ok', jwks: 'ok', policy: 'ok', audit: 'ok' } },
      });
      assert.equal((await request(sidecar.metricsUrl!)).statusCode, 200, '/metrics is served beside');
    } finally {
      await sidecar.close();
      await sts?.close();
      pki.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
