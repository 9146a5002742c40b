// The plain-HTTP ops listener of the STS and the collector (as the sidecar's metrics listener):
// it opens before the part loads its certificate, keys and store, so a readiness probe gets 503
// with the reasons while they load and 200 once every check passes (docs/operations.md, Health).
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import { applyConnectionBudgets, connectionServerOptions } from './apply-connection-budgets.ts';
import type { ConnectionBudgets } from './connection-budgets.ts';
import { portSchema, strictObject } from './config.ts';
import { serveHealth } from './health.ts';
import type { ReadinessCheck } from './health.ts';

/**
 * The `metrics:` section of the STS and collector configs, as the sidecar's: a plain-HTTP listener
 * (loopback by default; a pod IP for a kubelet probe) for `/healthz`, `/readyz` and `/metrics`.
 */
export function opsListenerSchema(defaultPort: number) {
  return strictObject({
    listen: strictObject({
      host: z.string().min(1).default('127.0.0.1'),
      port: portSchema.default(defaultPort),
    }).default({ host: '127.0.0.1', port: defaultPort }),
  });
}

/** What the ops listener serves; the part fills it in as it loads. */
export interface OpsState {
  /** The readiness checks; undefined while nothing is set up (`/readyz` says `startup: starting`). */
  checks?: Readonly<Record<string, ReadinessCheck>>;
  /** The part's metrics registry once it exists (`/metrics` answers 503 before). */
  metrics?: { readonly registry: Registry; readonly beforeScrape?: () => void };
}

/** A listening ops listener. */
export interface OpsListener {
  /** `http://<host>:<port>` it listens on. */
  readonly url: string;
  readonly port: number;
  readonly state: OpsState;
  /** Stops accepting and drains (bounded by the part's `connections.drainTimeout`). */
  close(): Promise<void>;
}

/**
 * Opens the ops listener on `listen` (port 0 picks a free port), serving `GET /healthz`,
 * `GET /readyz` (core/health.ts) and `GET /metrics`; anything else is 404.
 */
export async function startOpsListener(
  listen: { readonly host: string; readonly port: number },
  connections: ConnectionBudgets,
): Promise<OpsListener> {
  const state: OpsState = {};
  const server = createServer(connectionServerOptions(connections), (req, res) => serveOps(req, res, state));
  const guard = applyConnectionBudgets(server, connections, {
    timeoutBody: (message) => JSON.stringify({ error: 'request_timeout', message }),
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const host = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  let closed: Promise<void> | undefined;
  return {
    url: `http://${host}:${port}`,
    port,
    state,
    close() {
      closed ??= Promise.all([
        new Promise<void>((resolve) => server.close(() => resolve())),
        guard.drain(),
      ]).then(() => undefined);
      return closed;
    },
  };
}

function serveOps(req: IncomingMessage, res: ServerResponse, state: OpsState): void {
  if (serveHealth(req, res, () => state.checks)) return;
  if (req.url !== '/metrics') {
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not_found"}');
    return;
  }
  if (req.method !== 'GET') {
    res
      .writeHead(405, { allow: 'GET', 'content-type': 'application/json' })
      .end('{"error":"method_not_allowed"}');
    return;
  }
  const metrics = state.metrics;
  if (!metrics) {
    res
      .writeHead(503, { 'retry-after': '1', 'content-type': 'application/json' })
      .end('{"error":"starting"}');
    return;
  }
  try {
    metrics.beforeScrape?.();
  } catch {
    // A gauge refresh that fails leaves the last values; the scrape still answers.
  }
  metrics.registry.metrics().then(
    (text) =>
      res
        .writeHead(200, { 'content-type': metrics.registry.contentType, 'cache-control': 'no-store' })
        .end(text),
    () => res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"metrics_failed"}'),
  );
}
