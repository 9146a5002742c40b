// Metrics across the mesh (issue 6, item 3): the STS, both sidecars and the audit collector each
// serve /metrics; every named series exists, and moves by the expected amount when requests
// happen. The STS and sidecars deliver their audit events to the real collector (so the audit
// client's queue and spool gauges are on their /metrics too).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Agent, request } from 'undici';
import { startCollector } from '../../audit/index.ts';
import type { RunningCollector } from '../../audit/index.ts';
import { createLogger } from '../../core/index.ts';
import { parseSidecarConfig, startSidecar } from '../../sidecar/index.ts';
import type { RunningSidecar } from '../../sidecar/index.ts';
import { parseStsConfig, startSts } from '../../sts/index.ts';
import type { RunningSts } from '../../sts/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { collectorConfig } from '../audit/collector-harness.ts';
import { rawExchange } from '../helpers/raw-http.ts';
import { promtoolProblems } from '../helpers/promtool.ts';
import type { TestPki } from '../helpers/pki.ts';
import { ISSUER, ORDERS, STS_ID, WEB, startEchoApp, viaProxy } from './mesh.ts';

const AUDIT_ID = 'spiffe://example.org/ns/portcullis/sa/audit';
const quiet = createLogger({ name: 'e2e', level: 'silent' });

let pki: TestPki;
let dir: string;
let collector: RunningCollector;
let sts: RunningSts;
let orders: RunningSidecar;
let web: RunningSidecar;
let apps: Awaited<ReturnType<typeof startEchoApp>>[] = [];
let agent: Agent;

before(async () => {
  pki = await makeTestPki();
  dir = mkdtempSync(join(tmpdir(), 'portcullis-metrics-'));
  collector = await startCollector(
    collectorConfig(pki, dir, { checkpoint: { everyRecords: 100_000, interval: '1h' } }),
    { logger: quiet, defaultMetrics: false },
  );
  const auditSection = (name: string) => ({
    sink: 'collector',
    collector: collector.url,
    collectorId: AUDIT_ID,
    spoolDir: join(dir, `spool-${name}`),
  });
  sts = await startSts(
    parseStsConfig(
      {
        listen: { host: '127.0.0.1', port: 0 },
        tls: { cert: pki.leaf('sts').certFile, key: pki.leaf('sts').keyFile, trustBundle: pki.rootFile },
        identities: pki.identitiesDir,
        issuer: ISSUER,
        keystore: { type: 'file', dir: join(dir, 'keys') },
        audit: auditSection('sts'),
      },
      'e2e sts',
    ),
    { masterKey: randomBytes(32).toString('base64'), logger: quiet },
  );
  const ordersApp = await startEchoApp('orders');
  const webApp = await startEchoApp('web');
  apps = [ordersApp, webApp];
  for (const name of ['orders', 'web'])
    writeFileSync(join(dir, `${name}.yaml`), readFileSync(`policies/${name}.yaml`));
  const common = (name: string) => ({
    trustDomain: 'example.org',
    tls: {
      cert: pki.leaf(name).certFile,
      key: pki.leaf(name).keyFile,
      trustBundle: pki.rootFile,
      reloadInterval: '1h',
    },
    sts: { url: sts.url, spiffeId: STS_ID, issuer: ISSUER, timeout: '2s' },
    metrics: { listen: { host: '127.0.0.1', port: 0 } },
    audit: auditSection(name),
  });
  orders = await startSidecar(
    parseSidecarConfig(
      {
        service: ORDERS,
        ...common('orders'),
        inbound: {
          listen: { host: '127.0.0.1', port: 0 },
          app: ordersApp.url,
          policy: join(dir, 'orders.yaml'),
        },
      },
      'e2e orders',
    ),
    { logger: quiet, defaultMetrics: false },
  );
  web = await startSidecar(
    parseSidecarConfig(
      {
        service: WEB,
        ...common('web'),
        inbound: { listen: { host: '127.0.0.1', port: 0 }, app: webApp.url, policy: join(dir, 'web.yaml') },
        outbound: {
          listen: { host: '127.0.0.1', port: 0 },
          routes: [
            { name: 'orders', hosts: [], address: `127.0.0.1:${orders.inbound.port}`, spiffeId: ORDERS },
          ],
        },
      },
      'e2e web',
    ),
    { logger: quiet, defaultMetrics: false },
  );
  // web's certificate: a registered workload, as the STS and collector /metrics require.
  agent = new Agent({
    connect: {
      ca: pki.rootPem,
      cert: pki.leaf('web').certPem,
      key: pki.leaf('web').keyPem,
      checkServerIdentity: () => undefined,
    },
  });
});

