import { Counter, Gauge, Registry } from 'prom-client';
import { collectProcessMetrics } from '../../core/index.ts';

/** What the collector's gauges read at scrape time. */
export interface CollectorMetricSources {
  /** Records in the log. */
  readonly size: () => number;
  /** Size of the latest signed checkpoint (0 before the first). */
  readonly checkpointSize: () => number;
}

/** The audit collector's Prometheus metrics (served on its `GET /metrics`). */
export interface CollectorMetrics {
  readonly registry: Registry;
  /** Requests answered, by route pattern and status code. */
  readonly requests: Counter<'route' | 'status'>;
  /** Records durably appended (batches from clients and the collector's own events). */
  readonly appended: Counter;
  /** Checkpoints signed. */
  readonly checkpoints: Counter;
  /** Stored records refused because no trusted seal covers them (forged, or never acknowledged). */
  readonly uncovered: Counter;
  /** Torn or junk tails (bytes that are no whole record) moved aside on open. */
  readonly tornTails: Counter;
  /** Keyed batches answered from the idempotency table instead of appended again. */
  readonly replays: Counter;
  /** Requests refused with 429 because their source spent its byte budget. */
  readonly rateLimited: Counter;
  /** Spool reports refused or ignored: malformed, out of range, or for another source (decision 0096). */
  readonly spoolReportsRefused: Counter;
}

/**
 * Creates the collector metrics on `registry` (a fresh one by default): requests by route and
 * status, appended records, signed checkpoints, the log size and how many records the latest
 * checkpoint does not cover yet, plus Node process metrics when `withDefaults`.
 */
export function createCollectorMetrics(
  sources: CollectorMetricSources,
  registry = new Registry(),
  withDefaults = false,
): CollectorMetrics {
  if (withDefaults) collectProcessMetrics(registry, 'portcullis_audit_');
  new Gauge({
    name: 'portcullis_audit_log_size',
    help: 'Records in the audit log',
    registers: [registry],
    collect() {
      this.set(sources.size());
    },
  });
  new Gauge({
    name: 'portcullis_audit_checkpoint_lag_records',
    help: 'Records appended since the latest signed checkpoint',
    registers: [registry],
    collect() {
      this.set(Math.max(0, sources.size() - sources.checkpointSize()));
    },
  });
  return {
    registry,
    requests: new Counter({
      name: 'portcullis_audit_collector_requests_total',
      help: 'Collector requests answered, by route and status code',
      labelNames: ['route', 'status'],
      registers: [registry],
    }),
    appended: new Counter({
      name: 'portcullis_audit_records_appended_total',
      help: 'Audit records durably appended',
      registers: [registry],
    }),
    checkpoints: new Counter({
      name: 'portcullis_audit_checkpoints_total',
      help: 'Checkpoints signed',
      registers: [registry],
    }),
    uncovered: new Counter({
      name: 'portcullis_audit_uncovered_records_total',
      help: 'Stored records refused because no trusted seal covers them',
      registers: [registry],
    }),
    tornTails: new Counter({
      name: 'portcullis_audit_torn_tails_total',
      help: 'Torn or junk tails of the file store moved aside on open',
      registers: [registry],
    }),
    replays: new Counter({
      name: 'portcullis_audit_idempotent_replays_total',
      help: 'Keyed batches answered with their original seqs instead of appended again',
      registers: [registry],
    }),
    rateLimited: new Counter({
      name: 'portcullis_audit_rate_limited_total',
      help: 'Event batches refused with 429 because their source spent its byte budget',
      registers: [registry],
    }),
    spoolReportsRefused: new Counter({
      name: 'portcullis_audit_spool_reports_refused_total',
      help: 'Audit client spool reports refused or ignored (malformed, out of range, or for another source)',
      registers: [registry],
    }),
  };
}
