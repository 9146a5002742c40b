import { z } from 'zod';
import { dirname, resolve } from 'node:path';
import {
  ConfigError,
  TOKEN_TTL_CAP_MS,
  connectionBudgetsSchema,
  opsListenerSchema,
  accessLogSchema,
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
} from '../core/index.ts';
import { auditSinkConfigSchema, resolveAuditSinkConfig } from '../audit/index.ts';
import { MASTER_KEY_ENV } from './master-key.ts';

const port = portSchema;
const path = pathSchema;
const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name');

const fileKeystoreSchema = strictObject({
  type: z.literal('file'),
  /** Directory holding `keyring.json` (private keys sealed with AES-256-GCM). */
  dir: path,
  /** Environment variable that holds the base64 master key. */
  masterKeyEnv: envName.default(MASTER_KEY_ENV),
});

const vaultKeystoreSchema = strictObject({
  type: z.literal('vault'),
  address: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }),
  /** KV v2 mount, e.g. `secret`. */
  mount: z.string().regex(/^[A-Za-z0-9_-]+(?:\/[A-Za-z0-9_-]+)*$/, 'must be a mount path like "secret"'),
  /** Secret path under the mount, e.g. `portcullis/sts/keyring`. */
  path: z.string().regex(/^[A-Za-z0-9_.-]+(?:\/[A-Za-z0-9_.-]+)*$/, 'must be a path like "portcullis/sts"'),
  /** Environment variable that holds the Vault token. */
  tokenEnv: envName.default('VAULT_TOKEN'),
  /** Optional CA bundle (PEM file) to trust for an https Vault address. */
  caFile: path.optional(),
  namespace: z.string().optional(),
});

/** The schema of `sts.yaml` (docs/sts.md). Unknown keys are refused with a hint. */
export const stsConfigSchema = strictObject({
  listen: strictObject({
    host: z.string().min(1).default('127.0.0.1'),
    port: port.default(8443),
  }),
  tls: tlsFilesSchema,
  /** Enrol and renew `tls.cert`/`tls.key` over EST (docs/sts.md); `identity.est` defaults to this STS's own listener. */
  identity: identityConfigSchema.optional(),
  /** Identity registry: a directory of `*.yaml` files or one file. */
  identities: path,
  /** `iss` of every token and the RFC 8414 `issuer`; an https URL without query or fragment. */
  issuer: z
    .url({ protocol: /^https$/, error: 'must be an https URL' })
    .refine((u) => !u.includes('?') && !u.includes('#'), 'must have no query or fragment'),
  keystore: z.discriminatedUnion('type', [fileKeystoreSchema, vaultKeystoreSchema], {
    error: 'type must be "file" or "vault"',
  }),
  keys: strictObject({
    algorithm: z.enum(['ES256']).default('ES256'),
    /** How long a key signs before the next one takes over. */
    rotationPeriod: durationSchema.default(86_400_000),
    /** Max-age the JWKS is served with; a new key is published at least this long before it signs. */
    jwksCachePeriod: durationSchema.default(300_000),
    /** Allowed clock skew of verifiers; retiring keys stay published this much longer. */
    clockSkew: durationSchema.default(60_000),
  }).default({ algorithm: 'ES256', rotationPeriod: 86_400_000, jwksCachePeriod: 300_000, clockSkew: 60_000 }),
  tokens: strictObject({
    /** Global TTL cap on top of each registry entry's `tokenTtl`; at most 1h. */
    ttlCap: durationSchema.default(TOKEN_TTL_CAP_MS),
    /**
     * Sign on a worker thread: `auto` does when the machine has at least 2 cores (decision 0015;
     * on one core the worker only adds hand-offs).
     */
    signingWorker: z.enum(['auto', 'on', 'off']).default('auto'),
  }).default({ ttlCap: TOKEN_TTL_CAP_MS, signingWorker: 'auto' }),
  rateLimit: strictObject({
    /** Sustained token requests per second per caller SPIFFE ID. */
    perSecond: z.number().positive().max(1_000_000).default(200),
    /** Bucket size: requests a caller may burst above the sustained rate. */
    burst: z.number().int().positive().max(1_000_000).default(400),
    /** Most caller IDs tracked at once; the least recently seen is dropped beyond it. */
    maxTracked: z.number().int().positive().max(10_000_000).default(100_000),
  }).default({ perSecond: 200, burst: 400, maxTracked: 100_000 }),
  /** Optional CRL to feed the serial deny-list (e.g. certs/crl.pem from `portcullis certs revoke`). */
  revocation: strictObject({
    crl: path.optional(),
    /** PEM of the CRL's signer; defaults to the first intermediate of `tls.cert`. */
    crlIssuer: path.optional(),
    pollInterval: timerDurationSchema.default(30_000),
    /** How long after its revocation date a CRL serial stays on the deny-list. */
    entryLifetime: durationSchema.default(30 * 86_400_000),
  }).default({ pollInterval: 30_000, entryLifetime: 30 * 86_400_000 }),
  /**
   * Durable state (revocations, join tokens): `file` (the default, in the file keystore's
   * directory), `postgres` (shared by replicas) or `memory` (forgotten on restart).
   */
  state: z
    .discriminatedUnion(
      'type',
      [
        strictObject({ type: z.literal('file'), dir: path }),
        strictObject({
          type: z.literal('postgres'),
          /** Environment variable holding the connection string (it may carry a password). */
          urlEnv: envName.default('PORTCULLIS_STATE_DATABASE_URL'),
          schema: z
            .string()
            .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lowercase SQL identifier')
            .default('portcullis'),
        }),
        strictObject({ type: z.literal('memory') }),
      ],
      { error: 'type must be "file", "postgres" or "memory"' },
    )
    .optional(),
  /** How often the STS re-reads revocations other replicas wrote to the shared state. */
  statePollInterval: timerDurationSchema.default(2_000),
  /**
   * Online issuance (EST, RFC 7030): the CA directory whose intermediate signs workload
   * certificates. Without it the `/.well-known/est/*` routes answer 404.
   */
  ca: strictObject({
    dir: path,
    /** Cap over every entry's `svidTtl`. */
    svidTtlCap: durationSchema.default(86_400_000),
    /** Longest join token an admin may create. */
    joinTokenTtlCap: durationSchema.default(86_400_000),
    /** Enrolments and renewals per second per workload, sustained and burst. */
    perSecond: z.number().positive().max(1_000_000).default(1),
    burst: z.number().int().positive().max(1_000_000).default(10),
  }).optional(),
  /** Largest accepted request body in bytes. */
  bodyLimit: z.number().int().min(256).max(1_048_576).default(8192),
  /**
   * The ops listener (plain HTTP, loopback by default): `/healthz`, `/readyz` and `/metrics`, open
   * before the slow loading so a probe sees 503 with the reasons until it is done (docs/operations.md).
   */
  metrics: opsListenerSchema(15093).optional(),
  /** Per-stage connection budgets of the listener and the shutdown drain (docs/operations.md). */
  connections: connectionBudgetsSchema,
  /** Opt-in per-request log lines (docs/operations.md, Access logs). */
  accessLog: accessLogSchema,
  /** Where audit events go: the collector (mTLS, disk spool), log lines, or memory (tests). */
  audit: auditSinkConfigSchema,
});

