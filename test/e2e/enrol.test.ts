// Sidecars that start with nothing but a join token and the trust bundle: they enrol over EST,
// serve and call, then renew 1-minute certificates under steady traffic with zero failed requests.
// The traffic phase lasts PORTCULLIS_RENEWAL_MESH_MS (default 28 s at renewAt 10%, so every part
// renews at least 4 times); the long run (3 minutes at renewAt 50%) is recorded in docs/operations.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryAuditSink, createLogger } from '../../core/index.ts';
import { parseSidecarConfig, startSidecar } from '../../sidecar/index.ts';
import type { RunningSidecar } from '../../sidecar/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { call, mtlsAgent, startTestSts } from '../sts/helpers.ts';
import { ISSUER, ORDERS, STS_ID, WEB, startEchoApp, viaProxy } from './mesh.ts';

const DURATION_MS = Number(process.env.PORTCULLIS_RENEWAL_MESH_MS ?? 28_000);
const RENEW_AT = process.env.PORTCULLIS_RENEWAL_MESH_RENEW_AT ?? '10%';

/** The example registry with 1-minute certificates for web and orders. */
function registryYaml(): string {
  return readFileSync('identities/example.yaml', 'utf8')
    .replace(/(name: web\n(?:.*\n)*?\s+tokenTtl: 5m)/, '$1\n    svidTtl: 1m')
    .replace(/(name: orders\n(?:.*\n)*?\s+tokenTtl: 5m)/, '$1\n    svidTtl: 1m');
}

test(
  'sidecars enrol with a join token alone, serve and call, and renew 1-minute certificates under traffic with zero failed requests',
  { timeout: DURATION_MS + 60_000 },
  async () => {
    const pki = await makeTestPki({ identitiesYaml: registryYaml() });
    assert.equal(pki.registry.byName('web')!.svidTtlMs, 60_000);
    const dir = mkdtempSync(join(tmpdir(), 'enrol-'));
    const quiet = createLogger({ name: 'enrol', level: 'silent' });
    const sts = await startTestSts(pki, { ca: { dir: pki.ca.dir, perSecond: 5, burst: 10 } });
    const adminLeaf = pki.leaf('admin-console');
    const admin = mtlsAgent({ cert: adminLeaf.certPem, key: adminLeaf.keyPem, ca: pki.rootPem });
    const joinToken = async (workload: string) => {
      const res = await call(admin, `${sts.url}/v1/admin/join-tokens`, {
        method: 'POST',
        body: JSON.stringify({ workload }),
        headers: { 'content-type': 'application/json' },
      });
      assert.equal(res.status, 200, res.text);
      return res.json.token as string;
    };
    const ordersApp = await startEchoApp('orders');
    const webApp = await startEchoApp('web');
    writeFileSync(join(dir, 'orders-policy.yaml'), readFileSync('policies/orders.yaml', 'utf8'));
    writeFileSync(join(dir, 'web-policy.yaml'), readFileSync('policies/web.yaml', 'utf8'));
    const sidecars: RunningSidecar[] = [];
    const base = (name: string, token: string) => ({
      trustDomain: 'example.org',
      tls: {
        cert: join(dir, name, 'cert.pem'),
        key: join(dir, name, 'key.pem'),
        trustBundle: pki.rootFile,
        reloadInterval: '1h',
      },
      identity: { bootstrap: { joinToken: token }, renewAt: RENEW_AT, jitter: 0.01, retryMin: '200ms' },
      sts: { url: sts.url, spiffeId: STS_ID, issuer: ISSUER, timeout: '2s' },
    });
    try {
      const { mkdirSync } = await import('node:fs');
      mkdirSync(join(dir, 'orders'));
      mkdirSync(join(dir, 'web'));
      const ordersToken = await joinToken('orders');
      const orders = await startSidecar(
        parseSidecarConfig(
          {
            service: ORDERS,
            ...base('orders', ordersToken),
            inbound: {
              listen: { host: '127.0.0.1', port: 0 },
              app: ordersApp.url,
              policy: join(dir, 'orders-policy.yaml'),
            },
            metrics: { listen: { host: '127.0.0.1', port: 0 } },
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
            ...base('web', await joinToken('web')),
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

      // Enrolled: the key was made locally (0600) and the certificate names the registry ID.
      assert.equal(statSync(join(dir, 'orders', 'key.pem')).mode & 0o777, 0o600);
      const ordersCert = new X509Certificate(readFileSync(join(dir, 'orders', 'cert.pem')));
      assert.match(ordersCert.subjectAltName!, /URI:spiffe:\/\/example\.org\/ns\/shop\/sa\/orders/);
      const first = await viaProxy(web.outbound!.port, 'GET', 'http://orders.shop.internal/orders');
      assert.equal(first.status, 200, first.body);
      assert.equal(first.json().headers['x-portcullis-peer'], WEB);

      // The orders token again: refused, audited, and the sidecar does not start.
      await assert.rejects(
        startSidecar(
          parseSidecarConfig(
            {
              service: ORDERS,
              ...base('orders-again', ordersToken),
              inbound: {
                listen: { host: '127.0.0.1', port: 0 },
                app: ordersApp.url,
                policy: join(dir, 'orders-policy.yaml'),
              },
            },
            'orders again',
          ),
          { sink: new MemoryAuditSink(), logger: quiet, defaultMetrics: false },
        ),
        /HTTP 401 invalid_client: the join token is already used/,
      );
      assert.ok(
        sts.events.some(
          (e) => e.reason === 'ERR_STS_JOIN_TOKEN_USED' && e.subject === ORDERS && e.status === 401,
        ),
      );

      // The expiry metric.
      const metrics = await fetch(orders.metricsUrl!).then((r) => r.text());
      const expiry = Number(/^portcullis_identity_cert_expiry_timestamp_seconds (\S+)$/m.exec(metrics)?.[1]);
      assert.ok(
        Math.abs(expiry * 1000 - Date.parse(ordersCert.validTo)) < 1000,
        metrics
          .split('\n')
          .filter((l) => l.includes('identity'))
          .join('\n') || 'no identity metric',
      );

      // Steady traffic across renewals: two callers in a loop.
      let ok = 0;
      const failures: string[] = [];
      const until = Date.now() + DURATION_MS;
      const caller = async () => {
        while (Date.now() < until) {
          const r = await viaProxy(web.outbound!.port, 'GET', 'http://orders.shop.internal/orders/7').catch(
            (err: Error) => ({ status: 0, body: err.message }),
          );
          if (r.status === 200) ok++;
          else failures.push(`${r.status} ${r.body.slice(0, 200)}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      await Promise.all([caller(), caller()]);
      const renewals = (id: string) =>
        sts.events.filter(
          (e) => e.type === 'cert.issued' && e.subject === id && e.attributes?.auth === 'mtls',
        );
      assert.deepEqual(failures, [], `${failures.length} failed of ${ok + failures.length}`);
      assert.ok(ok > 100, `only ${ok} requests`);
      for (const id of [WEB, ORDERS]) {
        assert.ok(
          renewals(id).length >= 4,
          `${id} renewed ${renewals(id).length} times in ${DURATION_MS} ms`,
        );
      }
      // Every certificate the sidecar now presents is one the audit log recorded.
      const served = new X509Certificate(readFileSync(join(dir, 'orders', 'cert.pem')));
      const servedSerial = served.serialNumber.toLowerCase().replace(/^0+/, '');
      assert.ok(renewals(ORDERS).some((e) => e.target === servedSerial));
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
