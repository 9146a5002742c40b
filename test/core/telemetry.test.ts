import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, test } from 'node:test';
import { tracing } from '@opentelemetry/sdk-node';
import {
  SpanKind,
  activeTracer,
  formatTraceparent,
  parseTraceparent,
  startSpan,
  startTelemetry,
} from '../../core/index.ts';
import type { Telemetry } from '../../core/index.ts';

const OTEL_KEYS = [
  'OTEL_EXPORTER_OTLP_ENDPOINT',
  'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
  'OTEL_SDK_DISABLED',
  'OTEL_BSP_SCHEDULE_DELAY',
  'OTEL_SERVICE_NAME',
  'OTEL_RESOURCE_ATTRIBUTES',
  'OTEL_EXPORTER_OTLP_PROTOCOL',
  'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL',
];
const saved = Object.fromEntries(OTEL_KEYS.map((k) => [k, process.env[k]]));
const started: Telemetry[] = [];

async function start(...args: Parameters<typeof startTelemetry>): Promise<Telemetry> {
  const t = await startTelemetry(...args);
  started.push(t);
  return t;
}

afterEach(async () => {
  for (const t of started.splice(0)) await t.shutdown();
  for (const k of OTEL_KEYS) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
});

function clearOtelEnv(): void {
  for (const k of OTEL_KEYS) delete process.env[k];
}

test('without an exporter or OTEL_EXPORTER_OTLP_ENDPOINT nothing starts: no tracer, no active tracer', async () => {
  clearOtelEnv();
  const t = await start({ serviceName: 'svc' });
  assert.equal(t.enabled, false);
  assert.equal(t.tracer('x'), undefined);
  assert.equal(activeTracer('x'), undefined);
});

test('OTEL_SDK_DISABLED=true wins over an exporter', async () => {
  clearOtelEnv();
  process.env.OTEL_SDK_DISABLED = 'true';
  const t = await start({ serviceName: 'svc', exporter: new tracing.InMemorySpanExporter() });
  assert.equal(t.enabled, false);
  assert.equal(activeTracer('x'), undefined);
});

test('an exporter receives each span as it ends, with service.name set', async () => {
  clearOtelEnv();
  const exporter = new tracing.InMemorySpanExporter();
  const t = await start({ serviceName: 'portcullis-test', exporter });
  assert.equal(t.enabled, true);
  const tracer = t.tracer('unit')!;
  assert.ok(activeTracer('unit'), 'composition roots see the running telemetry');
  startSpan(tracer, 'one', undefined, SpanKind.SERVER, { k: 'v' }).end();
  const [span] = exporter.getFinishedSpans();
  assert.equal(span?.name, 'one');
  assert.equal(span.kind, SpanKind.SERVER);
  assert.equal(span.attributes.k, 'v');
  assert.equal(span.resource.attributes['service.name'], 'portcullis-test');
  assert.equal(span.parentSpanContext, undefined);
});

test('a second start before shutdown is a TypeError; after shutdown telemetry starts again', async () => {
  clearOtelEnv();
  const first = await start({ serviceName: 'a', exporter: new tracing.InMemorySpanExporter() });
  await assert.rejects(
    startTelemetry({ serviceName: 'b', exporter: new tracing.InMemorySpanExporter() }),
    (err: Error) => err instanceof TypeError && /already started/.test(err.message),
  );
  await first.shutdown();
  assert.equal(activeTracer('x'), undefined);
  assert.equal(first.tracer('x'), undefined, 'a stopped telemetry hands out no tracer');
  const exporter = new tracing.InMemorySpanExporter();
  const second = await start({ serviceName: 'b', exporter });
  second.tracer('x')!.startSpan('again').end();
  assert.deepEqual(
    exporter.getFinishedSpans().map((s) => s.name),
    ['again'],
  );
});

test('serviceName must be a non-empty string (TypeError)', async () => {
  for (const serviceName of ['', '  ', undefined, 7]) {
    await assert.rejects(
      startTelemetry({ serviceName } as unknown as Parameters<typeof startTelemetry>[0]),
      TypeError,
    );
  }
});