after(async () => {
  await Promise.all([web?.close(), orders?.close()]);
  await sts?.close();
  await collector?.close();
  await agent?.close();
  await Promise.all(apps.map((a) => new Promise((r) => a.server.close(r))));
  if (dir) rmSync(dir, { recursive: true, force: true });
  pki?.cleanup();
});

/** Prometheus text as `series → value`, series written `name{k="v",…}` with labels sorted. */
type Scrape = Map<string, number>;

function parseExposition(text: string): Scrape {
  const out: Scrape = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `exposition line: ${line}`);
    const labels = [...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)]
      .map(([, k, v]) => `${k}="${v}"`)
      .sort();
    out.set(`${m[1]}{${labels.join(',')}}`, Number(m[3]));
  }
  return out;
}

/** The value of the one series `name` whose labels include `labels`; fails when there is none. */
function value(s: Scrape, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const hits = [...s].filter(
    ([key]) => key.startsWith(`${name}{`) && want.every((w) => key.slice(name.length).includes(w)),
  );
  assert.equal(
    hits.length,
    1,
    `one series ${name} ${JSON.stringify(labels)}; got ${hits.map(([k]) => k).join(' ')}`,
  );
  return hits[0]![1];
}

/** Like {@link value}, but 0 when the series does not exist yet (a labelled counter before its first event). */
function valueOr0(s: Scrape, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  return [...s].some(([key]) => key.startsWith(`${name}{`) && want.every((w) => key.includes(w)))
    ? value(s, name, labels)
    : 0;
}

async function scrapeMtls(url: string): Promise<Scrape> {
  const res = await request(`${url}/metrics`, { dispatcher: agent });
  const text = await res.body.text();
  assert.equal(res.statusCode, 200, text);
  assert.match(String(res.headers['content-type']), /^text\/plain/);
  return parseExposition(text);
}

async function scrapeSidecar(s: RunningSidecar): Promise<Scrape> {
  const res = await request(s.metricsUrl!);
  assert.equal(res.statusCode, 200);
  return parseExposition(await res.body.text());
}

const scrapeAll = async () => ({
  sts: await scrapeMtls(sts.url),
  collector: await scrapeMtls(collector.url),
  orders: await scrapeSidecar(orders),
  web: await scrapeSidecar(web),
});

async function flushAll(): Promise<void> {
  await Promise.all([sts.audit.flush(), orders.sink.flush(), web.sink.flush()]);
}

