// Traces across the mesh (issue 6, item 2): one W3C trace from web's app through web's sidecar
// (outbound), the STS (token), orders' sidecar (inbound, authorize, upstream) to orders' app,
// recorded by an in-memory exporter and checked as a tree of parent/child spans.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { tracing } from '@opentelemetry/sdk-node';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { SpanKind, createLogger, startTelemetry } from '../../core/index.ts';
import { parseSidecarConfig, startSidecar } from '../../sidecar/index.ts';
import type { MemoryAuditSink, Telemetry } from '../../core/index.ts';
import { ISSUER, ORDERS, STS_ID, WEB, startMesh, viaProxy } from './mesh.ts';
import type { Mesh } from './mesh.ts';

type Finished = tracing.ReadableSpan;

const exporter = new tracing.InMemorySpanExporter();
let telemetry: Telemetry;
let mesh: Mesh;

before(async () => {
  telemetry = await startTelemetry({ serviceName: 'portcullis-e2e', exporter });
  mesh = await startMesh();
});

after(async () => {
  await mesh?.close();
  await telemetry?.shutdown();
});

/** The ended spans of trace `traceId`, once `names` have all ended (spans end after the response is relayed). */
async function spansOf(traceId: string, names: readonly string[]): Promise<Finished[]> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
    if (names.every((n) => spans.some((s) => s.name === n))) return spans;
    if (Date.now() > deadline)
      assert.fail(
        `spans ${names.join(', ')} of trace ${traceId}; got ${spans.map((s) => s.name).join(', ')}`,
      );
    await new Promise((r) => setTimeout(r, 20));
  }
}

function one(spans: readonly Finished[], name: string, attrs: Record<string, string> = {}): Finished {
  const found = spans.filter(
    (s) => s.name === name && Object.entries(attrs).every(([k, v]) => s.attributes[k] === v),
  );
  assert.equal(found.length, 1, `exactly one ${name} span ${JSON.stringify(attrs)}`);
  return found[0]!;
}

const parentOf = (s: Finished) => s.parentSpanContext?.spanId;
const hex = (n: number) =>
  Array.from({ length: n }, () => Math.floor(Math.random() * 16).toString(16)).join('');

