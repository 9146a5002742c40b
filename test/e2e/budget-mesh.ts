// The servers of the connection-budget tests, in process on loopback port 0 over a real test PKI:
// an STS, an audit collector and the orders sidecar in front of an app that reads every body,
// with two callers (web and shipping) allowed to POST and GET /orders.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { MemoryAuditSink, createLogger } from '../../core/index.ts';
import type { RunningCollector } from '../../audit/index.ts';
import { parseSidecarConfig, startSidecar } from '../../sidecar/index.ts';
import type { RunningSidecar } from '../../sidecar/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { startTestCollector } from '../audit/collector-harness.ts';
import { requestToken, startTestSts } from '../sts/helpers.ts';
import type { TestSts } from '../sts/helpers.ts';

export const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';
export const WEB = 'spiffe://example.org/ns/shop/sa/web';
export const SHIPPING = 'spiffe://example.org/ns/shop/sa/shipping';
const STS_ID = 'spiffe://example.org/ns/portcullis/sa/sts';
const ISSUER = 'https://sts.portcullis.internal';

const IDENTITIES = `trustDomain: example.org
workloads:
  - { name: sts, spiffeId: '${STS_ID}', dnsNames: [localhost], ipAddresses: [127.0.0.1] }
  - { name: audit, spiffeId: spiffe://example.org/ns/portcullis/sa/audit, dnsNames: [localhost], ipAddresses: [127.0.0.1] }
  - { name: orders, spiffeId: '${ORDERS}', dnsNames: [localhost] }
  - { name: web, spiffeId: '${WEB}', audiences: ['${ORDERS}'] }
  - { name: shipping, spiffeId: '${SHIPPING}', audiences: ['${ORDERS}'] }
`;

const POLICY = `service: ${ORDERS}
mode: enforce
roles:
  shop: [${WEB}, ${SHIPPING}]
rules:
  - id: shop-uses-orders
    role: shop
    methods: [GET, POST]
    paths: [/orders]
`;

/** Short budgets (the tests wait for them), and caps no test connection count reaches. */
export const TEST_BUDGETS = {
  handshakeTimeout: '3s',
  headersTimeout: '2s',
  bodyTimeout: '1s',
  maxConnections: 5000,
  maxConnectionsPerPeer: 4000,
  drainTimeout: '2s',
};

export interface BudgetMesh {
  readonly pki: TestPki;
  readonly sts: TestSts;
  readonly collector: RunningCollector;
  readonly orders: RunningSidecar;
  readonly ordersEvents: MemoryAuditSink['events'];
  /** Bodies the app has read to the end. */
  readonly appRequests: () => number;
  /** An mTLS client presenting `name`'s certificate, with a token for orders when the caller has one. */
  caller(name: 'web' | 'shipping', connections?: number): Promise<Caller>;
  close(): Promise<void>;
}

export interface Caller {
  readonly agent: Agent;
  readonly token: string;
  /** One request to the orders sidecar: status, headers and body text. */
  call(
    method: string,
    body?: string,
  ): Promise<{ status: number; headers: Record<string, unknown>; text: string }>;
}

/**
 * Starts the three servers; `inbound` adds to the orders sidecar's `inbound:` section and
 * `connections` to its budgets.
 */
export async function startBudgetMesh(
  inbound: Record<string, unknown> = {},
  connections: Record<string, unknown> = {},
): Promise<BudgetMesh> {
  const pki = await makeTestPki({ identitiesYaml: IDENTITIES });
  const dir = mkdtempSync(join(tmpdir(), 'budget-mesh-'));
  const quiet = createLogger({ name: 'e2e', level: 'silent' });
  const sts = await startTestSts(pki, { connections: TEST_BUDGETS });
  const collector = await startTestCollector(pki, join(dir, 'collector'), { connections: TEST_BUDGETS });
  let read = 0;
  const app: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      read++;
      res.end('{"ok":true}');
    });
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  const policyFile = join(dir, 'orders-policy.yaml');
  writeFileSync(policyFile, POLICY);
  const sink = new MemoryAuditSink();
  const orders = await startSidecar(
    parseSidecarConfig(
      {
        service: ORDERS,
        trustDomain: 'example.org',
        tls: {
          cert: join(pki.certsDir, 'orders.pem'),
          key: join(pki.certsDir, 'orders-key.pem'),
          trustBundle: pki.rootFile,
          reloadInterval: '1h',
        },
        sts: { url: sts.url, spiffeId: STS_ID, issuer: ISSUER, timeout: '2s' },
        inbound: {
          listen: { host: '127.0.0.1', port: 0 },
          app: `http://127.0.0.1:${(app.address() as AddressInfo).port}`,
          policy: policyFile,
          policyReloadInterval: '1h',
          ...inbound,
        },
        metrics: { listen: { host: '127.0.0.1', port: 0 } },
        connections: { ...TEST_BUDGETS, ...connections },
      },
      'budget mesh orders',
    ),
    { sink, logger: quiet, defaultMetrics: false },
  );
  const agents: Agent[] = [];
  return {
    pki,
    sts,
    collector,
    orders,
    ordersEvents: sink.events,
    appRequests: () => read,
    async caller(name, connections = 16) {
      const leaf = pki.leaf(name);
      const agent = new Agent({
        connections,
        connect: { ca: pki.rootPem, cert: leaf.certPem, key: leaf.keyPem, servername: 'localhost' },
      });
      agents.push(agent);
      const answer = await requestToken(agent, sts.url, {
        grant_type: 'client_credentials',
        audience: ORDERS,
      });
      if (answer.status !== 200) throw new Error(`no token for ${name}: ${answer.text}`);
      const token = answer.json.access_token as string;
      const url = `${orders.inbound.url}/orders`;
      return {
        agent,
        token,
        async call(method, body) {
          const res = await request(url, {
            method: method as 'GET',
            dispatcher: agent,
            headers: { authorization: `Bearer ${token}` },
            ...(body !== undefined ? { body } : {}),
          });
          return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
        },
      };
    },
    async close() {
      await Promise.all(agents.map((a) => a.destroy()));
      await orders.close();
      await Promise.all([sts.close(), collector.close()]);
      await new Promise((r) => app.close(r));
      rmSync(dir, { recursive: true, force: true });
      pki.cleanup();
    },
  };
}