/** Scrapes until `check` passes (counters bumped after a response is sent may lag by a tick), at most 3 s. */
async function settle(check: (after: Awaited<ReturnType<typeof scrapeAll>>) => void) {
  const deadline = Date.now() + 3_000;
  for (;;) {
    const now = await scrapeAll();
    try {
      check(now);
      return now;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

test('each server /metrics exposes the named series and they move by what the requests did', async () => {
  await flushAll();
  const b = await scrapeAll();

  // 3 allowed calls and 1 denied call from web's app through both sidecars.
  for (const id of [1, 2, 3])
    assert.equal((await viaProxy(web.outbound!.port, 'GET', `http://orders/orders/${id}`)).status, 200);
  assert.equal((await viaProxy(web.outbound!.port, 'GET', 'http://orders/admin/x')).status, 403);
  // 1 token request the STS refuses: web may not ask for a token to itself.
  const refused = await request(`${sts.url}/oauth2/token`, {
    method: 'POST',
    dispatcher: agent,
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: `grant_type=client_credentials&audience=${encodeURIComponent(WEB)}`,
  });
  assert.equal(refused.statusCode, 400);
  assert.equal(((await refused.body.json()) as { error: string }).error, 'invalid_target');
  // 1 collector read refused: web has no audit-reader role (the collector audits that refusal itself).
  const read = await request(`${collector.url}/v1/events`, { dispatcher: agent });
  assert.equal(read.statusCode, 403);
  await read.body.dump();
  // 1 request orders' inbound listener refuses before any layer runs (CONNECT).
  const webLeaf = pki.leaf('web');
  const connect = await rawExchange(
    { port: orders.inbound.port, tls: { cert: webLeaf.certPem, key: webLeaf.keyPem } },
    'CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\n',
  );
  assert.match(connect, /^HTTP\/1\.1 400 /);
  await flushAll();
  // The collector's own checkpoint, signed on demand.
  await collector.log.checkpoint();

  const a = await settle((now) => {
    assert.equal(
      value(now.collector, 'portcullis_audit_collector_requests_total', {
        route: '/v1/events',
        status: '403',
      }) -
        valueOr0(b.collector, 'portcullis_audit_collector_requests_total', {
          route: '/v1/events',
          status: '403',
        }),
      1,
    );
  });
  const delta = (part: keyof typeof a, name: string, labels: Record<string, string> = {}) =>
    value(a[part], name, labels) - valueOr0(b[part], name, labels);

  // STS: tokens issued (one: web's token for orders, cached afterwards) and refused by reason, key
  // age by state, the audit client's queue and spool.
  assert.equal(delta('sts', 'portcullis_sts_tokens_issued_total', { grant: 'client_credentials' }), 1);
  assert.equal(
    delta('sts', 'portcullis_sts_tokens_refused_total', { reason: 'ERR_STS_AUDIENCE_NOT_ALLOWED' }),
    1,
  );
  assert.equal(
    delta('sts', 'portcullis_sts_requests_refused_total', { reason: 'ERR_STS_AUDIENCE_NOT_ALLOWED' }),
    1,
  );
  for (const state of ['next', 'current', 'retiring'])
    assert.ok(value(a.sts, 'portcullis_sts_key_age_seconds', { state }) >= 0);
  assert.ok(value(a.sts, 'portcullis_sts_key_age_seconds', { state: 'current' }) > 0);
  assert.equal(value(a.sts, 'portcullis_audit_queue_depth'), 0);
  assert.equal(value(a.sts, 'portcullis_audit_spool_depth'), 0);
  assert.equal(delta('sts', 'portcullis_audit_events_delivered_total'), 2, 'token.issued and token.denied');

  // Orders' sidecar: decisions by rule and outcome, the upstream latency histogram, JWKS age and refreshes, audit delivery.
  assert.equal(
    delta('orders', 'portcullis_sidecar_decisions_total', {
      decision: 'allow',
      reason: 'allowed',
      rule: 'storefront-reads-orders',
    }),
    3,
  );
  assert.equal(
    delta('orders', 'portcullis_sidecar_decisions_total', {
      decision: 'deny',
      reason: 'ERR_SIDECAR_POLICY_DENIED',
      rule: 'nobody-touches-admin',
    }),
    1,
  );
  assert.equal(
    delta('orders', 'portcullis_sidecar_decisions_total', {
      decision: 'deny',
      reason: 'ERR_SIDECAR_REQUEST_MALFORMED',
      rule: '',
    }),
    1,
  );
  const inboundApp = { side: 'inbound', route: 'app' };
  assert.equal(delta('orders', 'portcullis_sidecar_upstream_duration_seconds_count', inboundApp), 3);
  assert.equal(
    delta('orders', 'portcullis_sidecar_upstream_duration_seconds_bucket', { ...inboundApp, le: '+Inf' }),
    3,
  );
  assert.ok(delta('orders', 'portcullis_sidecar_upstream_duration_seconds_sum', inboundApp) > 0);
  assert.ok(value(a.orders, 'portcullis_sidecar_jwks_age_seconds') >= 0);
  assert.ok(value(a.orders, 'portcullis_sidecar_jwks_fetches_total') >= 1);
  assert.equal(delta('orders', 'portcullis_sidecar_jwks_fetch_failures_total'), 0);
  assert.equal(value(a.orders, 'portcullis_audit_queue_depth'), 0);
  assert.equal(value(a.orders, 'portcullis_audit_spool_depth'), 0);
  assert.equal(
    delta('orders', 'portcullis_audit_events_delivered_total'),
    5,
    '4 decisions and the CONNECT refusal',
  );

  // Web's sidecar: the outbound side of the histogram (the denied call was an exchange too) and its one token fetch.
  const outboundOrders = { side: 'outbound', route: 'orders' };
  assert.equal(delta('web', 'portcullis_sidecar_upstream_duration_seconds_count', outboundOrders), 4);
  assert.equal(
    delta('web', 'portcullis_sidecar_upstream_duration_seconds_bucket', { ...outboundOrders, le: '+Inf' }),
    4,
  );
  assert.equal(delta('web', 'portcullis_sidecar_outbound_token_fetches_total'), 1);

  // Collector: appends (2 from the STS, 5 from orders, its own refusal of web's read), checkpoints, requests by route/status.
  assert.equal(delta('collector', 'portcullis_audit_records_appended_total'), 8);
  assert.equal(delta('collector', 'portcullis_audit_log_size'), 8);
  assert.equal(delta('collector', 'portcullis_audit_checkpoints_total'), 1);
  assert.equal(value(a.collector, 'portcullis_audit_checkpoint_lag_records'), 0);
  assert.ok(
    delta('collector', 'portcullis_audit_collector_requests_total', { route: '/v1/events', status: '200' }) >=
      2,
  );
  assert.ok(
    delta('collector', 'portcullis_audit_collector_requests_total', { route: '/metrics', status: '200' }) >=
      1,
  );
});

test('histogram buckets are cumulative and end at the count', async () => {
  const s = await scrapeSidecar(orders);
  const buckets = [...s]
    .filter(
      ([k]) =>
        k.startsWith('portcullis_sidecar_upstream_duration_seconds_bucket{') && k.includes('side="inbound"'),
    )
    .map(([k, v]) => ({ le: /le="([^"]+)"/.exec(k)![1]!, v }))
    .sort((x, y) => (x.le === '+Inf' ? 1 : y.le === '+Inf' ? -1 : Number(x.le) - Number(y.le)));
  assert.equal(buckets.length, 15);
  for (let i = 1; i < buckets.length; i++)
    assert.ok(buckets[i]!.v >= buckets[i - 1]!.v, `bucket ${buckets[i]!.le}`);
  assert.equal(
    buckets.at(-1)!.v,
    value(s, 'portcullis_sidecar_upstream_duration_seconds_count', { side: 'inbound', route: 'app' }),
  );
});

test('the STS and collector /metrics need a registered client certificate', async () => {
  const anonymous = new Agent({ connect: { ca: pki.rootPem, checkServerIdentity: () => undefined } });
  try {
    const s = await request(`${sts.url}/metrics`, { dispatcher: anonymous });
    assert.equal(s.statusCode, 401);
    assert.equal(((await s.body.json()) as { error: string }).error, 'invalid_client');
    const c = await request(`${collector.url}/metrics`, { dispatcher: anonymous });
    assert.equal(c.statusCode, 401);
    assert.equal(((await c.body.json()) as { error: string }).error, 'ERR_AUDIT_PEER_REFUSED');
  } finally {
    await anonymous.close();
  }
});

test('every /metrics passes promtool check metrics (names, types, help, units)', async () => {
  const mtls = async (url: string) => (await request(`${url}/metrics`, { dispatcher: agent })).body.text();
  const plain = async (s: RunningSidecar) => (await request(s.metricsUrl!)).body.text();
  const pages = {
    sts: await mtls(sts.url),
    collector: await mtls(collector.url),
    orders: await plain(orders),
    web: await plain(web),
  };
  for (const [part, text] of Object.entries(pages))
    assert.equal(promtoolProblems(text), '', `${part} /metrics`);
  // The STS's process metrics carry its prefix like every other part's.
  assert.match(pages.sts, /^portcullis_sts_process_resident_memory_bytes /m);
  assert.doesNotMatch(pages.sts, /^process_/m);
});
