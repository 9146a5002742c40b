import { ROOT_CONTEXT, SpanKind, context, propagation, trace } from '@opentelemetry/api';
import type { Attributes, ProxyTracerProvider, Span, SpanContext, Tracer } from '@opentelemetry/api';
import type { NodeSDK, tracing } from '@opentelemetry/sdk-node';

export { SpanKind, SpanStatusCode } from '@opentelemetry/api';
export type { Span, SpanContext, Tracer } from '@opentelemetry/api';

/** Options of {@link startTelemetry}. */
export interface TelemetryOptions {
  /** `service.name` of every span this process exports. */
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
  /** A tracer when enabled, `undefined` otherwise (so that a disabled hot path skips span work entirely). */
  tracer(name: string): Tracer | undefined;
  /** Exports the spans that ended but are still buffered. */
  flush(): Promise<void>;
  /** Flushes, stops the SDK and unregisters it, so that telemetry can be started again. */
  shutdown(): Promise<void>;
}

let active: { sdk: NodeSDK; processor: tracing.SpanProcessor | undefined } | undefined;

const DISABLED: Telemetry = {
  enabled: false,
  tracer: () => undefined,
  flush: async () => {},
  shutdown: async () => {},
};

/**
 * Starts OpenTelemetry tracing for this process (DESIGN.md § Operations) with the W3C trace
 * context propagator and no auto-instrumentation: Portcullis creates its spans by hand where the
 * work happens (decision 0040). Exports to `exporter` when given, over OTLP (the SDK's own
 * `OTEL_EXPORTER_OTLP_*` handling: endpoint, protocol, headers) when `OTEL_EXPORTER_OTLP_ENDPOINT`
 * is set, and otherwise starts nothing and returns a disabled {@link Telemetry}. One process has
 * one telemetry: a second start before `shutdown()` rejects with a TypeError. The SDK is imported
 * only when tracing is on.
 */
export async function startTelemetry(options: TelemetryOptions): Promise<Telemetry> {
  if (typeof options?.serviceName !== 'string' || options.serviceName.trim() === '')
    throw new TypeError('"serviceName" must be a non-empty string');
  if (active) throw new TypeError('telemetry is already started in this process; shut it down first');
  // The SDK reads the rest of the OTEL_* variables from process.env itself.
  const env = process.env;
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (/^(true|1)$/i.test(env.OTEL_SDK_DISABLED ?? '')) return DISABLED;
  if (options.exporter === undefined && !endpoint) return DISABLED;
  // Loaded only when tracing is on: the SDK costs ~35 MB and ~120 ms to import.
  const { NodeSDK, core: otelCore, tracing } = await import('@opentelemetry/sdk-node');
  if (active) throw new TypeError('telemetry is already started in this process; shut it down first');
  const processor = options.exporter ? new tracing.SimpleSpanProcessor(options.exporter) : undefined;
  const sdk = new NodeSDK({
    serviceName: options.serviceName,
    // Host and process detection costs a few ms at start; tests with an exporter skip it.
    autoDetectResources: options.exporter === undefined,
    instrumentations: [],
    // Traces only: Prometheus serves the metrics (decision 0041), pino the logs.
    metricReaders: [],
    logRecordProcessors: [],
    textMapPropagator: new otelCore.W3CTraceContextPropagator(),
    ...(processor ? { spanProcessors: [processor] } : {}),
  });
  sdk.start();
  const mine = { sdk, processor };
  active = mine;
  let stopped: Promise<void> | undefined;
  return {
    enabled: true,
    tracer: (name) => (active === mine ? trace.getTracer(name) : undefined),
    flush: async () => {
      if (active !== mine) return;
      const proxy = trace.getTracerProvider() as ProxyTracerProvider;
      await (proxy.getDelegate() as { forceFlush?: () => Promise<void> }).forceFlush?.();
    },
    shutdown() {
      stopped ??= (async () => {
        try {
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
}

/**
 * The tracer `name` of the telemetry started in this process, or `undefined` when none is: the
 * default that composition roots (`startSts`, `startSidecar`, `startCollector`) fall back to.
 */
export function activeTracer(name: string): Tracer | undefined {
  return active ? trace.getTracer(name) : undefined;
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