test('one trace id spans web outbound, the STS token, orders inbound, authorize, upstream and the orders app, parent by parent', async () => {
  const traceId = `1${hex(31)}`;
  const appSpan = `2${hex(15)}`;
  const res = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/orders/7', {
    traceparent: `00-${traceId}-${appSpan}-01`,
  });
  assert.equal(res.status, 200, res.body);
  const spans = await spansOf(traceId, [
    'sidecar.outbound',
    'sts.token',
    'sidecar.inbound',
    'sidecar.authorize',
    'sidecar.upstream',
  ]);

  const outbound = one(spans, 'sidecar.outbound');
  assert.equal(parentOf(outbound), appSpan, "web's outbound span is a child of web's app span");
  assert.equal(outbound.kind, SpanKind.CLIENT);
  assert.equal(outbound.attributes['portcullis.route'], 'orders');
  assert.equal(outbound.attributes['portcullis.audience'], ORDERS);
  assert.equal(outbound.attributes['http.response.status_code'], 200);

  const token = one(spans, 'sts.token');
  assert.equal(
    parentOf(token),
    outbound.spanContext().spanId,
    'the token fetch happens under the outbound call',
  );
  assert.equal(token.kind, SpanKind.SERVER);
  assert.deepEqual(
    [
      token.attributes['portcullis.caller'],
      token.attributes['portcullis.audience'],
      token.attributes['portcullis.outcome'],
    ],
    [WEB, ORDERS, 'issued'],
  );

  const inbound = one(spans, 'sidecar.inbound', { 'portcullis.service': ORDERS });
  assert.equal(
    parentOf(inbound),
    outbound.spanContext().spanId,
    "orders' inbound span is a child of web's outbound span",
  );
  assert.equal(inbound.kind, SpanKind.SERVER);
  assert.equal(inbound.attributes['portcullis.caller'], WEB);
  assert.equal(inbound.attributes['portcullis.decision'], 'allow');
  assert.equal(inbound.attributes['portcullis.rule'], 'storefront-reads-orders');

  const authorize = one(spans, 'sidecar.authorize');
  assert.equal(parentOf(authorize), inbound.spanContext().spanId);
  assert.equal(authorize.attributes['portcullis.rule'], 'storefront-reads-orders');
  assert.equal(authorize.attributes['portcullis.decision'], 'allow');

  const upstream = one(spans, 'sidecar.upstream');
  assert.equal(parentOf(upstream), inbound.spanContext().spanId);
  assert.equal(upstream.kind, SpanKind.CLIENT);
  assert.equal(upstream.attributes['http.response.status_code'], 200);

  // Orders' app is the last hop: it receives the same trace with the upstream span as its parent.
  const seen = res.json();
  assert.equal(seen.app, 'orders');
  assert.equal(seen.headers.traceparent, `00-${traceId}-${upstream.spanContext().spanId}-01`);

  // Every child lies inside its parent's time. OTel anchors each span's clock on Date.now() (ms
  // granularity), so spans of one process may disagree by up to a millisecond: allow 2 ms.
  const ns = (t: [number, number]) => t[0] * 1e9 + t[1];
  const slack = 2e6;
  for (const [child, parent] of [
    [upstream, inbound],
    [authorize, inbound],
    [inbound, outbound],
    [token, outbound],
  ] as const) {
    assert.ok(
      ns(child.startTime) + slack >= ns(parent.startTime),
      `${child.name} starts inside ${parent.name}`,
    );
    assert.ok(ns(child.endTime) <= ns(parent.endTime) + slack, `${child.name} ends inside ${parent.name}`);
  }

  // The audit events of that call carry the same trace id: orders' decision and the STS's issuance.
  const event = mesh.ordersEvents.find((e) => e.traceId === traceId);
  assert.ok(event, 'orders recorded the call with its trace id');
  assert.equal(event.decision, 'allow');
  const issued = (mesh.sts.audit as MemoryAuditSink).events.find((e) => e.type === 'token.issued');
  assert.equal(issued?.traceId, traceId, 'the token.issued event names the trace that fetched the token');
});

test('a call without traceparent starts a new trace at web outbound that still reaches the orders app', async () => {
  const before = new Set(exporter.getFinishedSpans().map((s) => s.spanContext().spanId));
  const res = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/orders/8');
  assert.equal(res.status, 200, res.body);
  const got = res.json().headers.traceparent as string;
  const traceId = got.slice(3, 35);
  const spans = (await spansOf(traceId, ['sidecar.outbound', 'sidecar.inbound', 'sidecar.upstream'])).filter(
    (s) => !before.has(s.spanContext().spanId),
  );
  const outbound = one(spans, 'sidecar.outbound');
  assert.equal(outbound.parentSpanContext, undefined, 'the outbound span is the root');
  const inbound = one(spans, 'sidecar.inbound');
  assert.equal(parentOf(inbound), outbound.spanContext().spanId);
  assert.equal(got, `00-${traceId}-${one(spans, 'sidecar.upstream').spanContext().spanId}-01`);
  // The token is cached now: no STS span in this trace.
  assert.equal(spans.filter((s) => s.name === 'sts.token').length, 0);
});

test('a malformed traceparent from the app is not continued: the call gets a fresh trace id', async () => {
  const res = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/orders/9', {
    traceparent: '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
  });
  assert.equal(res.status, 200);
  const got = res.json().headers.traceparent as string;
  assert.match(got, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  assert.notEqual(got.slice(3, 35), '0'.repeat(32));
  await spansOf(got.slice(3, 35), ['sidecar.outbound', 'sidecar.inbound']);
});

