import { z } from 'zod';
import { dirname, resolve } from 'node:path';
import {
  connectionBudgetsSchema,
  opsListenerSchema,
  durationSchema,
  timerDurationSchema,
  loadConfigFile,
  parseConfigText,
  strictObject,
  tlsFilesSchema,
  identityConfigSchema,
  resolveIdentityConfig,
  resolveConfigPath,
  resolveTlsFiles,
  pathSchema,
  portSchema,
} from '../../core/index.ts';

const port = portSchema;
const path = pathSchema;

/** The schema of the collector's YAML config (docs/audit.md). Unknown keys are refused with a hint. */
export const auditConfigSchema = strictObject({
  listen: strictObject({
    host: z.string().min(1).default('127.0.0.1'),
    port: port.default(8444),
  }).default({ host: '127.0.0.1', port: 8444 }),
  tls: tlsFilesSchema,
  /** Enrol and renew `tls.cert`/`tls.key` over EST (docs/audit.md); `identity.est` is required. */
  identity: identityConfigSchema.optional(),
  /** Identity registry: a directory of `*.yaml` files or one file. */
  identities: path,
  /** Names the log in checkpoints and signs as; e.g. `example.org/portcullis/audit`. */
  origin: z
    .string()
    .regex(/^[^\s+]{1,255}$/, 'must be one word without spaces or "+" (e.g. example.org/audit)'),
  /** Holds the collector's checkpoint key (generated on first start, 0600) and its latest checkpoint. */
  dataDir: path,
  /** `file:DIR` (relative DIR is relative to this file) or `postgres://user@host:port/db`. */
  store: z.string().regex(/^(file:.+|postgres(ql)?:\/\/.+)$/, 'must be file:DIR or postgres://…'),
  /** PostgreSQL table (optionally schema-qualified) for a postgres store. */
  table: z
    .string()
    .regex(/^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$/, 'must be a lowercase SQL identifier')
    .default('audit_records'),
  /**
   * Verifier keys (`name+id+key`, as in `checkpoint.vkey`) of the other collectors sharing the
   * store: records sealed by them are adopted too. The collector's own key is always trusted.
   */
  trustedKeys: z
    .array(
      z
        .string()
        .regex(/^[^\s+]{1,255}\+[0-9a-f]{8}\+[A-Za-z0-9+/]+=*$/, 'must be a verifier key name+id+key'),
    )
    .max(64)
    .default([]),
  idempotency: strictObject({
    /** How long a batch's Idempotency-Key is remembered. */
    retention: durationSchema.default(86_400_000),
    /** Most keys a file store keeps in memory (oldest dropped first). */
    maxKeys: z.number().int().min(1000).max(100_000_000).default(1_000_000),
  }).default({ retention: 86_400_000, maxKeys: 1_000_000 }),
  checkpoint: strictObject({
    /** Sign a checkpoint once this many records were appended since the last one… */
    everyRecords: z.number().int().min(1).max(10_000_000).default(1000),
    /** …or this long after the last one, if anything was appended. */
    interval: timerDurationSchema.default(10_000),
  }).default({ everyRecords: 1000, interval: 10_000 }),
  /**
   * The ops listener (plain HTTP, loopback by default): `/healthz`, `/readyz` and `/metrics`, open
   * before the slow loading so a probe sees 503 with the reasons until it is done (docs/operations.md).
   */
  metrics: opsListenerSchema(15094).optional(),
  /** Per-stage connection budgets of the listener and the shutdown drain (docs/operations.md). */
  connections: connectionBudgetsSchema,
  limits: strictObject({
    /** Largest accepted request body in bytes. */
    bodyBytes: z
      .number()
      .int()
      .min(1024)
      .max(64 * 1_048_576)
      .default(1_048_576),
    /** Most events in one `POST /v1/events`. */
    batchEvents: z.number().int().min(1).max(100_000).default(1000),
    /** Most records one query returns. */
    queryRecords: z.number().int().min(1).max(100_000).default(1000),
    /** Request body bytes one source may post per `sourceInterval`; past it, 429 with Retry-After. */
    sourceBytes: z
      .number()
      .int()
      .min(1024)
      .max(1024 * 1_048_576)
      .default(32 * 1_048_576),
    sourceInterval: timerDurationSchema.default(1000),
    /** Live tails (`GET /v1/events/stream`) one caller may hold open at once; past it, 429. */
    liveTails: z.number().int().min(1).max(1000).default(4),
    /** Sources whose latest spool report is kept in memory (`GET /v1/sources`); the least recently heard from goes first. */
    sources: z.number().int().min(1).max(1_000_000).default(10_000),
  }).default({
    bodyBytes: 1_048_576,
    batchEvents: 1000,
    queryRecords: 1000,
    sourceBytes: 32 * 1_048_576,
    sourceInterval: 1000,
    liveTails: 4,
    sources: 10_000,
  }),
  /** File store only: bounds of one segment file. */
  segments: strictObject({
    records: z.number().int().min(1).max(10_000_000).default(100_000),
    bytes: z
      .number()
      .int()
      .min(4096)
      .max(4096 * 1_048_576)
      .default(64 * 1_048_576),
  }).default({ records: 100_000, bytes: 64 * 1_048_576 }),
});

/** Parsed collector configuration: durations in ms, paths absolute. */
export type AuditConfig = z.output<typeof auditConfigSchema>;
/** Collector configuration as written (durations as strings); the input of {@link parseAuditConfig}. */
export type AuditConfigInput = z.input<typeof auditConfigSchema>;

/**
 * Checks a configuration object (as YAML would give it) and resolves relative paths against
 * `baseDir`. Throws a one-line `ConfigError` naming `file`, the key and the problem.
 */
export function parseAuditConfig(
  raw: unknown,
  file = '<audit config>',
  baseDir = process.cwd(),
): AuditConfig {
  return finish(parseConfigText(JSON.stringify(raw ?? null), file, auditConfigSchema), baseDir);
}

/** Reads the collector's YAML config; relative paths in it are relative to the file. Throws `ConfigError`. */
export function loadAuditConfig(file: string): AuditConfig {
  return finish(loadConfigFile(file, auditConfigSchema), dirname(resolve(file)));
}

function finish(config: AuditConfig, baseDir: string): AuditConfig {
  const abs = (p: string) => resolveConfigPath(p, baseDir);
  return {
    ...config,
    tls: resolveTlsFiles(config.tls, baseDir),
    ...(config.identity ? { identity: resolveIdentityConfig(config.identity, baseDir)! } : {}),
    identities: abs(config.identities),
    dataDir: abs(config.dataDir),
    store: config.store.startsWith('file:') ? `file:${abs(config.store.slice(5))}` : config.store,
  };
}
