// Liveness and readiness, with one meaning on every server (docs/operations.md, Health): /healthz
// answers while the process serves at all; /readyz answers 200 only when every check passes.
import type { IncomingMessage, ServerResponse } from 'node:http';

/** One readiness condition: `undefined` when it holds, else a short reason (never a secret). */
export type ReadinessCheck = () => string | undefined;

/** What `/readyz` answers: 200 `{"status":"ready",…}` or 503 `{"status":"not ready",…}`. */
export interface ReadinessReport {
  readonly ready: boolean;
  readonly status: 200 | 503;
  /** `{"status":…,"checks":{"<name>":"ok"|"<reason>"}}` */
  readonly body: string;
}

/**
 * Runs every check (none may throw: a throwing check counts as failing with its message) and
 * builds the `/readyz` answer; `checks` undefined means the part is still starting.
 */
export function readinessReport(
  checks: Readonly<Record<string, ReadinessCheck>> | undefined,
): ReadinessReport {
  const results: Record<string, string> = {};
  let ready = checks !== undefined;
  if (!checks) results.startup = 'starting';
  for (const [name, check] of Object.entries(checks ?? {})) {
    let problem: string | undefined;
    try {
      problem = check();
    } catch (err) {
      problem = String(err instanceof Error ? err.message : (err ?? 'the check failed'))
        .split('\n')[0]!
        .slice(0, 200);
    }
    results[name] = problem ?? 'ok';
    if (problem !== undefined) ready = false;
  }
  return {
    ready,
    status: ready ? 200 : 503,
    body: JSON.stringify({ status: ready ? 'ready' : 'not ready', checks: results }),
  };
}

/** The `/healthz` body: the process is up and its event loop turns. */
export const LIVENESS_BODY = '{"status":"ok"}';

/**
 * Serves `GET /healthz` and `GET /readyz` on a plain node:http listener (a sidecar's metrics
 * listener); true when it answered, false for any other request (the caller routes those).
 */
export function serveHealth(
  req: IncomingMessage,
  res: ServerResponse,
  checks: () => Readonly<Record<string, ReadinessCheck>> | undefined,
): boolean {
  if (req.url !== '/healthz' && req.url !== '/readyz') return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res
      .writeHead(405, { allow: 'GET, HEAD', 'content-type': 'application/json' })
      .end('{"error":"method_not_allowed"}');
    return true;
  }
  const { status, body } =
    req.url === '/healthz' ? { status: 200, body: LIVENESS_BODY } : readinessReport(checks());
  res.writeHead(status, {
    'content-type': 'application/json',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(body),
  });
  res.end(req.method === 'HEAD' ? undefined : body);
  return true;
}