test('a denied call is traced too: the authorize span names the deny rule and no upstream span exists', async () => {
  const traceId = `3${hex(31)}`;
  const res = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/admin/keys', {
    traceparent: `00-${traceId}-${hex(15)}a-01`,
  });
  assert.equal(res.status, 403);
  assert.equal(res.json().error, 'ERR_SIDECAR_POLICY_DENIED');
  const spans = await spansOf(traceId, ['sidecar.outbound', 'sidecar.inbound', 'sidecar.authorize']);
  const authorize = one(spans, 'sidecar.authorize');
  assert.equal(authorize.attributes['portcullis.rule'], 'nobody-touches-admin');
  assert.equal(authorize.attributes['portcullis.decision'], 'deny');
  const inbound = one(spans, 'sidecar.inbound');
  assert.equal(inbound.attributes['portcullis.reason'], 'ERR_SIDECAR_POLICY_DENIED');
  assert.equal(inbound.attributes['http.response.status_code'], 403);
  assert.equal(spans.filter((s) => s.name === 'sidecar.upstream').length, 0);
  assert.equal(one(spans, 'sidecar.outbound').attributes['http.response.status_code'], 403);
  const event = mesh.ordersEvents.find((e) => e.traceId === traceId);
  assert.equal(event?.reason, 'ERR_SIDECAR_POLICY_DENIED');
});

test('an unsampled caller (flags 00) is honoured: orders app sees flags 00 and nothing is exported', async () => {
  const traceId = `4${hex(31)}`;
  const res = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/orders/10', {
    traceparent: `00-${traceId}-${hex(15)}b-00`,
  });
  assert.equal(res.status, 200);
  assert.match(res.json().headers.traceparent, new RegExp(`^00-${traceId}-[0-9a-f]{16}-00$`));
  // A sampled call made afterwards: once its spans are exported, the unsampled call's would have been too.
  const marker = `5${hex(31)}`;
  const sampled = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/orders/11', {
    traceparent: `00-${marker}-${hex(15)}c-01`,
  });
  assert.equal(sampled.status, 200);
  await spansOf(marker, ['sidecar.outbound', 'sidecar.inbound']);
  assert.equal(exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId).length, 0);
});

test('a failed outbound call ends its span in error and its log line names the trace id', async () => {
  // A second web sidecar whose route points at a closed port, logging into an array.
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const deadPort = (closed.address() as AddressInfo).port;
  await new Promise((r) => closed.close(r));
  const lines: string[] = [];
  const logger = createLogger({
    name: 'web',
    level: 'info',
    destination: { write: (l: string) => lines.push(l) },
  });
  const web = await startSidecar(
    parseSidecarConfig(
      {
        service: WEB,
        trustDomain: 'example.org',
        tls: {
          cert: join(mesh.pki.certsDir, 'web.pem'),
          key: join(mesh.pki.certsDir, 'web-key.pem'),
          trustBundle: mesh.pki.rootFile,
        },
        sts: { url: mesh.sts.url, spiffeId: STS_ID, issuer: ISSUER, timeout: '1s' },
        inbound: {
          listen: { host: '127.0.0.1', port: 0 },
          app: mesh.webApp.url,
          policy: 'policies/web.yaml',
        },
        outbound: {
          listen: { host: '127.0.0.1', port: 0 },
          routes: [{ name: 'orders', hosts: [], address: `127.0.0.1:${deadPort}`, spiffeId: ORDERS }],
        },
      },
      'e2e web (dead route)',
    ),
    { logger, defaultMetrics: false },
  );
  try {
    const traceId = `5${hex(31)}`;
    const res = await viaProxy(web.outbound!.port, 'GET', 'http://orders/orders/1', {
      traceparent: `00-${traceId}-${hex(15)}c-01`,
    });
    assert.equal(res.status, 502);
    assert.equal(res.json().error, 'ERR_SIDECAR_UPSTREAM_UNAVAILABLE');
    const outbound = one(await spansOf(traceId, ['sidecar.outbound']), 'sidecar.outbound');
    assert.equal(outbound.status.code, 2 /* SpanStatusCode.ERROR */);
    assert.equal(outbound.attributes['portcullis.reason'], 'ERR_SIDECAR_UPSTREAM_UNAVAILABLE');
    assert.equal(outbound.attributes['http.response.status_code'], 502);
    const logged = lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'outbound call failed');
    assert.ok(logged, lines.join(''));
    assert.equal(logged.traceId, traceId);
    assert.ok(!lines.join('').includes('Bearer '), 'no token in the log');
  } finally {
    await web.close();
  }
});
