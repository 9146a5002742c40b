import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { auditSinkConfigSchema, resolveAuditSinkConfig } from '../audit/index.ts';
import {
  ConfigError,
  connectionBudgetsSchema,
  accessLogSchema,
  durationSchema,
  timerDurationSchema,
  loadConfigFile,
  parseConfigText,
  spiffeIdSchema,
  strictObject,
  trustDomainSchema,
  resolveConfigPath,
  resolveTlsFiles,
  tlsFilesSchema,
  identityConfigSchema,
  resolveIdentityConfig,
  pathSchema,
  portSchema,
} from '../core/index.ts';

const port = portSchema;
const path = pathSchema;
const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);
const ROUTE_NAME = /^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$/;
const ADDRESS = /^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;

const routeSchema = strictObject({
  /** Route name: what the app puts in the URL host (`http://orders/...`). */
  name: z.string().regex(ROUTE_NAME, 'must be a lowercase host name'),
  /** More host names that select this route. */
  hosts: z.array(z.string().regex(ROUTE_NAME, 'must be a lowercase host name')).default([]),
  /** `host:port` of the peer sidecar's inbound listener. */
  address: z.string().regex(ADDRESS, 'must be host:port'),
  /** The SPIFFE ID the peer sidecar must present; also the token audience. */
  spiffeId: spiffeIdSchema.transform((s) => s.uri),
});

/** The schema of a sidecar config file (`config/sidecar-*.yaml`). Unknown keys are refused with a hint. */
export const sidecarConfigSchema = strictObject({
  /** This service's SPIFFE ID: the only accepted token audience, and the policy's `service`. */
  service: spiffeIdSchema.transform((s) => s.uri),
  trustDomain: trustDomainSchema,
  /** The shared `tls:` section; the sidecar always speaks TLS 1.3, so it has no `minVersion`. */
  tls: tlsFilesSchema.omit({ minVersion: true }),
  /** Enrol and renew `tls.cert`/`tls.key` over EST (docs/sidecar.md); `identity.est` defaults to `sts.url`. */
  identity: identityConfigSchema.optional(),
  sts: strictObject({
    url: z.url({ protocol: /^https$/, error: 'must be an https URL' }),
    /** SPIFFE ID the STS must present. */
    spiffeId: spiffeIdSchema.transform((s) => s.uri),
    /** Exact `iss` of accepted tokens (the STS's `issuer`). */
    issuer: z.url({ protocol: /^https$/, error: 'must be an https URL' }),
    /** Bound on every call to the STS. */
    timeout: timerDurationSchema.default(2_000),
    jwksRefresh: timerDurationSchema.default(60_000),
    /** How long the last good key set is trusted without a successful fetch; then 503. */
    jwksMaxStale: durationSchema.default(3_600_000),
    kidRefetchCooldown: timerDurationSchema.default(30_000),
    revocationsPoll: timerDurationSchema.default(15_000),
  }),
  inbound: strictObject({
    listen: strictObject({ host: z.string().min(1).default('0.0.0.0'), port: port.default(15443) }).default({
      host: '0.0.0.0',
      port: 15443,
    }),
    /** The local app, `http://127.0.0.1:<port>` (HTTP/1.1) or `h2c://127.0.0.1:<port>` (HTTP/2, prior knowledge: gRPC). */
    app: z.url({ protocol: /^(?:http|h2c)$/, error: 'must be an http:// or h2c:// URL of the local app' }),
    policy: path,
    policyReloadInterval: timerDurationSchema.default(2_000),
    maxTokenBytes: z.number().int().min(512).max(65_536).default(8192),
    maxTokenLifetime: durationSchema.default(3_600_000),
    clockSkew: durationSchema.default(30_000),
    upstreamHeadersTimeout: timerDurationSchema.default(10_000),
    upstreamBodyTimeout: timerDurationSchema.default(30_000),
    /** Size of the keep-alive pool to the app: the most requests forwarded at once. */
    upstreamConnections: z.number().int().min(1).max(4096).default(128),
    /**
     * Fair sharing of the pool between callers (by SPIFFE ID): each may have `perCaller` requests
     * at the app at once (default: half of `upstreamConnections`) and `queue` more waiting (up to
     * `queueTimeout`); past that, 429 with `Retry-After`, recorded, while other callers are served.
     */
    fairShare: strictObject({
      perCaller: z.number().int().min(1).max(4096).optional(),
      queue: z.number().int().min(0).max(100_000).default(128),
      queueTimeout: timerDurationSchema.default(5_000),
      retryAfter: timerDurationSchema.default(1_000),
    }).default({ queue: 128, queueTimeout: 5_000, retryAfter: 1_000 }),
  }),
  outbound: strictObject({
    /** Loopback only: the app's HTTP proxy (`HTTP_PROXY=http://127.0.0.1:15001`). */
    listen: strictObject({ host: z.string().default('127.0.0.1'), port: port.default(15001) }).default({
      host: '127.0.0.1',
      port: 15001,
    }),
    /** Tokens are refreshed this long before they expire (at most half their lifetime). */
    tokenRefreshBefore: durationSchema.default(60_000),
    /** After a failed token fetch, requests without a valid token get 503 at once for this long. */
    tokenRetryAfter: timerDurationSchema.default(1_000),
    upstreamHeadersTimeout: timerDurationSchema.default(10_000),
    routes: z.array(routeSchema).default([]),
  }).optional(),
  /** Prometheus `GET /metrics` on a plain-HTTP listener (loopback by default). */
  metrics: strictObject({
    listen: strictObject({ host: z.string().min(1).default('127.0.0.1'), port: port.default(15090) }).default(
      {
        host: '127.0.0.1',
        port: 15090,
      },
    ),
  }).optional(),
  /** Where audit events go: the collector (mTLS, disk spool), log lines, or memory (tests). */
  audit: auditSinkConfigSchema,
  /**
   * Per-stage connection budgets of every listener (inbound, outbound, metrics) and the shutdown
   * drain (docs/operations.md). The outbound listener takes connections from the app on loopback
   * only, so `maxConnectionsPerPeer` does not apply to it.
   */
  connections: connectionBudgetsSchema,
  /** Opt-in per-request log lines, inbound and outbound (docs/operations.md, Access logs). */
  accessLog: accessLogSchema,
  /**
   * Relayed WebSockets, inbound and outbound (docs/sidecar.md, WebSocket): closed by the sidecar
   * after `idleTimeout` without a byte either way, and `maxLifetime` after the upgrade (at most 24h).
   */
  websocket: strictObject({
    idleTimeout: timerDurationSchema.default(300_000),
    maxLifetime: timerDurationSchema.default(3_600_000),
  }).default({ idleTimeout: 300_000, maxLifetime: 3_600_000 }),
});