test('with OTEL_EXPORTER_OTLP_ENDPOINT set, spans are exported over OTLP/HTTP to <endpoint>/v1/traces', async () => {
  clearOtelEnv();
  const received: { url: string; type: string; body: Buffer }[] = [];
  const collector = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ url: req.url!, type: req.headers['content-type'] ?? '', body: Buffer.concat(chunks) });
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
  try {
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
    const t = await start({ serviceName: 'otlp-test-service' });
    assert.equal(t.enabled, true);
    startSpan(t.tracer('unit')!, 'exported-over-otlp', undefined).end();
    await t.shutdown(); // flushes the batch
    assert.equal(received.length, 1);
    assert.equal(received[0]!.url, '/v1/traces');
    assert.equal(received[0]!.type, 'application/x-protobuf');
    // Protobuf carries strings as raw UTF-8: the span and service names are in the body.
    assert.ok(received[0]!.body.includes('exported-over-otlp'));
    assert.ok(received[0]!.body.includes('otlp-test-service'));
  } finally {
    await new Promise((r) => collector.close(r));
  }
});

test('OTEL_SERVICE_NAME, then service.name in OTEL_RESOURCE_ATTRIBUTES, win over the default name', async () => {
  const cases: [Record<string, string>, string][] = [
    [{}, 'default-name'],
    [{ OTEL_RESOURCE_ATTRIBUTES: 'service.name=from-attrs,deployment.environment.name=test' }, 'from-attrs'],
    [{ OTEL_SERVICE_NAME: 'from-env', OTEL_RESOURCE_ATTRIBUTES: 'service.name=from-attrs' }, 'from-env'],
  ];
  for (const [env, expected] of cases) {
    clearOtelEnv();
    Object.assign(process.env, env);
    const exporter = new tracing.InMemorySpanExporter();
    const t = await start({ serviceName: 'default-name', exporter });
    assert.equal(t.serviceName, expected);
    t.tracer('unit')!.startSpan('s').end();
    const [span] = exporter.getFinishedSpans();
    assert.equal(span!.resource.attributes['service.name'], expected, JSON.stringify(env));
    await t.shutdown();
  }
});

test('a tracer for another service exports spans under that service.name with the other resource attributes', async () => {
  clearOtelEnv();
  process.env.OTEL_RESOURCE_ATTRIBUTES = 'deployment.environment.name=staging';
  const exporter = new tracing.InMemorySpanExporter();
  const t = await start({ serviceName: 'mesh', exporter });
  startSpan(t.tracer('unit')!, 'main', undefined).end();
  startSpan(t.tracer('unit', 'orders')!, 'of-orders', undefined).end();
  startSpan(activeTracer('unit', 'web')!, 'of-web', undefined).end();
  await t.flush();
  const byName = new Map(exporter.getFinishedSpans().map((s) => [s.name, s.resource.attributes]));
  assert.equal(byName.get('main')?.['service.name'], 'mesh');
  assert.equal(byName.get('of-orders')?.['service.name'], 'orders');
  assert.equal(byName.get('of-web')?.['service.name'], 'web');
  for (const attrs of byName.values()) assert.equal(attrs['deployment.environment.name'], 'staging');
  await t.shutdown();
  assert.equal(activeTracer('unit', 'orders'), undefined, 'no tracer after shutdown');
});

test('OTEL_EXPORTER_OTLP_PROTOCOL picks the OTLP encoding; an unknown one names the variable', async () => {
  clearOtelEnv();
  const received: string[] = [];
  const collector = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push(`${req.headers['content-type']} ${Buffer.concat(chunks).toString('utf8')}`);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
  try {
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
    process.env.OTEL_EXPORTER_OTLP_PROTOCOL = 'http/json';
    const t = await start({ serviceName: 'json-service' });
    startSpan(t.tracer('unit')!, 'exported-as-json', undefined).end();
    await t.shutdown();
    assert.equal(received.length, 1);
    assert.match(received[0]!, /^application\/json .*"exported-as-json"/);
    assert.match(received[0]!, /"service\.name".*"json-service"/);
    process.env.OTEL_EXPORTER_OTLP_PROTOCOL = 'carrier-pigeon';
    await assert.rejects(
      startTelemetry({ serviceName: 'x' }),
      (err: Error & { code?: string }) =>
        err.code === 'ERR_CONFIG_INVALID' &&
        /^OTEL_EXPORTER_OTLP_PROTOCOL: must be http\/protobuf, http\/json or grpc/.test(err.message),
    );
  } finally {
    await new Promise((r) => collector.close(r));
  }
});

