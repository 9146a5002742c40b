// Revocations taken through the admin API outlive a restart (file store) and reach every replica
// sharing one PostgreSQL within the state poll interval, and still hold after both restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair, x509 } from '../../../ca/index.ts';
import { makeTestPki } from '../../helpers/pki.ts';
import type { MintedCert, TestPki } from '../../helpers/pki.ts';
import { ORDERS, WEB, call, mtlsAgent, quietLogger, requestToken, startTestSts } from '../helpers.ts';
import { MemoryAuditSink } from '../../../core/index.ts';
import { parseSidecarConfig, startSidecar } from '../../../sidecar/index.ts';
import type { RunningSidecar } from '../../../sidecar/index.ts';
import { startEchoApp } from '../../e2e/mesh.ts';
import type { TestSts } from '../helpers.ts';
import { PG_URL, pgSchema } from '../../audit/helpers.ts';

const form = { grant_type: 'client_credentials', audience: ORDERS };

/** A fresh P-256 key's CSR, base64 DER. */
async function csrBase64(): Promise<string> {
  const keys = await generateKeyPair('ecdsa-p256');
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=renew',
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
  });
  return Buffer.from(csr.rawData).toString('base64');
}

async function revokeThrough(sts: TestSts, pki: TestPki, body: object) {
  const admin = pki.leaf('admin-console');
  const agent = mtlsAgent({ cert: admin.certPem, key: admin.keyPem, ca: pki.rootPem });
  try {
    return await call(agent, `${sts.url}/v1/admin/revoke`, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
    });
  } finally {
    await agent.close();
  }
}

async function tokenStatus(sts: TestSts, pki: TestPki, cert: MintedCert): Promise<number> {
  const agent = mtlsAgent({ cert: cert.chainPem, key: cert.keyPem, ca: pki.rootPem });
  try {
    return (await requestToken(agent, sts.url, form)).status;
  } finally {
    await agent.close();
  }
}

test('the file store keeps a revoked serial and jti across an STS restart', { timeout: 30_000 }, async () => {
  const pki = await makeTestPki();
  const keystoreDir = mkdtempSync(join(tmpdir(), 'sts-durable-'));
  let sts = await startTestSts(pki, {}, {}, keystoreDir);
  try {
    const minted = await pki.mint({ uris: [WEB] });
    assert.equal(await tokenStatus(sts, pki, minted), 200);
    assert.equal((await revokeThrough(sts, pki, { serial: minted.serial })).status, 200);
    assert.equal((await revokeThrough(sts, pki, { jti: 'jti-to-keep' })).status, 200);
    await sts.close();
    sts = await startTestSts(pki, {}, {}, keystoreDir);
    assert.equal(await tokenStatus(sts, pki, minted), 401);
    assert.equal(sts.events.at(-1)!.reason, 'ERR_CA_CERT_REVOKED');
    assert.ok(sts.denyList.isJtiRevoked('jti-to-keep'));
  } finally {
    await sts.close();
    rmSync(keystoreDir, { recursive: true, force: true });
    pki.cleanup();
  }
});