/** Parsed sidecar configuration: durations in ms, paths absolute. */
export type SidecarConfig = z.output<typeof sidecarConfigSchema>;
/** Sidecar configuration as written (durations as strings). */
export type SidecarConfigInput = z.input<typeof sidecarConfigSchema>;

/** Checks a configuration object and resolves relative paths against `baseDir`; throws a one-line ConfigError. */
export function parseSidecarConfig(
  raw: unknown,
  file = '<sidecar config>',
  baseDir = process.cwd(),
): SidecarConfig {
  return finish(parseConfigText(JSON.stringify(raw ?? null), file, sidecarConfigSchema), file, baseDir);
}

/** Reads a sidecar config file; relative paths in it are relative to the file. Throws ConfigError. */
export function loadSidecarConfig(file: string): SidecarConfig {
  return finish(loadConfigFile(file, sidecarConfigSchema), file, dirname(resolve(file)));
}

/** Requests one caller may have at the app at once: `fairShare.perCaller`, or half the pool. */
export function perCallerLimit(inbound: SidecarConfig['inbound']): number {
  return inbound.fairShare.perCaller ?? Math.max(1, Math.floor(inbound.upstreamConnections / 2));
}

function finish(c: SidecarConfig, file: string, baseDir: string): SidecarConfig {
  const abs = (p: string) => resolveConfigPath(p, baseDir);
  const bad = (key: string, problem: string) => new ConfigError('ERR_CONFIG_INVALID', file, key, problem);
  if (!c.service.startsWith(`spiffe://${c.trustDomain}/`))
    throw bad('service', `is outside the trust domain "${c.trustDomain}"`);
  const pool = c.inbound.upstreamConnections;
  const perCaller = perCallerLimit(c.inbound);
  if (perCaller > pool)
    throw bad(
      'inbound.fairShare.perCaller',
      `must not be larger than inbound.upstreamConnections (${pool}): one caller could take the whole pool`,
    );
  // The audit records a WebSocket's duration as the latency of its request, which is at most a day.
  if (c.websocket.maxLifetime > 86_400_000) throw bad('websocket.maxLifetime', 'must be at most 24h');
  if (c.outbound) {
    if (!LOOPBACK.has(c.outbound.listen.host))
      throw bad('outbound.listen.host', 'must be a loopback address (127.0.0.1, ::1 or localhost)');
    const seen = new Set<string>();
    c.outbound.routes.forEach((r, i) => {
      for (const h of [r.name, ...r.hosts]) {
        if (seen.has(h)) throw bad(`outbound.routes[${i}]`, `host "${h}" is already routed`);
        seen.add(h);
      }
    });
  }
  return {
    ...c,
    tls: resolveTlsFiles(c.tls, baseDir),
    inbound: {
      ...c.inbound,
      policy: abs(c.inbound.policy),
      fairShare: { ...c.inbound.fairShare, perCaller },
    },
    audit: resolveAuditSinkConfig(c.audit, baseDir),
    ...(c.identity ? { identity: resolveIdentityConfig(c.identity, baseDir)! } : {}),
  };
}