const VALID_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const VALID_SPAN = '00f067aa0ba902b7';

test('parseTraceparent accepts W3C trace context and refuses everything else', () => {
  const cases: [string, unknown, { traceId: string; spanId: string; traceFlags: number } | undefined][] = [
    [
      'sampled',
      `00-${VALID_TRACE}-${VALID_SPAN}-01`,
      { traceId: VALID_TRACE, spanId: VALID_SPAN, traceFlags: 1 },
    ],
    [
      'unsampled',
      `00-${VALID_TRACE}-${VALID_SPAN}-00`,
      { traceId: VALID_TRACE, spanId: VALID_SPAN, traceFlags: 0 },
    ],
    [
      'unknown flag bits dropped',
      `00-${VALID_TRACE}-${VALID_SPAN}-ff`,
      { traceId: VALID_TRACE, spanId: VALID_SPAN, traceFlags: 1 },
    ],
    [
      'future version with extra fields',
      `01-${VALID_TRACE}-${VALID_SPAN}-01-what`,
      { traceId: VALID_TRACE, spanId: VALID_SPAN, traceFlags: 1 },
    ],
    ['version 00 with extra fields', `00-${VALID_TRACE}-${VALID_SPAN}-01-x`, undefined],
    ['version ff', `ff-${VALID_TRACE}-${VALID_SPAN}-01`, undefined],
    ['upper case', `00-${VALID_TRACE.toUpperCase()}-${VALID_SPAN}-01`, undefined],
    ['all-zero trace id', `00-${'0'.repeat(32)}-${VALID_SPAN}-01`, undefined],
    ['all-zero span id', `00-${VALID_TRACE}-${'0'.repeat(16)}-01`, undefined],
    ['short trace id', `00-${VALID_TRACE.slice(1)}-${VALID_SPAN}-01`, undefined],
    ['short span id', `00-${VALID_TRACE}-${VALID_SPAN.slice(1)}-01`, undefined],
    ['missing flags', `00-${VALID_TRACE}-${VALID_SPAN}`, undefined],
    ['empty', '', undefined],
    ['not a string', ['a', 'b'], undefined],
    ['absent', undefined, undefined],
    ['huge', `00-${VALID_TRACE}-${VALID_SPAN}-01-${'x'.repeat(600)}`, undefined],
  ];
  for (const [name, input, expected] of cases) {
    const got = parseTraceparent(input);
    if (expected === undefined) assert.equal(got, undefined, name);
    else assert.deepEqual(got, { ...expected, isRemote: true }, name);
  }
});

test('formatTraceparent writes version 00 with the sampled bit only, and round-trips through parseTraceparent', () => {
  const ctx = { traceId: VALID_TRACE, spanId: VALID_SPAN, traceFlags: 3 };
  assert.equal(formatTraceparent(ctx), `00-${VALID_TRACE}-${VALID_SPAN}-01`);
  assert.deepEqual(parseTraceparent(formatTraceparent({ ...ctx, traceFlags: 0 })), {
    traceId: VALID_TRACE,
    spanId: VALID_SPAN,
    traceFlags: 0,
    isRemote: true,
  });
});

test('startSpan makes children of a remote context and of a local span', async () => {
  clearOtelEnv();
  const exporter = new tracing.InMemorySpanExporter();
  const t = await start({ serviceName: 'svc', exporter });
  const tracer = t.tracer('unit')!;
  const remote = parseTraceparent(`00-${VALID_TRACE}-${VALID_SPAN}-01`)!;
  const parent = startSpan(tracer, 'parent', remote, SpanKind.SERVER);
  const child = startSpan(tracer, 'child', parent);
  child.end();
  parent.end();
  const [c, p] = exporter.getFinishedSpans();
  assert.equal(p!.spanContext().traceId, VALID_TRACE);
  assert.equal(p!.parentSpanContext?.spanId, VALID_SPAN);
  assert.equal(p!.parentSpanContext?.isRemote, true);
  assert.equal(c!.spanContext().traceId, VALID_TRACE);
  assert.equal(c!.parentSpanContext?.spanId, p!.spanContext().spanId);
});
