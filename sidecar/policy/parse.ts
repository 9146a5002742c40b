import { createHash } from 'node:crypto';
import { z } from 'zod';
import { ConfigError, parseConfigText, spiffeIdSchema, strictObject } from '../../core/index.ts';

/** Whether decisions are enforced or only recorded. */
export type PolicyMode = 'enforce' | 'audit';

/** One rule of a policy file, normalised: subjects are SPIFFE IDs, `role:<name>` or `*`. */
export interface PolicyRule {
  readonly id: string;
  readonly effect: 'allow' | 'deny';
  /** SPIFFE ID URIs, `role:<name>` references, or the single wildcard `*`. */
  readonly subjects: readonly string[];
  /** Upper-case methods, or `['*']` for any. */
  readonly methods: readonly string[];
  /** Path patterns: literal segments, `:param` (one segment) and a final `*` (the rest). */
  readonly paths: readonly string[];
}

/** A parsed policy file (docs/sidecar.md § Policy files). `hash` is `sha256:<hex>` of the file's bytes. */
export interface Policy {
  readonly service: string;
  readonly mode: PolicyMode;
  /** Role name → member SPIFFE IDs. */
  readonly roles: ReadonlyMap<string, readonly string[]>;
  readonly rules: readonly PolicyRule[];
  readonly hash: string;
  readonly file: string;
}

const ID = /^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$/;
const METHOD = /^(?:[A-Z]{1,16}|\*)$/;
// Segments a path pattern may hold: literal unreserved text, `:param`, or a final `*`.
const PATTERN =
  /^(?:\/\*|(?:\/(?:[A-Za-z0-9_~-][A-Za-z0-9._~-]*|\.[A-Za-z0-9_~-][A-Za-z0-9._~-]*|:[A-Za-z_][A-Za-z0-9_]*))+(?:\/\*|\/)?|\/)$/;

// A gRPC service (`pkg.Service`) or one of its methods (`pkg.Service/Method`).
const GRPC_NAME = /^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?:\/[A-Za-z_][A-Za-z0-9_]*)?$/;

const ruleSchema = strictObject({
  id: z.string().regex(ID, 'must be lowercase letters, digits, ".", "_" and "-"'),
  effect: z.enum(['allow', 'deny']).optional(),
  role: z.string().optional(),
  subjects: z
    .array(z.union([z.literal('*'), spiffeIdSchema.transform((s) => s.uri)]))
    .min(1)
    .optional(),
  methods: z.array(z.string().regex(METHOD, 'must be an upper-case HTTP method or "*"')).min(1).optional(),
  paths: z
    .array(
      z
        .string()
        .regex(
          PATTERN,
          'must be a path pattern of literal segments, ":param" and a final "/*" (no "..", "//" or encoded bytes)',
        ),
    )
    .min(1)
    .optional(),
  /** gRPC shorthand: `pkg.Service` (every method: `/pkg.Service/*`) or `pkg.Service/Method`. */
  grpc: z
    .array(z.string().regex(GRPC_NAME, 'must be a gRPC service "pkg.Service" or method "pkg.Service/Method"'))
    .min(1)
    .optional(),
});

const policySchema = strictObject({
  service: spiffeIdSchema,
  mode: z.enum(['enforce', 'audit']),
  roles: z
    .record(
      z.string().regex(ID, 'role names are lowercase letters, digits, ".", "_" and "-"'),
      z.array(spiffeIdSchema).min(1),
    )
    .optional(),
  rules: z.array(ruleSchema),
});

/**
 * Parses a policy file's text. Every failure is a one-line {@link ConfigError}
 * (`file: rules[2].role: …`): unknown keys, bad patterns, duplicate rule ids, a rule naming both
 * or neither of `role` and `subjects`, a role that is not declared, or a `service` other than
 * `expectedService` when one is given.
 */
export function parsePolicy(text: string, file: string, expectedService?: string): Policy {
  const parsed = parseConfigText(text, file, policySchema);
  const invalid = (key: string, problem: string) => new ConfigError('ERR_CONFIG_INVALID', file, key, problem);
  if (expectedService !== undefined && parsed.service.uri !== expectedService)
    throw invalid('service', `"${parsed.service.uri}" is not this sidecar's service "${expectedService}"`);
  const roles = new Map<string, readonly string[]>();
  for (const [name, members] of Object.entries(parsed.roles ?? {}))
    roles.set(name, [...new Set(members.map((m) => m.uri))]);
  const seen = new Set<string>();
  const rules = parsed.rules.map((r, i): PolicyRule => {
    const at = `rules[${i}]`;
    if (seen.has(r.id)) throw invalid(`${at}.id`, `duplicate rule id "${r.id}"`);
    seen.add(r.id);
    if ((r.role === undefined) === (r.subjects === undefined))
      throw invalid(at, 'needs exactly one of "role" or "subjects"');
    if (r.role !== undefined && !roles.has(r.role))
      throw invalid(`${at}.role`, `role "${r.role}" is not declared under roles`);
    const subjects =
      r.role !== undefined
        ? [`role:${r.role}`]
        : r.subjects!.includes('*')
          ? ['*']
          : [...new Set(r.subjects!)];
    if (r.paths === undefined && r.grpc === undefined) throw invalid(at, 'needs "paths" or "grpc" (or both)');
    // gRPC methods are paths: `/pkg.Service/Method`; a whole service is `/pkg.Service/*`. A rule
    // written only with `grpc` matches POST, the one method gRPC uses.
    const grpcPaths = (r.grpc ?? []).map((g) => (g.includes('/') ? `/${g}` : `/${g}/*`));
    const methods = !r.methods
      ? r.paths === undefined
        ? ['POST']
        : ['*']
      : r.methods.includes('*')
        ? ['*']
        : [...new Set(r.methods)];
    return Object.freeze({
      id: r.id,
      effect: r.effect ?? 'allow',
      subjects: Object.freeze(subjects),
      methods: Object.freeze(methods),
      paths: Object.freeze([...new Set([...(r.paths ?? []), ...grpcPaths])]),
    });
  });
  return Object.freeze({
    service: parsed.service.uri,
    mode: parsed.mode,
    roles,
    rules: Object.freeze(rules),
    hash: `sha256:${createHash('sha256').update(text).digest('hex')}`,
    file,
  });
}
