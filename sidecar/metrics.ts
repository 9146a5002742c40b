import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

/** Figures the sidecar parts keep as plain counters; read only when Prometheus scrapes. */
export interface SidecarMetricSources {
  readonly policy: () => { reloads: number; failures: number; hash: string };
  readonly tls: () => { reloads: number; failures: number };
  readonly jwks: () => { fetches: number; failures: number; ageMs: number | undefined };
  readonly revocations: () => { polls: number; failures: number };
  readonly tokens: () => { fetches: number; failures: number; cached: number } | undefined;
}

/** The sidecar's Prometheus metrics (DESIGN.md § Operations). */
export interface SidecarMetrics {
  readonly registry: Registry;
  /** Counts one inbound outcome; cheap (a map increment), exported at scrape time. */
  record(decision: 'allow' | 'deny', reason: string, rule: string | undefined): void;
}

/**
 * Builds the metrics: decisions by decision/reason/rule, policy and certificate reloads and
 * refused files, JWKS fetches/failures/age, revocation polls, outbound token fetches. Request-path
 * counting is a Map increment; prom-client objects are only touched at scrape time.
 */
export function createSidecarMetrics(sources: SidecarMetricSources, withDefaults = true): SidecarMetrics {
  const registry = new Registry();
  if (withDefaults) collectDefaultMetrics({ register: registry, prefix: 'portcullis_sidecar_' });
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
  gauge(
    'portcullis_sidecar_policy_reloads_total',
    'Policy files that took effect after start',
    () => sources.policy().reloads,
  );
  gauge(
    'portcullis_sidecar_policy_reload_failures_total',
    'Changed policy files refused (previous policy kept)',
    () => sources.policy().failures,
  );
  gauge(
    'portcullis_sidecar_certificate_reloads_total',
    'Certificate reloads that took effect',
    () => sources.tls().reloads,
  );
  gauge(
    'portcullis_sidecar_certificate_reload_failures_total',
    'Changed certificate files refused',
    () => sources.tls().failures,
  );
  gauge('portcullis_sidecar_jwks_fetches_total', 'Successful JWKS fetches', () => sources.jwks().fetches);
  gauge(
    'portcullis_sidecar_jwks_fetch_failures_total',
    'Failed or refused JWKS fetches',
    () => sources.jwks().failures,
  );
  gauge('portcullis_sidecar_jwks_age_seconds', 'Age of the key set in service', () => {
    const a = sources.jwks().ageMs;
    return a === undefined ? undefined : a / 1000;
  });
  gauge(
    'portcullis_sidecar_revocation_poll_failures_total',
    'Failed revocation list polls',
    () => sources.revocations().failures,
  );
  gauge(
    'portcullis_sidecar_outbound_token_fetches_total',
    'Outbound tokens fetched from the STS',
    () => sources.tokens()?.fetches,
  );
  gauge(
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
  };
}
