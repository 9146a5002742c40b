import { ROOT_CONTEXT, SpanKind, context, propagation, trace } from '@opentelemetry/api';
import type { Attributes, Span, SpanContext, Tracer } from '@opentelemetry/api';
import type { tracing } from '@opentelemetry/sdk-node';
import { ConfigError } from './errors.ts';

export { SpanKind, SpanStatusCode } from '@opentelemetry/api';
export type { Span, SpanContext, Tracer } from '@opentelemetry/api';

/** Options of {@link startTelemetry}. */
export interface TelemetryOptions {
  /**
   * The process's default `service.name`. `OTEL_SERVICE_NAME`, else a `service.name` in
   * `OTEL_RESOURCE_ATTRIBUTES`, takes precedence, as the OpenTelemetry SDK specification says.
   */
  readonly serviceName: string;
  /**
   * Where spans go, each as soon as it ends (tests pass `tracing.InMemorySpanExporter` from
   * `@opentelemetry/sdk-node`). Without it, spans are exported over OTLP when
   * `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set, and nothing runs otherwise.
   */
  readonly exporter?: tracing.SpanExporter;
}

/** The process's tracing, as {@link startTelemetry} left it. */
export interface Telemetry {
  /** False when nothing is exported: servers then create no spans at all. */
  readonly enabled: boolean;
  /** The `service.name` of spans from {@link Telemetry.tracer} without a service. */
  readonly serviceName: string;
  /**
   * A tracer when enabled, `undefined` otherwise (so that a disabled hot path skips span work
   * entirely). With `service`, its spans carry that `service.name` instead of the process's: one
   * process running several parts (`portcullis up`) shows each as its own service.
   */
  tracer(name: string, service?: string): Tracer | undefined;
  /** Exports the spans that ended but are still buffered. */
  flush(): Promise<void>;
  /** Flushes, stops the SDK and unregisters it, so that telemetry can be started again. */
  shutdown(): Promise<void>;
}

let active: Telemetry | undefined;

const DISABLED: Telemetry = {
  enabled: false,
  serviceName: '',
  tracer: () => undefined,
  flush: async () => {},
  shutdown: async () => {},
};

/**
 * Starts OpenTelemetry tracing for this process (docs/architecture.md, Operations) with the W3C
 * trace context propagator and no auto-instrumentation: Portcullis creates its spans by hand where
 * the work happens (decision 0040). Exports to `exporter` when given, over OTLP when
 * `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set — `http/protobuf` by default,
 * `http/json` or `grpc` by `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`, endpoint and headers read by the
 * exporter itself — and otherwise starts nothing and returns a disabled {@link Telemetry}. The
 * resource honours `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`. One process has one
 * telemetry: a second start before `shutdown()` rejects with a TypeError. The SDK is imported only
 * when tracing is on.
 */
export async function startTelemetry(options: TelemetryOptions): Promise<Telemetry> {
  if (typeof options?.serviceName !== 'string' || options.serviceName.trim() === '')
    throw new TypeError('"serviceName" must be a non-empty string');
  if (active) throw new TypeError('telemetry is already started in this process; shut it down first');
  const env = process.env;
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (/^(true|1)$/i.test(env.OTEL_SDK_DISABLED ?? '')) return DISABLED;
  if (options.exporter === undefined && !endpoint) return DISABLED;
  // Loaded only when tracing is on: the SDK costs ~35 MB and ~120 ms to import.
  const { NodeSDK, core: otelCore, resources, tracing } = await import('@opentelemetry/sdk-node');
  if (active) throw new TypeError('telemetry is already started in this process; shut it down first');
  const exporter = options.exporter ?? (await otlpExporter(env));
  const processor = options.exporter
    ? new tracing.SimpleSpanProcessor(exporter)
    : new tracing.BatchSpanProcessor(exporter);
  // The environment first (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME); host and process
  // detection costs a few ms at start, so tests with an exporter skip it.
  const detected = resources.detectResources({
    detectors: options.exporter
      ? [resources.envDetector]
      : [resources.envDetector, resources.hostDetector, resources.processDetector],
  });
  await detected.waitForAsyncAttributes?.();
  const fromEnv = detected.attributes['service.name'];
  const serviceName = typeof fromEnv === 'string' && fromEnv !== '' ? fromEnv : options.serviceName;
  const named = (service: string) =>
    detected.merge(resources.resourceFromAttributes({ 'service.name': service }));
  const sdk = new NodeSDK({
    resource: named(serviceName),
    autoDetectResources: false,
    instrumentations: [],
    // Traces only: Prometheus serves the metrics (decision 0041), pino the logs.
    metricReaders: [],
    logRecordProcessors: [],
    textMapPropagator: new otelCore.W3CTraceContextPropagator(),
    spanProcessors: [processor],
  });
  sdk.start();
  // Further services share the one processor (and so the one export queue); only the telemetry
  // as a whole shuts it down.
  const shared: tracing.SpanProcessor = {
    onStart: (span, ctx) => processor.onStart(span, ctx),
    onEnd: (span) => processor.onEnd(span),
    forceFlush: () => processor.forceFlush(),
    shutdown: () => processor.forceFlush(),
  };
  const providers = new Map<string, tracing.BasicTracerProvider>();
  let stopped: Promise<void> | undefined;
  const mine: Telemetry = {
    enabled: true,
    serviceName,
    tracer(name, service) {
      if (active !== mine) return undefined;
      if (service === undefined || service === serviceName) return trace.getTracer(name);
      let provider = providers.get(service);
      if (!provider) {
        provider = new tracing.BasicTracerProvider({ resource: named(service), spanProcessors: [shared] });
        providers.set(service, provider);
      }
      return provider.getTracer(name);
    },
    flush: async () => {
      if (active === mine) await processor.forceFlush();
    },
    shutdown() {
      stopped ??= (async () => {
        try {
          for (const p of providers.values()) await p.shutdown();
          await sdk.shutdown();
        } finally {
          trace.disable();
          propagation.disable();
          context.disable();
          if (active === mine) active = undefined;
        }
      })();
      return stopped;
    },
  };
  active = mine;
  return mine;
}

