import { Counter, Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import type { ClosedBy, Tunnels } from './tunnels.ts';

/**
 * `portcullis_sidecar_websockets_open{side}` and
 * `portcullis_sidecar_websockets_closed_total{side,closed_by}`, read from the tunnels at scrape
 * time (`side`: `inbound` or `outbound`).
 */
export function registerTunnelMetrics(registry: Registry, sides: Readonly<Record<string, Tunnels>>): void {
  new Gauge({
    name: 'portcullis_sidecar_websockets_open',
    help: 'Relayed WebSockets open, by side',
    labelNames: ['side'],
    registers: [registry],
    collect() {
      for (const [side, tunnels] of Object.entries(sides)) this.set({ side }, tunnels.size);
    },
  });
  const seen = new Map<string, number>();
  new Counter({
    name: 'portcullis_sidecar_websockets_closed_total',
    help: 'Relayed WebSockets ended, by side and who closed them (client, upstream, idle, lifetime, shutdown)',
    labelNames: ['side', 'closed_by'],
    registers: [registry],
    collect() {
      for (const [side, tunnels] of Object.entries(sides)) {
        for (const [closedBy, n] of Object.entries(tunnels.closed()) as [ClosedBy, number][]) {
          const key = `${side}\u0000${closedBy}`;
          const last = seen.get(key) ?? 0;
          this.inc({ side, closed_by: closedBy }, Math.max(0, n - last));
          seen.set(key, n);
        }
      }
    },
  });
}
