// A mesh whose parts renew 1-minute certificates themselves: the STS (its own CA, renewing through
// its own listener), the audit collector and two sidecars (enrolled with nothing but a join token
// and the trust bundle) under steady traffic, with zero failed requests, through a CA outage longer
// than one renewal attempt and shorter than the certificates' life, after which renewal resumes.
// The traffic phase lasts PORTCULLIS_RENEWAL_MESH_MS (default 3 minutes at renewAt 50%, so every
// part renews at least 4 times); the hour-long run is in docs/operations.md and bench/RESULTS.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryAuditSink, createLogger, parseDuration } from '../../core/index.ts';
import { exportPrivateKeyPem, generateKeyPair, issueCertificate } from '../../ca/index.ts';
import { startTestCollector } from '../audit/collector-harness.ts';
import { parseSidecarConfig, startSidecar } from '../../sidecar/index.ts';
import type { RunningSidecar } from '../../sidecar/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { call, mtlsAgent, startTestSts } from '../sts/helpers.ts';
import { ISSUER, ORDERS, STS_ID, WEB, startEchoApp, viaProxy } from './mesh.ts';

// 3 minutes of traffic in npm test with 1-minute certificates renewed at half their life: each
// part renews at least four times, once through the CA outage below. The recorded hour with
// 5-minute certificates sets PORTCULLIS_RENEWAL_MESH_MS, _RENEW_AT, _SVID_TTL and the outage.
const DURATION_MS = Number(process.env.PORTCULLIS_RENEWAL_MESH_MS ?? 180_000);
/**
 * The STS (the CA) is down from OUTAGE_AT_MS to OUTAGE_AT_MS + OUTAGE_MS of the traffic phase:
 * across renewals, shorter than the certificates' remaining life.
 */
const OUTAGE_AT_MS = Number(process.env.PORTCULLIS_RENEWAL_OUTAGE_AT_MS ?? 50_000);
const OUTAGE_MS = Number(process.env.PORTCULLIS_RENEWAL_OUTAGE_MS ?? 15_000);
const RENEW_AT = process.env.PORTCULLIS_RENEWAL_MESH_RENEW_AT ?? '50%';
/** Certificate lifetime of the four parts (1m here; the recorded hour-long run uses 5m). */
const SVID_TTL = process.env.PORTCULLIS_RENEWAL_SVID_TTL ?? '1m';
const SVID_TTL_MS = parseDuration(SVID_TTL);

const AUDIT_ID = 'spiffe://example.org/ns/portcullis/sa/audit';

/** The example registry with SVID_TTL certificates for the STS, the collector, web and orders. */
function registryYaml(): string {
  return readFileSync('identities/example.yaml', 'utf8')
    .replace(/(name: web\n(?:.*\n)*?\s+tokenTtl: 5m)/, `$1\n    svidTtl: ${SVID_TTL}`)
    .replace(/(name: orders\n(?:.*\n)*?\s+tokenTtl: 5m)/, `$1\n    svidTtl: ${SVID_TTL}`)
    .replace(/(name: sts\n(?:.*\n)*?\s+ipAddresses: \[127\.0\.0\.1\])/, `$1\n    svidTtl: ${SVID_TTL}`)
    .replace(/(name: audit\n(?:.*\n)*?\s+ipAddresses: \[127\.0\.0\.1\])/, `$1\n    svidTtl: ${SVID_TTL}`);
}

