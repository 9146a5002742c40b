// Issue #18's replay point: real traffic through two sidecars is recorded by a real collector;
// `portcullis policy replay` with a deliberately changed orders policy then reports exactly the
// decisions the change flips, and nothing else — from the collector, from its file store, and
// from a PostgreSQL store holding the same events.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { createAuditClient, openFileStore, openStore, startCollector } from '../../audit/index.ts';
import type { AuditClient, AuditRecord, RunningCollector } from '../../audit/index.ts';
import { createExplainer, loadPolicyFile } from '../../sidecar/index.ts';
import type { ReplayReport } from '../../sidecar/index.ts';
import { collectorConfig, quiet } from '../audit/collector-harness.ts';
import { PG_URL, pgSchema } from '../audit/helpers.ts';
import type { TestPki } from '../helpers/pki.ts';
import { ORDERS, WEB, direct, startMesh, viaProxy } from './mesh.ts';

const run = promisify(execFile);
const COLLECTOR_ID = 'spiffe://example.org/ns/portcullis/sa/audit';

// The change under test: GET narrows to the list (/orders/:id reads flip to denied) and the
// storefront may now place orders (POST /orders flips to allowed). GET /orders stays allowed,
// by a renamed rule: a rule change, not a flip.
const PROPOSED = `service: ${ORDERS}
mode: enforce
roles:
  storefront: [${WEB}]
rules:
  - id: storefront-lists-orders
    role: storefront
    methods: [GET]
    paths: [/orders]
  - id: storefront-places-orders
    role: storefront
    methods: [POST]
    paths: [/orders]
  - id: nobody-touches-admin
    effect: deny
    subjects: ['*']
    paths: [/admin, /admin/*]
`;

async function replay(args: string[]): Promise<ReplayReport> {
  const { stdout } = await run(
    process.execPath,
    ['cli/portcullis.ts', 'policy', 'replay', ...args, '--json'],
    {
      encoding: 'utf8',
      timeout: 30_000,
    },
  );
  return JSON.parse(stdout) as ReplayReport;
}

/** The report without what differs between sources (seq numbers, times, trace ids). */
function flips(r: ReplayReport) {
  return r.groups.map((g) => ({
    change: g.change,
    caller: g.caller,
    method: g.method,
    path: g.path,
    recordedRule: g.recordedRule,
    proposedRule: g.proposedRule,
    count: g.count,
    targets: g.examples.map((x) => x.target),
  }));
}