test(
  'two replicas on one PostgreSQL: a serial revoked on A is refused by B and by sidecars polling either within the poll interval, and by both replicas after a restart',
  { timeout: 30_000 },
  async () => {
    const pki = await makeTestPki();
    const { schema, drop } = await pgSchema('sts_durable');
    const extra = {
      state: { type: 'postgres', urlEnv: 'TEST_STATE_URL', schema },
      statePollInterval: '200ms',
      ca: { dir: pki.ca.dir },
    };
    const env = { TEST_STATE_URL: PG_URL };
    // Both start at once (racing on the schema); one failing must not leave the other running.
    const start = async (): Promise<[TestSts, TestSts]> => {
      const got = await Promise.allSettled([
        startTestSts(pki, extra, { env }),
        startTestSts(pki, extra, { env }),
      ]);
      const failed = got.find((g) => g.status === 'rejected');
      if (failed) {
        for (const g of got) if (g.status === 'fulfilled') await g.value.close();
        throw failed.reason;
      }
      return got.map((g) => (g as PromiseFulfilledResult<TestSts>).value) as [TestSts, TestSts];
    };
    let [a, b] = await start();
    const app = await startEchoApp('orders');
    const sidecars: { sidecar: RunningSidecar; events: MemoryAuditSink['events'] }[] = [];
    try {
      const minted = await pki.mint({ uris: [WEB] });
      assert.equal(await tokenStatus(b, pki, minted), 200);
      // One sidecar (orders) polling each replica's revocation list.
      for (const replica of [a, b]) {
        const events = new MemoryAuditSink();
        const sidecar = await startSidecar(
          parseSidecarConfig(
            {
              service: ORDERS,
              trustDomain: 'example.org',
              tls: pki.tlsConfig('orders'),
              sts: {
                url: replica.url,
                spiffeId: 'spiffe://example.org/ns/portcullis/sa/sts',
                issuer: 'https://sts.portcullis.internal',
                revocationsPoll: '200ms',
              },
              inbound: {
                listen: { host: '127.0.0.1', port: 0 },
                app: app.url,
                policy: 'policies/orders.yaml',
              },
            },
            'durable test sidecar',
          ),
          { sink: events, logger: quietLogger(), defaultMetrics: false },
        );
        sidecars.push({ sidecar, events: events.events });
      }
      for (const { sidecar } of sidecars) {
        const agent = mtlsAgent({ cert: minted.chainPem, key: minted.keyPem, ca: pki.rootPem });
        const before = await call(agent, `https://localhost:${sidecar.inbound.port}/orders`);
        await agent.close();
        assert.equal(before.status, 401, 'before: past the TLS layer, refused for want of a token');
      }
      assert.equal((await revokeThrough(a, pki, { serial: minted.serial })).status, 200);
      const revokedAt = Date.now();
      let status = 200;
      while (status === 200 && Date.now() - revokedAt < 3_000) {
        await new Promise((r) => setTimeout(r, 50));
        status = await tokenStatus(b, pki, minted);
      }
      assert.equal(status, 401, 'replica B refuses the revoked certificate');
      assert.ok(Date.now() - revokedAt < 1_500, `seen by B after ${Date.now() - revokedAt} ms (poll 200 ms)`);
      // What sidecars poll on B lists it too.
      const web = pki.leaf('web');
      const agent = mtlsAgent({ cert: web.certPem, key: web.keyPem, ca: pki.rootPem });
      const list = await call(agent, `${b.url}/v1/revocations`);
      await agent.close();
      assert.ok(list.json.serials.some((s: { serial: string }) => s.serial === minted.serial));
      // Sidecars polling A and B refuse its connections within their poll interval (200 ms here).
      const refusedAt = await Promise.all(
        sidecars.map(async ({ sidecar, events }) => {
          const agent = mtlsAgent({ cert: minted.chainPem, key: minted.keyPem, ca: pki.rootPem });
          try {
            for (;;) {
              const res = await call(agent, `https://localhost:${sidecar.inbound.port}/orders`);
              const last = events.at(-1);
              if (res.status === 403 && last?.attributes?.peerError === 'ERR_CA_CERT_REVOKED')
                return Date.now();
              if (Date.now() - revokedAt > 5_000) return Infinity;
              await new Promise((r) => setTimeout(r, 50));
            }
          } finally {
            await agent.close();
          }
        }),
      );
      for (const at of refusedAt)
        assert.ok(at - revokedAt < 2_500, `a sidecar refused it after ${at - revokedAt} ms`);
      // Its renewals on B are refused too (simplereenroll checks the peer like every mTLS route).
      const renewer = mtlsAgent({ cert: minted.chainPem, key: minted.keyPem, ca: pki.rootPem });
      const renewal = await call(renewer, `${b.url}/.well-known/est/simplereenroll`, {
        method: 'POST',
        body: await csrBase64(),
        headers: { 'content-type': 'application/pkcs10' },
      });
      await renewer.close();
      assert.equal(renewal.status, 401);
      assert.equal(b.events.at(-1)!.reason, 'ERR_CA_CERT_REVOKED');
      await Promise.all([a.close(), b.close()]);
      [a, b] = await start();
      assert.equal(await tokenStatus(a, pki, minted), 401);
      assert.equal(await tokenStatus(b, pki, minted), 401);
    } finally {
      for (const { sidecar } of sidecars) await sidecar.close();
      await new Promise((r) => app.server.close(r));
      await Promise.all([a.close(), b.close()]);
      await drop();
      pki.cleanup();
    }
  },
);
