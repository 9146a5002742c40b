import { z } from 'zod';
import {
  LogAuditSink,
  MemoryAuditSink,
  resolveConfigPath,
  spiffeIdSchema,
  strictObject,
  timerDurationSchema,
} from '../../core/index.ts';
import type { AuditSink, Logger } from '../../core/index.ts';
import { createAuditClient } from './client.ts';
import type { AuditClientOptions } from './client.ts';
import type { Registry as MetricsRegistry } from 'prom-client';

/**
 * The `audit:` section shared by the STS and sidecar configs: where their audit events go.
 * `collector` posts to the audit collector over mTLS with a disk spool (the production setting);
 * `log` writes each event as a log line; `memory` keeps them in process (tests).
 */
export const auditSinkConfigSchema = strictObject({
  sink: z.enum(['collector', 'log', 'memory']).default('log'),
  /** `https://host:port` of the collector. */
  collector: z.url({ protocol: /^https$/, error: 'must be an https URL' }).optional(),
  /** The collector's SPIFFE ID, checked on its certificate. */
  collectorId: spiffeIdSchema.optional(),
  /** Spool directory for events the collector could not take yet. */
  spoolDir: z.string().min(1).optional(),
  spoolMaxBytes: z
    .number()
    .int()
    .min(1024)
    .default(64 * 1024 * 1024),
  /**
   * `closed`: nothing is acted on (a request forwarded, a token sent) before its event is fsynced
   * to the spool, and new requests are refused once it is full. `open`: keep serving; a crash may
   * lose up to `lossWindow` of events, which the restart reports.
   */
  failMode: z.enum(['open', 'closed']).default('open'),
  /** `failMode: open`: the most events, and the longest time, an event waits in memory before the spool. */
  lossWindow: strictObject({
    events: z.number().int().min(1).max(1_000_000).default(1_000),
    ms: z.number().int().min(0).max(60_000).default(200),
  }).default({ events: 1_000, ms: 200 }),
  /**
   * How often the client reports its spool to the collector when no batch carried a report
   * (`30s`; at least 1 s). The collector calls a source stale after 3 of these (decision 0096).
   */
  reportInterval: timerDurationSchema
    .refine((ms) => ms >= 1000, { message: 'must be at least 1s' })
    .default(30_000),
})
  .superRefine((c, ctx) => {
    if (c.sink !== 'collector') return;
    for (const key of ['collector', 'collectorId', 'spoolDir'] as const) {
      if (c[key] === undefined)
        ctx.addIssue({ code: 'custom', path: [key], message: 'is required when sink is "collector"' });
    }
  })
  .default({
    sink: 'log',
    spoolMaxBytes: 64 * 1024 * 1024,
    failMode: 'open',
    lossWindow: { events: 1_000, ms: 200 },
    reportInterval: 30_000,
  });

/** Parsed `audit:` section. */
export type AuditSinkConfig = z.output<typeof auditSinkConfigSchema>;

/** Resolves the section's relative paths (the spool directory) against `baseDir`. */
export function resolveAuditSinkConfig(config: AuditSinkConfig, baseDir: string): AuditSinkConfig {
  return config.spoolDir ? { ...config, spoolDir: resolveConfigPath(config.spoolDir, baseDir) } : config;
}

/**
 * Builds the sink an `audit:` section describes. A collector sink authenticates with the
 * workload's own certificate (`tls`).
 */
export function createAuditSink(
  config: AuditSinkConfig,
  deps: {
    /** The part's TLS files, or its watcher of them (shared, so they are watched once). */
    readonly tls: AuditClientOptions['tls'];
    readonly logger: Logger;
    readonly metricsRegistry?: MetricsRegistry;
    /** The part's `tls.clockSkew`, so that the collector's certificate is judged as every peer's is. */
    readonly clockSkewMs?: number;
  },
): AuditSink {
  switch (config.sink) {
    case 'memory':
      return new MemoryAuditSink();
    case 'log':
      return new LogAuditSink(deps.logger);
    case 'collector':
      return createAuditClient({
        url: config.collector!,
        collectorId: config.collectorId!.uri,
        tls: deps.tls,
        spoolDir: config.spoolDir!,
        spoolMaxBytes: config.spoolMaxBytes,
        failMode: config.failMode,
        lossWindow: config.lossWindow,
        reportIntervalMs: config.reportInterval,
        logger: deps.logger,
        ...(deps.metricsRegistry ? { metricsRegistry: deps.metricsRegistry } : {}),
        ...(deps.clockSkewMs !== undefined ? { clockSkewMs: deps.clockSkewMs } : {}),
      });
  }
}