test(
  'policy replay reports exactly the decisions a policy change flips, from collector, file and postgres stores',
  { timeout: 120_000 },
  async () => {
    let collector: RunningCollector | undefined;
    const work = mkdtempSync(join(tmpdir(), 'portcullis-replay-'));
    const clients: AuditClient[] = [];
    let pkiRef: TestPki | undefined;
    const { schema, drop } = await pgSchema('replay');
    const mesh = await startMesh({
      async audit(pki, dir) {
        pkiRef = pki;
        collector = await startCollector(collectorConfig(pki, work), { logger: quiet });
        const client = (name: string) => {
          const c = createAuditClient({
            url: collector!.url,
            collectorId: COLLECTOR_ID,
            tls: { cert: pki.leaf(name).certFile, key: pki.leaf(name).keyFile, trustBundle: pki.rootFile },
            spoolDir: join(dir, 'spool', name),
            spoolMaxBytes: 10_000_000,
            failMode: 'closed',
            batchIntervalMs: 20,
            logger: quiet,
          });
          clients.push(c);
          return c;
        };
        return { sts: client('sts'), web: client('web'), orders: client('orders') };
      },
    });
    try {
      const call = async (method: string, path: string, status: number) => {
        const res = await viaProxy(mesh.web.outbound!.port, method, `http://orders.shop.internal${path}`);
        assert.equal(res.status, status, `${method} ${path}: ${res.body}`);
      };
      for (let i = 0; i < 3; i++) await call('GET', '/orders', 200);
      await call('GET', '/orders/1', 200);
      await call('GET', '/orders/2', 200);
      await call('GET', '/orders/2', 200);
      await call('GET', '/orders/7?full=1', 200);
      await call('POST', '/orders', 403);
      await call('POST', '/orders', 403);
      await call('DELETE', '/orders/3', 403);
      await call('GET', '/admin/users', 403);
      // Refused before the policy (no token): recorded, but no policy can change it.
      const leaf = pkiRef!.leaf('web');
      const noToken = await direct(
        mesh.orders.inbound.port,
        { cert: leaf.certPem, key: leaf.keyPem },
        'GET',
        '/orders',
      );
      assert.equal(noToken.status, 401);

      for (const c of clients) await c.flush();
      const proposedFile = join(work, 'orders-proposed.yaml');
      writeFileSync(proposedFile, PROPOSED);

      const expected = [
        {
          change: 'allowed→denied',
          caller: WEB,
          method: 'GET',
          path: '/orders/2',
          recordedRule: 'storefront-reads-orders',
          proposedRule: 'default-deny',
          count: 2,
          targets: ['/orders/2', '/orders/2'],
        },
        {
          change: 'denied→allowed',
          caller: WEB,
          method: 'POST',
          path: '/orders',
          recordedRule: 'default-deny',
          proposedRule: 'storefront-places-orders',
          count: 2,
          targets: ['/orders', '/orders'],
        },
        {
          change: 'allowed→denied',
          caller: WEB,
          method: 'GET',
          path: '/orders/1',
          recordedRule: 'storefront-reads-orders',
          proposedRule: 'default-deny',
          count: 1,
          targets: ['/orders/1'],
        },
        {
          change: 'allowed→denied',
          caller: WEB,
          method: 'GET',
          path: '/orders/7',
          recordedRule: 'storefront-reads-orders',
          proposedRule: 'default-deny',
          count: 1,
          targets: ['/orders/7?full=1'],
        },
      ];
      const check = (r: ReplayReport, source: string) => {
        assert.deepEqual(flips(r), expected, source);
        assert.equal(r.service, ORDERS);
        assert.equal(r.considered, 12, source);
        assert.equal(r.replayed, 11, source);
        assert.equal(r.allowedToDenied, 4, source);
        assert.equal(r.deniedToAllowed, 2, source);
        assert.equal(r.ruleChanged, 3, source);
        assert.equal(r.unchanged, 2, source);
        assert.deepEqual(r.skipped, { 'refused before the policy (ERR_SIDECAR_TOKEN_MISSING)': 1 }, source);
        assert.deepEqual(Object.values(r.recordedPolicies), [11], source);
      };

      const sc = pkiRef!.leaf('security-console');
      const fromCollector = await replay([
        '--policy',
        proposedFile,
        '--from',
        collector!.url,
        '--cert',
        sc.certFile,
        '--key',
        sc.keyFile,
        '--trust',
        pkiRef!.rootFile,
        '--collector-id',
        COLLECTOR_ID,
        '--since',
        '1h',
        // Pages of five: the service's twelve decisions span three.
        '--page-size',
        '5',
      ]);
      check(fromCollector, 'collector');

      // The same policy the sidecar ran changes nothing.
      const unchanged = await replay(['--policy', mesh.ordersPolicyFile, '--from', join(work, 'log')]);
      assert.deepEqual(unchanged.groups, []);
      assert.equal(unchanged.unchanged, 11);

      await mesh.close();
      for (const c of clients) await c.close();
      await collector!.close();
      collector = undefined;
      check(await replay(['--policy', proposedFile, '--from', join(work, 'log')]), 'file store');

      // policy explain agrees with what the real sidecar decided on every request it recorded.
      const explainer = createExplainer(loadPolicyFile('policies/orders.yaml'));
      let explained = 0;
      const log = await openFileStore({ dir: join(work, 'log'), readOnly: true });
      for await (const r of log.read(0)) {
        const e = r.event;
        if (e.type !== 'authz.decision' || e.source !== ORDERS || e.rule === undefined) continue;
        const [method, target] = e.action!.split(' ') as [string, string];
        const x = explainer.explain(e.subject!, method, target);
        assert.equal(x.outcome, 'decided', e.action);
        if (x.outcome !== 'decided') continue;
        assert.deepEqual(
          [x.decision.allow ? 'allow' : 'deny', x.decision.rule],
          [e.decision, e.rule],
          e.action,
        );
        explained++;
      }
      await log.close();
      assert.equal(explained, 11);

      // The same records' events, appended to a PostgreSQL store, replay the same.
      const file = await openFileStore({ dir: join(work, 'log'), readOnly: true });
      const records: AuditRecord[] = [];
      for await (const r of file.read(0)) records.push(r);
      await file.close();
      const pgSpec = `${PG_URL}?table=${schema}.log`;
      const pgStore = await openStore(pgSpec);
      await pgStore.append(records.map((r) => r.event));
      await pgStore.close();
      check(await replay(['--policy', proposedFile, '--from', pgSpec]), 'postgres store');

      // --since after every record: nothing is considered.
      const later = await replay([
        '--policy',
        proposedFile,
        '--from',
        pgSpec,
        '--since',
        new Date(Date.now() + 60_000).toISOString(),
      ]);
      assert.equal(later.considered, 0);
    } finally {
      await mesh.close().catch(() => {});
      for (const c of clients) await c.close().catch(() => {});
      await collector?.close().catch(() => {});
      await drop();
      rmSync(work, { recursive: true, force: true });
    }
  },
);