/** Parsed STS configuration: durations in milliseconds, paths resolved against the config file's directory. */
export type StsConfig = z.output<typeof stsConfigSchema>;
/** STS configuration as written (durations as strings); the input of {@link parseStsConfig}. */
export type StsConfigInput = z.input<typeof stsConfigSchema>;

/**
 * Checks a configuration object (as YAML would give it) and resolves relative paths against
 * `baseDir`. Throws a one-line {@link ConfigError} naming `file`, the key and the problem.
 */
export function parseStsConfig(raw: unknown, file = '<sts config>', baseDir = process.cwd()): StsConfig {
  // JSON is YAML: going through parseConfigText gives object configs the same one-line errors as files.
  return finish(parseConfigText(JSON.stringify(raw ?? null), file, stsConfigSchema), file, baseDir);
}

/** Reads `sts.yaml`; relative paths in it are relative to the file. Throws {@link ConfigError}. */
export function loadStsConfig(file: string): StsConfig {
  return finish(loadConfigFile(file, stsConfigSchema), file, dirname(resolve(file)));
}

function finish(config: StsConfig, file: string, baseDir: string): StsConfig {
  const abs = (p: string) => resolveConfigPath(p, baseDir);
  if (config.tokens.ttlCap > TOKEN_TTL_CAP_MS)
    throw new ConfigError('ERR_CONFIG_INVALID', file, 'tokens.ttlCap', 'exceeds the global cap of 1h');
  if (config.keys.rotationPeriod <= config.keys.jwksCachePeriod)
    throw new ConfigError(
      'ERR_CONFIG_INVALID',
      file,
      'keys.rotationPeriod',
      'must be longer than keys.jwksCachePeriod (a key is published one cache period before it signs)',
    );
  return {
    ...config,
    tls: resolveTlsFiles(config.tls, baseDir),
    ...(config.identity ? { identity: resolveIdentityConfig(config.identity, baseDir)! } : {}),
    identities: abs(config.identities),
    audit: resolveAuditSinkConfig(config.audit, baseDir),
    ...(config.state?.type === 'file' ? { state: { ...config.state, dir: abs(config.state.dir) } } : {}),
    ...(config.ca ? { ca: { ...config.ca, dir: abs(config.ca.dir) } } : {}),
    revocation: {
      ...config.revocation,
      ...(config.revocation.crl ? { crl: abs(config.revocation.crl) } : {}),
      ...(config.revocation.crlIssuer ? { crlIssuer: abs(config.revocation.crlIssuer) } : {}),
    },
    keystore:
      config.keystore.type === 'file'
        ? { ...config.keystore, dir: abs(config.keystore.dir) }
        : { ...config.keystore, ...(config.keystore.caFile ? { caFile: abs(config.keystore.caFile) } : {}) },
  };
}
