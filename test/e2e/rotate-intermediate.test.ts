// Intermediate rotation under steady traffic (docs/operations.md runbook): a new intermediate is
// signed by the same root, copied into the STS's CA directory while two sidecars call each other,
// the STS starts signing with it, the sidecars renew onto it, and no request fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNextIntermediate, splitPemBundle, writeFileAtomic } from '../../ca/index.ts';
import { MemoryAuditSink, createLogger } from '../../core/index.ts';
import { parseSidecarConfig, startSidecar } from '../../sidecar/index.ts';
import type { RunningSidecar } from '../../sidecar/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { call, mtlsAgent, startTestSts } from '../sts/helpers.ts';
import { ISSUER, ORDERS, STS_ID, WEB, startEchoApp, viaProxy } from './mesh.ts';

const DURATION_MS = 20_000;
const ROTATE_AT_MS = 5_000;

test(
  'the intermediate rotates under steady traffic with zero failed requests',
  { timeout: 60_000 },
  async () => {
    const yaml = readFileSync('identities/example.yaml', 'utf8')
      .replace(/(name: web\n(?:.*\n)*?\s+tokenTtl: 5m)/, '$1\n    svidTtl: 1m')
      .replace(/(name: orders\n(?:.*\n)*?\s+tokenTtl: 5m)/, '$1\n    svidTtl: 1m');
    const pki = await makeTestPki({ identitiesYaml: yaml });
    const dir = mkdtempSync(join(tmpdir(), 'rotate-'));
    const caDir = join(dir, 'ca');
    cpSync(pki.ca.dir, caDir, { recursive: true });
    const quiet = createLogger({ name: 'rotate', level: 'silent' });
    // Every part reads one trust bundle file, re-read every 300 ms.
    const bundle = join(dir, 'bundle.pem');
    writeFileSync(bundle, pki.rootPem);
    const sts = await startTestSts(pki, {
      tls: {
        cert: pki.leaf('sts').certFile,
        key: pki.leaf('sts').keyFile,
        trustBundle: bundle,
        reloadInterval: '300ms',
      },
      ca: { dir: caDir, perSecond: 5, burst: 10 },
      statePollInterval: '200ms',
    });
    const adminLeaf = pki.leaf('admin-console');
    const admin = mtlsAgent({ cert: adminLeaf.certPem, key: adminLeaf.keyPem, ca: pki.rootPem });
    const ordersApp = await startEchoApp('orders');
    const webApp = await startEchoApp('web');
    const sidecars: RunningSidecar[] = [];
    try {
      const joinToken = async (workload: string) =>
        (
          await call(admin, `${sts.url}/v1/admin/join-tokens`, {
            method: 'POST',
            body: JSON.stringify({ workload }),
            headers: { 'content-type': 'application/json' },
          })
        ).json.token as string;
      writeFileSync(join(dir, 'orders-policy.yaml'), readFileSync('policies/orders.yaml', 'utf8'));
      writeFileSync(join(dir, 'web-policy.yaml'), readFileSync('policies/web.yaml', 'utf8'));
      const base = async (name: string) => {
        mkdirSync(join(dir, name));
        return {
          trustDomain: 'example.org',
          tls: {
            cert: join(dir, name, 'cert.pem'),
            key: join(dir, name, 'key.pem'),
            trustBundle: bundle,
            reloadInterval: '300ms',
          },
          identity: {
            bootstrap: { joinToken: await joinToken(name) },
            renewAt: '10%',
            jitter: 0.01,
            retryMin: '200ms',
          },
          sts: { url: sts.url, spiffeId: STS_ID, issuer: ISSUER, timeout: '2s' },
        };
      };
      const orders = await startSidecar(
        parseSidecarConfig(
          {
            service: ORDERS,
            ...(await base('orders')),
            inbound: {
              listen: { host: '127.0.0.1', port: 0 },
              app: ordersApp.url,
              policy: join(dir, 'orders-policy.yaml'),
            },
          },
          'orders',
        ),
        { sink: new MemoryAuditSink(), logger: quiet, defaultMetrics: false },
      );
      sidecars.push(orders);
      const web = await startSidecar(
        parseSidecarConfig(
          {
            service: WEB,
            ...(await base('web')),
            inbound: {
              listen: { host: '127.0.0.1', port: 0 },
              app: webApp.url,
              policy: join(dir, 'web-policy.yaml'),
            },
            outbound: {
              listen: { host: '127.0.0.1', port: 0 },
              routes: [
                {
                  name: 'orders',
                  hosts: ['orders.shop.internal'],
                  address: `127.0.0.1:${orders.inbound.port}`,
                  spiffeId: ORDERS,
                },
              ],
            },
          },
          'web',
        ),
        { sink: new MemoryAuditSink(), logger: quiet, defaultMetrics: false },
      );
      sidecars.push(web);
      const oldIntermediate = new X509Certificate(pki.intermediatePem);
      const signedBy = (name: string) => new X509Certificate(readFileSync(join(dir, name, 'cert.pem')));
      assert.ok(signedBy('web').verify(oldIntermediate.publicKey), 'enrolled under the old intermediate');

      let ok = 0;
      const failures: string[] = [];
      const until = Date.now() + DURATION_MS;
      const caller = async () => {
        while (Date.now() < until) {
          const r = await viaProxy(web.outbound!.port, 'GET', 'http://orders.shop.internal/orders/3').catch(
            (err: Error) => ({ status: 0, body: err.message }),
          );
          if (r.status === 200) ok++;
          else failures.push(`${r.status} ${r.body.slice(0, 200)}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      let rotatedAt = 0;
      const rotation = (async () => {
        await new Promise((r) => setTimeout(r, ROTATE_AT_MS));
        // Runbook 1: the next intermediate in a directory of its own, published in the trust bundle
        // beside the root and the current intermediate, so that every part knows both before any
        // leaf the new one signs is presented (parts build paths from known intermediates only).
        const next = await createNextIntermediate({ rootDir: caDir, outDir: join(dir, 'ca-next') });
        writeFileAtomic(bundle, pki.rootPem + pki.intermediatePem + next.intermediatePem);
        await new Promise((r) => setTimeout(r, 1_500));
        // Runbook 2: its pair into the STS's ca.dir, key first; the STS signs with it from then on.
        writeFileAtomic(
          join(caDir, 'intermediate-key.pem'),
          readFileSync(join(dir, 'ca-next', 'intermediate-key.pem')),
          0o600,
        );
        writeFileAtomic(join(caDir, 'intermediate.pem'), next.intermediatePem);
        rotatedAt = Date.now();
        return new X509Certificate(next.intermediatePem);
      })();
      const [, , newIntermediate] = await Promise.all([caller(), caller(), rotation]);
      assert.deepEqual(failures, [], `${failures.length} failed of ${ok + failures.length}`);
      assert.ok(ok > 100, `only ${ok} requests`);
      for (const name of ['web', 'orders']) {
        const leaf = signedBy(name);
        assert.ok(leaf.verify(newIntermediate.publicKey), `${name} renewed onto the new intermediate`);
        const chain = splitPemBundle(readFileSync(join(dir, name, 'cert.pem'), 'utf8'));
        assert.equal(new X509Certificate(chain[1]!).fingerprint256, newIntermediate.fingerprint256);
      }
      const after = sts.events.filter((e) => e.type === 'cert.issued' && Date.parse(e.time) > rotatedAt);
      assert.ok(after.some((e) => e.subject === WEB) && after.some((e) => e.subject === ORDERS));
      // cacerts now serves the new intermediate beside the old one.
      const cacerts = await call(admin, `${sts.url}/.well-known/est/cacerts`);
      assert.equal(cacerts.status, 200);
    } finally {
      for (const s of sidecars) await s.close();
      await admin.close();
      await sts.close();
      await Promise.all([ordersApp, webApp].map((a) => new Promise((r) => a.server.close(r))));
      rmSync(dir, { recursive: true, force: true });
      pki.cleanup();
    }
  },
);
