import { collectDefaultMetrics } from 'prom-client';
import type { Registry } from 'prom-client';

/**
 * prom-client's default gauges whose names end in `_total`, a suffix the Prometheus naming rules
 * (and `promtool check metrics`) keep for counters. Each repeats the sum of a gauge it registers
 * beside it, labelled by type (`nodejs_active_handles{type}` …), so dropping them loses nothing.
 */
const MISNAMED_GAUGES = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

/**
 * Registers the Node process metrics (CPU, memory, heap, event-loop lag, GC, file descriptors,
 * active handles by type) on `registry`, every name starting with `prefix` (`portcullis_<part>_`),
 * so that parts sharing one Prometheus never collide and every page passes `promtool check metrics`.
 */
export function collectProcessMetrics(registry: Registry, prefix: string): void {
  if (!/^[a-z][a-z0-9_]*_$/.test(prefix))
    throw new TypeError(`"prefix" must be snake_case ending in "_", got ${JSON.stringify(prefix)}`);
  collectDefaultMetrics({ register: registry, prefix });
  for (const name of MISNAMED_GAUGES) registry.removeSingleMetric(`${prefix}${name}`);
}
