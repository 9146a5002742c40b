/* eslint-disable @typescript-eslint/no-explicit-any -- the echo app hands back parsed JSON for assertions */
// The end-to-end mesh of the sidecar tests: a real STS, two sidecars (web, orders) and two small
// apps, all on loopback port 0, over a real test PKI.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import type { IncomingMessage, Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryAuditSink, createLogger } from '../../core/index.ts';
import type { AuditEvent, AuditSink, Logger } from '../../core/index.ts';
import type { RunningSidecar } from '../../sidecar/index.ts';
import type * as SidecarLibrary from '../../sidecar/index.ts';
import { parseStsConfig, startSts } from '../../sts/index.ts';
import type { RunningSts } from '../../sts/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';

export const WEB = 'spiffe://example.org/ns/shop/sa/web';
export const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';
export const ADMIN = 'spiffe://example.org/ns/ops/sa/admin-console';
export const STS_ID = 'spiffe://example.org/ns/portcullis/sa/sts';
export const ISSUER = 'https://sts.portcullis.internal';
const MASTER_KEY = randomBytes(32).toString('base64');

/**
 * The sidecar library the mesh runs: the sources, or with PORTCULLIS_SIDECAR_BUILD=1 the build
 * (dist/sidecar/index.js, `npm run build`), so that the same tests hold the bundled sidecar to
 * the same refusals (test/e2e/sidecar-built.test.ts). A missing or stale build is refused.
 */
export const SIDECAR_FROM_BUILD = process.env.PORTCULLIS_SIDECAR_BUILD === '1';
async function sidecarLibrary(): Promise<typeof SidecarLibrary> {
  if (!SIDECAR_FROM_BUILD) return import('../../sidecar/index.ts');
  const root = new URL('../../', import.meta.url);
  const check = spawnSync(process.execPath, [new URL('scripts/build.ts', root).pathname, '--check'], {
    encoding: 'utf8',
  });
  if (check.status !== 0)
    throw new Error(`PORTCULLIS_SIDECAR_BUILD=1 needs a current build: ${check.stderr.trim()}`);
  return (await import(new URL('dist/sidecar/index.js', root).href)) as typeof SidecarLibrary;
}
const { parseSidecarConfig, startSidecar } = await sidecarLibrary();

/** The example registry with a short token TTL for web, so that expiry is testable in seconds. */
export function identitiesYaml(webTtl: string): string {
  return readFileSync('identities/example.yaml', 'utf8').replace(
    /(name: web\n(?:.*\n)*?\s+tokenTtl: )5m/,
    `$1${webTtl}`,
  );
}

