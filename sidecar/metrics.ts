import { Counter, Gauge, Registry } from 'prom-client';
import { collectProcessMetrics } from '../core/index.ts';

/** Figures the sidecar parts keep as plain counters; read only when Prometheus scrapes. */
export interface SidecarMetricSources {
  readonly policy: () => { reloads: number; failures: number };
  readonly tls: () => { reloads: number; failures: number };
  readonly jwks: () => { fetches: number; failures: number; ageMs: number | undefined };
  readonly revocations: () => { failures: number };
  readonly tokens: () => { fetches: number; failures: number } | undefined;
}

/** The sidecar's Prometheus metrics (docs/sidecar.md § Metrics). */
export interface SidecarMetrics {
  readonly registry: Registry;
  /** Counts one inbound outcome; cheap (a map increment), exported at scrape time. */
  record(decision: 'allow' | 'deny', reason: string, rule: string | undefined): void;
  /**
   * The observer of upstream exchange durations (seconds) for `side` (`inbound`: the local app;
   * `outbound`: a peer sidecar) and `route` (`app`, or the outbound route name). Resolve it once
   * per route: each observation is then an array increment.
   */
  upstream(side: 'inbound' | 'outbound', route: string): (seconds: number) => void;
}

/** Buckets of `portcullis_sidecar_upstream_duration_seconds`: 0.5 ms to 10 s. */
export const UPSTREAM_BUCKETS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/**
 * Builds the metrics: decisions by decision/reason/rule, policy and certificate reloads and
 * refused files, JWKS fetches/failures/age, failed revocation polls, outbound token fetches. Request-path
 * counting is a Map increment; prom-client objects are only touched at scrape time.
 */
export function createSidecarMetrics(sources: SidecarMetricSources, withDefaults = true): SidecarMetrics {
  const registry = new Registry();
  if (withDefaults) collectProcessMetrics(registry, 'portcullis_sidecar_');
  const counts = new Map<
    string,
    { labels: { decision: string; reason: string; rule: string }; n: number; seen: number }
  >();
  new Counter({
    name: 'portcullis_sidecar_decisions_total',
    help: 'Inbound requests by decision, reason code and matched rule',
    labelNames: ['decision', 'reason', 'rule'],
    registers: [registry],
    collect() {
      for (const c of counts.values()) {
        if (c.n > c.seen) this.inc(c.labels, c.n - c.seen);
        c.seen = c.n;
      }
    },
  });
  const upstream = latencyHistogram(
    registry,
    'portcullis_sidecar_upstream_duration_seconds',
    'Upstream exchanges (request sent to response fully relayed), by side and route',
    UPSTREAM_BUCKETS,
  );
  // Figures the parts keep as running totals: exported as counters (by their increase since the last scrape).
  const counter = (name: string, help: string, read: () => number | undefined) => {
    let last = 0;
    return new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        const v = read();
        if (v === undefined) return;
        if (v > last) this.inc(v - last);
        last = v;
      },
    });
  };
  const gauge = (name: string, help: string, read: () => number | undefined) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        const v = read();
        if (v !== undefined) this.set(v);
      },
    });
  counter(
    'portcullis_sidecar_policy_reloads_total',
    'Policy files that took effect after start',
    () => sources.policy().reloads,
  );
  counter(
    'portcullis_sidecar_policy_reload_failures_total',
    'Changed policy files refused (previous policy kept)',
    () => sources.policy().failures,
  );
  counter(
    'portcullis_sidecar_certificate_reloads_total',
    'Certificate reloads that took effect',
    () => sources.tls().reloads,
  );
  counter(
    'portcullis_sidecar_certificate_reload_failures_total',
    'Changed certificate files refused',
    () => sources.tls().failures,
  );
  counter('portcullis_sidecar_jwks_fetches_total', 'Successful JWKS fetches', () => sources.jwks().fetches);
  counter(
    'portcullis_sidecar_jwks_fetch_failures_total',
    'Failed or refused JWKS fetches',
    () => sources.jwks().failures,
  );
  gauge('portcullis_sidecar_jwks_age_seconds', 'Age of the key set in service', () => {
    const a = sources.jwks().ageMs;
    return a === undefined ? undefined : a / 1000;
  });
  counter(
    'portcullis_sidecar_revocation_poll_failures_total',
    'Failed revocation list polls',
    () => sources.revocations().failures,
  );
  counter(
    'portcullis_sidecar_outbound_token_fetches_total',
    'Outbound tokens fetched from the STS',
    () => sources.tokens()?.fetches,
  );
  counter(
    'portcullis_sidecar_outbound_token_failures_total',
    'Failed outbound token fetches',
    () => sources.tokens()?.failures,
  );
  return {
    registry,
    record(decision, reason, rule) {
      const key = `${decision}|${reason}|${rule ?? ''}`;
      let c = counts.get(key);
      if (!c) {
        if (counts.size >= 10_000) return;
        c = { labels: { decision, reason, rule: rule ?? '' }, n: 0, seen: 0 };
        counts.set(key, c);
      }
      c.n++;
    },
    upstream: (side, route) => upstream(side, route),
  };
}

/**
 * A histogram kept as plain arrays on the request path and rendered by prom-client's registry at
 * scrape time (prom-client's own `observe` hashes the label set on every call).
 */
function latencyHistogram(
  registry: Registry,
  name: string,
  help: string,
  buckets: readonly number[],
): (side: string, route: string) => (seconds: number) => void {
  const series = new Map<string, { side: string; route: string; counts: Float64Array; sum: number }>();
  const metric = {
    name,
    help,
    type: 'histogram',
    aggregator: 'sum',
    async get() {
      const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
      for (const s of series.values()) {
        let cumulative = 0;
        for (let i = 0; i < buckets.length; i++) {
          cumulative += s.counts[i]!;
          values.push({
            metricName: `${name}_bucket`,
            labels: { le: buckets[i]!, side: s.side, route: s.route },
            value: cumulative,
          });
        }
        cumulative += s.counts[buckets.length]!;
        values.push({
          metricName: `${name}_bucket`,
          labels: { le: '+Inf', side: s.side, route: s.route },
          value: cumulative,
        });
        values.push({ metricName: `${name}_sum`, labels: { side: s.side, route: s.route }, value: s.sum });
        values.push({
          metricName: `${name}_count`,
          labels: { side: s.side, route: s.route },
          value: cumulative,
        });
      }
      return { name, help, type: 'histogram', values, aggregator: 'sum' };
    },
    reset() {
      for (const s of series.values()) {
        s.counts.fill(0);
        s.sum = 0;
      }
    },
  };
  registry.registerMetric(metric as unknown as Parameters<Registry['registerMetric']>[0]);
  return (side, route) => {
    const key = `${side}|${route}`;
    let s = series.get(key);
    if (!s) {
      s = { side, route, counts: new Float64Array(buckets.length + 1), sum: 0 };
      series.set(key, s);
    }
    const one = s;
    return (seconds) => {
      let i = 0;
      while (i < buckets.length && seconds > buckets[i]!) i++;
      one.counts[i] = one.counts[i]! + 1;
      one.sum += seconds;
    };
  };
}
