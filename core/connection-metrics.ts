import { Counter, Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import type { BudgetClosure, ConnectionGuard } from './apply-connection-budgets.ts';

/**
 * Registers, on a part's Prometheus registry, `<prefix>_connections_open{listener}` and
 * `<prefix>_connections_closed_total{listener,reason}` (reason: `handshake`, `body`, `peer_cap`,
 * `listener_cap`, `drain`) for the listeners' guards. Read at scrape time only: nothing is added
 * to the request path.
 */
export function registerConnectionMetrics(
  registry: Registry,
  prefix: string,
  guards: Readonly<Record<string, ConnectionGuard>>,
): void {
  new Gauge({
    name: prefix + '_connections_open',
    help: 'Open connections of each listener (TLS handshakes under way included)',
    labelNames: ['listener'],
    registers: [registry],
    collect() {
      for (const [listener, guard] of Object.entries(guards)) this.set({ listener }, guard.open);
    },
  });
  const seen = new Map<string, number>();
  new Counter({
    name: prefix + '_connections_closed_total',
    help: 'Connections closed by a connection budget, by listener and reason',
    labelNames: ['listener', 'reason'],
    registers: [registry],
    collect() {
      for (const [listener, guard] of Object.entries(guards)) {
        for (const [reason, n] of Object.entries(guard.closed()) as [BudgetClosure, number][]) {
          const key = `${listener}\u0000${reason}`;
          const last = seen.get(key) ?? 0;
          if (n > last) this.inc({ listener, reason }, n - last);
          else if (last === 0) this.inc({ listener, reason }, 0);
          seen.set(key, n);
        }
      }
    },
  });
}