test(
  `STS, collector and two sidecars (enrolled with a join token alone) renew ${SVID_TTL} certificates under traffic, through a CA outage, with zero failed requests`,
  { timeout: DURATION_MS + 60_000 },
  async (t) => {
    const pki = await makeTestPki({ identitiesYaml: registryYaml() });
    assert.equal(pki.registry.byName('web')!.svidTtlMs, SVID_TTL_MS);
    const dir = mkdtempSync(join(tmpdir(), 'enrol-'));
    const quiet = createLogger({ name: 'enrol', level: 'silent' });
    const renewal = { renewAt: RENEW_AT, jitter: 0.01, retryMin: '200ms' };
    // The STS starts from a 1-minute certificate on disk and renews it through its own listener.
    const stsEntry = pki.registry.byName('sts')!;
    const stsKeys = await generateKeyPair('ecdsa-p256');
    const stsCert = await issueCertificate({
      role: 'leaf',
      subject: 'O=example.org, CN=sts',
      publicKey: stsKeys.publicKey,
      issuer: pki.ca.intermediate,
      names: {
        spiffeId: stsEntry.spiffeId.uri,
        dnsNames: stsEntry.dnsNames,
        ipAddresses: stsEntry.ipAddresses,
      },
      validityMs: SVID_TTL_MS,
      deps: { now: () => new Date() },
    });
    mkdirSync(join(dir, 'sts'));
    writeFileSync(join(dir, 'sts', 'cert.pem'), stsCert.toString('pem') + '\n' + pki.intermediatePem);
    writeFileSync(join(dir, 'sts', 'key.pem'), await exportPrivateKeyPem(stsKeys.privateKey), {
      mode: 0o600,
    });
    const keystoreDir = join(dir, 'sts-keys');
    const stsExtra = (port: number) => ({
      listen: { host: '127.0.0.1', port },
      tls: {
        cert: join(dir, 'sts', 'cert.pem'),
        key: join(dir, 'sts', 'key.pem'),
        trustBundle: pki.rootFile,
        reloadInterval: '1h',
      },
      identity: { bootstrap: 'files', ...renewal },
      ca: { dir: pki.ca.dir, perSecond: 5, burst: 10 },
    });
    let sts = await startTestSts(pki, stsExtra(0), {}, keystoreDir);
    const stsUrl = sts.url;
    const allEvents = () => [...earlierEvents, ...sts.events];
    const earlierEvents: typeof sts.events = [];
    const adminLeaf = pki.leaf('admin-console');
    const admin = mtlsAgent({ cert: adminLeaf.certPem, key: adminLeaf.keyPem, ca: pki.rootPem });
    const joinToken = async (workload: string) => {
      const res = await call(admin, `${stsUrl}/v1/admin/join-tokens`, {
        method: 'POST',
        body: JSON.stringify({ workload }),
        headers: { 'content-type': 'application/json' },
      });
      assert.equal(res.status, 200, res.text);
      return res.json.token as string;
    };
    mkdirSync(join(dir, 'audit'));
    const collector = await startTestCollector(pki, join(dir, 'audit'), {
      tls: {
        cert: join(dir, 'audit', 'cert.pem'),
        key: join(dir, 'audit', 'key.pem'),
        trustBundle: pki.rootFile,
        reloadInterval: '1h',
      },
      identity: { est: stsUrl, bootstrap: { joinToken: await joinToken('audit') }, ...renewal },
    });
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
      identity: { bootstrap: { joinToken: token }, ...renewal },
      sts: { url: stsUrl, spiffeId: STS_ID, issuer: ISSUER, timeout: '2s' },
      audit: {
        sink: 'collector',
        collector: collector.url,
        collectorId: AUDIT_ID,
        spoolDir: join(dir, name, 'spool'),
        failMode: 'open',
      },
    });
    try {
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
        { logger: quiet, defaultMetrics: false },
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
        { logger: quiet, defaultMetrics: false },
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
        allEvents().some(
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
      // The CA goes away for longer than one renewal attempt, then comes back on the same address.
      const outage = (async () => {
        await new Promise((r) => setTimeout(r, OUTAGE_AT_MS));
        earlierEvents.push(...sts.events);
        await sts.close();
        const down = Date.now();
        await new Promise((r) => setTimeout(r, OUTAGE_MS));
        const during = allEvents().filter((e) => e.type === 'cert.issued' && Date.parse(e.time) >= down);
        assert.deepEqual(during, [], 'nothing issued while the CA was down');
        sts = await startTestSts(pki, stsExtra(Number(new URL(stsUrl).port)), {}, keystoreDir);
      })();
      await Promise.all([caller(), caller(), outage]);
      // Renewal resumed after the outage: the restarted STS issued renewals for the sidecars.
      for (const id of [WEB, ORDERS])
        assert.ok(
          sts.events.some((e) => e.type === 'cert.issued' && e.subject === id),
          `${id} renewed after the outage`,
        );
      const renewals = (id: string) =>
        allEvents().filter(
          (e) => e.type === 'cert.issued' && e.subject === id && e.attributes?.auth === 'mtls',
        );
      assert.deepEqual(failures, [], `${failures.length} failed of ${ok + failures.length}`);
      assert.ok(ok > 100, `only ${ok} requests`);
      t.diagnostic(
        `${ok} requests, ${failures.length} failed in ${DURATION_MS} ms at renewAt ${RENEW_AT}; renewals: ${[WEB, ORDERS, STS_ID, AUDIT_ID].map((id) => `${id.split('/').pop()} ${renewals(id).length}`).join(', ')}`,
      );
      for (const id of [WEB, ORDERS, STS_ID, AUDIT_ID]) {
        assert.ok(
          renewals(id).length >= 4,
          `${id} renewed ${renewals(id).length} times in ${DURATION_MS} ms`,
        );
      }
      // Every certificate the sidecar now presents is one the audit log recorded.
      const served = new X509Certificate(readFileSync(join(dir, 'orders', 'cert.pem')));
      const servedSerial = served.serialNumber.toLowerCase().replace(/^0+/, '');
      assert.ok(renewals(ORDERS).some((e) => e.target === servedSerial));
      // The sidecars' audit events reached the collector across its renewals and theirs.
      // A sink may hold events durably in its spool and deliver them a little later: wait for them.
      for (const s of sidecars) await s.sink.flush();
      for (let i = 0; i < 100 && collector.log.size < ok; i++) await new Promise((r) => setTimeout(r, 50));
      const clients = sidecars.map((s) => (s.sink as { metrics?: () => unknown }).metrics?.());
      for (const s of sidecars.splice(0)) await s.close();
      assert.ok(
        collector.log.size >= ok,
        `collector holds ${collector.log.size} records for ${ok} requests; audit clients: ${JSON.stringify(clients)}`,
      );
    } finally {
      for (const s of sidecars) await s.close();
      await collector.close();
      await admin.close();
      await sts.close();
      await Promise.all([ordersApp, webApp].map((a) => new Promise((r) => a.server.close(r))));
      rmSync(dir, { recursive: true, force: true });
      pki.cleanup();
    }
  },
);