/** An app that answers every request with what it saw, as JSON. */
export async function startEchoApp(name: string): Promise<{ server: Server; url: string; seen: any[] }> {
  const seen: any[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const record = {
        app: name,
        method: req.method,
        url: req.url,
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
      };
      seen.push(record);
      const body = JSON.stringify(record);
      res
        .writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
        .end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

/** Everything one test file needs, and one `close()`. */
export interface Mesh {
  readonly pki: TestPki;
  readonly sts: RunningSts;
  readonly web: RunningSidecar;
  readonly orders: RunningSidecar;
  readonly webEvents: MemoryAuditSink['events'];
  readonly ordersEvents: MemoryAuditSink['events'];
  readonly ordersApp: Awaited<ReturnType<typeof startEchoApp>>;
  readonly webApp: Awaited<ReturnType<typeof startEchoApp>>;
  readonly ordersPolicyFile: string;
  readonly dir: string;
  close(): Promise<void>;
}

/** Starts STS, orders (app + sidecar) and web (app + sidecar with an outbound route to orders). */
export async function startMesh(
  opts: {
    webTtl?: string;
    ordersPolicy?: string;
    ordersSink?: MemoryAuditSink;
    /** Real audit sinks (collector clients) for the parts, built once the PKI exists. */
    audit?: (pki: TestPki, dir: string) => Promise<{ sts: AuditSink; web: AuditSink; orders: AuditSink }>;
    /** Access logs on (`accessLog: {enabled: true}`) for every part, written to this logger. */
    accessLogger?: Logger;
    /** More top-level config sections for the orders and the web sidecar (e.g. `websocket`). */
    ordersConfig?: Record<string, unknown>;
    webConfig?: Record<string, unknown>;
    /** The orders sidecar's `inbound.app` instead of the echo app's URL (an h2c:// gRPC server). */
    ordersAppUrl?: string;
  } = {},
): Promise<Mesh> {
  const pki = await makeTestPki({ identitiesYaml: identitiesYaml(opts.webTtl ?? '5m') });
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-mesh-'));
  const sinks = opts.audit ? await opts.audit(pki, dir) : undefined;
  const quiet = opts.accessLogger ?? createLogger({ name: 'e2e', level: 'silent' });
  const accessLog = opts.accessLogger ? { accessLog: { enabled: true } } : {};
  const sts = await startSts(
    parseStsConfig(
      {
        listen: { host: '127.0.0.1', port: 0 },
        tls: {
          cert: join(pki.certsDir, 'sts.pem'),
          key: join(pki.certsDir, 'sts-key.pem'),
          trustBundle: pki.rootFile,
        },
        identities: pki.identitiesDir,
        issuer: ISSUER,
        keystore: { type: 'file', dir: join(dir, 'keys') },
        audit: { sink: 'memory' },
        ...accessLog,
      },
      'e2e sts',
    ),
    { masterKey: MASTER_KEY, audit: sinks?.sts ?? new MemoryAuditSink(), logger: quiet },
  );
  const ordersApp = await startEchoApp('orders');
  const webApp = await startEchoApp('web');
  const ordersPolicyFile = join(dir, 'orders-policy.yaml');
  writeFileSync(ordersPolicyFile, opts.ordersPolicy ?? readFileSync('policies/orders.yaml', 'utf8'));
  const webPolicyFile = join(dir, 'web-policy.yaml');
  writeFileSync(webPolicyFile, readFileSync('policies/web.yaml', 'utf8'));
  const common = (name: string) => ({
    trustDomain: 'example.org',
    tls: {
      cert: join(pki.certsDir, `${name}.pem`),
      key: join(pki.certsDir, `${name}-key.pem`),
      trustBundle: pki.rootFile,
      reloadInterval: '1h',
    },
    sts: { url: sts.url, spiffeId: STS_ID, issuer: ISSUER, timeout: '1s', kidRefetchCooldown: '1s' },
  });
  const ordersSink = sinks?.orders ?? opts.ordersSink ?? new MemoryAuditSink();
  const orders = await startSidecar(
    parseSidecarConfig(
      {
        service: ORDERS,
        ...common('orders'),
        inbound: {
          listen: { host: '127.0.0.1', port: 0 },
          app: opts.ordersAppUrl ?? ordersApp.url,
          policy: ordersPolicyFile,
          policyReloadInterval: '1h',
        },
        metrics: { listen: { host: '127.0.0.1', port: 0 } },
        ...accessLog,
        ...opts.ordersConfig,
      },
      'e2e orders',
    ),
    { sink: ordersSink, logger: quiet, defaultMetrics: false },
  );
  const webSink = sinks?.web ?? new MemoryAuditSink();
  const web = await startSidecar(
    parseSidecarConfig(
      {
        service: WEB,
        ...common('web'),
        inbound: { listen: { host: '127.0.0.1', port: 0 }, app: webApp.url, policy: webPolicyFile },
        outbound: {
          listen: { host: '127.0.0.1', port: 0 },
          tokenRetryAfter: '200ms',
          routes: [
            {
              name: 'orders',
              hosts: ['orders.shop.internal'],
              address: `127.0.0.1:${orders.inbound.port}`,
              spiffeId: ORDERS,
            },
          ],
        },
        ...accessLog,
        ...opts.webConfig,
      },
      'e2e web',
    ),
    { sink: webSink, logger: quiet, defaultMetrics: false },
  );
  let stsClosed = false;
  return {
    pki,
    sts: {
      ...sts,
      async close() {
        if (stsClosed) return;
        stsClosed = true;
        await sts.close();
      },
    },
    web,
    orders,
    // A sink passed in that keeps no events has none to show: fail loudly rather than show none.
    get webEvents() {
      return eventsOf(webSink, 'web');
    },
    get ordersEvents() {
      return eventsOf(ordersSink, 'orders');
    },
    ordersApp,
    webApp,
    ordersPolicyFile,
    dir,
    async close() {
      await Promise.all([web.close(), orders.close()]);
      if (!stsClosed) await sts.close();
      await Promise.all([ordersApp, webApp].map((a) => new Promise((r) => a.server.close(r))));
      rmSync(dir, { recursive: true, force: true });
      pki.cleanup();
    },
  };
}

/** A response as the tests look at it. */
export interface Answer {
  readonly status: number;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
  json(): any;
}

function collect(res: IncomingMessage): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('error', reject);
    res.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      resolve({ status: res.statusCode!, headers: res.headers, body, json: () => JSON.parse(body) });
    });
  });
}

/** Calls through web's outbound proxy as an HTTP_PROXY client would (absolute-form target). */
export function viaProxy(
  proxyPort: number,
  method: string,
  url: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port: proxyPort,
        method,
        path: url,
        headers: { host: u.host, ...headers },
        agent: false,
      },
      (res) => collect(res).then(resolve, reject),
    );
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * One request straight to a sidecar's inbound listener on a fresh mTLS connection, presenting
 * `cert`/`key` (PEM). `headers` is Node's raw form (flat name/value list) so that duplicates go
 * out as sent; the target string goes out unchanged.
 */
export function direct(
  port: number,
  creds: { cert: string; key: string } | undefined,
  method: string,
  target: string,
  headers: string[] = [],
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        method,
        path: target,
        headers: headers.some((h, i) => i % 2 === 0 && h.toLowerCase() === 'host')
          ? headers
          : ['Host', 'orders', ...headers],
        ...(creds ? { cert: creds.cert, key: creds.key } : {}),
        rejectUnauthorized: false,
        agent: false,
      },
      (res) => collect(res).then(resolve, reject),
    );
    req.on('error', reject);
    req.end();
  });
}

function eventsOf(sink: AuditSink, name: string): AuditEvent[] {
  if (sink instanceof MemoryAuditSink) return sink.events;
  throw new TypeError(`the ${name} sidecar's audit sink keeps no events to read`);
}