/** The OTLP trace exporter that `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` names (default `http/protobuf`). */
async function otlpExporter(env: NodeJS.ProcessEnv): Promise<tracing.SpanExporter> {
  const protocol = (
    env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ||
    env.OTEL_EXPORTER_OTLP_PROTOCOL ||
    'http/protobuf'
  ).trim();
  switch (protocol) {
    case 'http/protobuf':
      return new (await import('@opentelemetry/exporter-trace-otlp-proto')).OTLPTraceExporter();
    case 'http/json':
      return new (await import('@opentelemetry/exporter-trace-otlp-http')).OTLPTraceExporter();
    case 'grpc':
      return new (await import('@opentelemetry/exporter-trace-otlp-grpc')).OTLPTraceExporter();
    default:
      throw new ConfigError(
        'ERR_CONFIG_INVALID',
        env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL
          ? 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL'
          : 'OTEL_EXPORTER_OTLP_PROTOCOL',
        '',
        `must be http/protobuf, http/json or grpc; got ${JSON.stringify(protocol.slice(0, 40))}`,
      );
  }
}

/**
 * The tracer `name` (for `service`, see {@link Telemetry.tracer}) of the telemetry started in this
 * process, or `undefined` when none is: the default that composition roots (`startSts`,
 * `startSidecar`) fall back to.
 */
export function activeTracer(name: string, service?: string): Tracer | undefined {
  return active?.tracer(name, service);
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/**
 * Parses a W3C `traceparent` header value into a remote span context; `undefined` for anything
 * that is not one (wrong shape, upper case, version ff, all-zero ids, trailing data on version 00).
 */
export function parseTraceparent(value: unknown): SpanContext | undefined {
  if (typeof value !== 'string' || value.length > 512) return undefined;
  const m = TRACEPARENT.exec(value);
  if (!m) return undefined;
  const [, version, traceId, spanId, flags, rest] = m;
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined;
  if (/^0+$/.test(traceId!) || /^0+$/.test(spanId!)) return undefined;
  return { traceId: traceId!, spanId: spanId!, traceFlags: parseInt(flags!, 16) & 1, isRemote: true };
}

/** The `traceparent` header value (version 00) naming `span` as the parent. */
export function formatTraceparent(span: SpanContext): string {
  return `00-${span.traceId}-${span.spanId}-0${span.traceFlags & 1}`;
}

/**
 * Starts span `name` as a child of `parent` (a remote context parsed from `traceparent`, or a
 * local span), or as a new root when there is none. The caller ends it.
 */
export function startSpan(
  tracer: Tracer,
  name: string,
  parent: SpanContext | Span | undefined,
  kind: SpanKind = SpanKind.INTERNAL,
  attributes?: Attributes,
): Span {
  const ctx =
    parent === undefined
      ? ROOT_CONTEXT
      : 'spanContext' in parent
        ? trace.setSpan(ROOT_CONTEXT, parent)
        : trace.setSpanContext(ROOT_CONTEXT, parent);
  return tracer.startSpan(name, { kind, ...(attributes ? { attributes } : {}) }, ctx);
}
