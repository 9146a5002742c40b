import { isAbsolute, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { ConfigError } from './errors.ts';
import { parseDuration } from './duration.ts';
import { parseSpiffeId, parseTrustDomain } from './spiffe-id.ts';
import type { SpiffeId } from './spiffe-id.ts';

/** A zod schema for a SPIFFE ID string; parses into a {@link SpiffeId}. */
export const spiffeIdSchema = z.string().transform((value, ctx): SpiffeId => {
  try {
    return parseSpiffeId(value);
  } catch (err) {
    ctx.addIssue({
      code: 'custom',
      message: `"${value}" is not a SPIFFE ID: ${(err as Error & { reason?: string }).reason ?? (err as Error).message}`,
    });
    return z.NEVER;
  }
});

/** A zod schema for a trust domain name (`example.org`). */
export const trustDomainSchema = z.string().transform((value, ctx): string => {
  try {
    return parseTrustDomain(value);
  } catch (err) {
    ctx.addIssue({
      code: 'custom',
      message: `"${value}" is not a trust domain: ${(err as Error & { reason?: string }).reason}`,
    });
    return z.NEVER;
  }
});

/** A zod schema for a duration string (`5m`); parses into milliseconds. */
export const durationSchema = z.string().transform((value, ctx): number => {
  try {
    return parseDuration(value);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

/** The longest wait a Node timer keeps (2^31 − 1 ms, about 24.8 days): a longer one fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A duration a part waits with a timer (a timeout, a poll or retry interval): at most
 * {@link MAX_TIMER_MS}, refused with a clear message past it instead of firing after 1 ms.
 */
export const timerDurationSchema = durationSchema.refine((ms) => ms <= MAX_TIMER_MS, {
  message: 'must be at most 24d (a longer timer would fire at once)',
});

/** A TCP port in a config file (0: any free one). */
export const portSchema = z.number().int().min(0).max(65535);
/** A file or directory path in a config file (resolved by the part's loader when relative). */
export const pathSchema = z.string().min(1, 'must be a non-empty path');

/**
 * The `tls:` section of every part's config: its own chain (leaf first) and key, the trust
 * bundle peers must chain to, the minimum TLS version, and how often the files are checked for a
 * renewed certificate. Relative paths are resolved by the part's loader.
 */
export const tlsFilesSchema = strictObject({
  cert: pathSchema,
  key: pathSchema,
  trustBundle: pathSchema,
  minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.3'),
  reloadInterval: timerDurationSchema.default(5_000),
  /** Allowance on peer certificates' notBefore/notAfter; one value for every part, so that they agree. */
  clockSkew: durationSchema.default(60_000),
});

/** A path a config file names, resolved against the config file's directory (`baseDir`). */
export function resolveConfigPath(path: string, baseDir: string): string {
  return isAbsolute(path) ? path : resolve(baseDir, path);
}

/** The `tls:` section with its three paths resolved against the config file's directory. */
export function resolveTlsFiles<T extends { cert: string; key: string; trustBundle: string }>(
  tls: T,
  baseDir: string,
): T {
  return {
    ...tls,
    cert: resolveConfigPath(tls.cert, baseDir),
    key: resolveConfigPath(tls.key, baseDir),
    trustBundle: resolveConfigPath(tls.trustBundle, baseDir),
  };
}

/**
 * Parses YAML text into a typed value using `schema` (which should use strict objects so
 * that unknown keys fail). Every failure is a {@link ConfigError} whose message is one line:
 * `<file>: <key path>: <problem>`. Duplicate keys, anchors pointing nowhere and multi-document
 * files are refused.
 */
export function parseConfigText<S extends z.ZodType>(text: string, file: string, schema: S): z.output<S> {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true, strict: true });
  const yamlError = doc.errors[0];
  if (yamlError) {
    const pos = yamlError.linePos?.[0];
    const where = pos ? `line ${pos.line}, column ${pos.col}` : '';
    const message = firstLine(yamlError.message).replace(/ at line \d+, column \d+:?$/, '');
    throw new ConfigError('ERR_CONFIG_INVALID', file, where, `not valid YAML: ${message}`);
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new ConfigError(
      'ERR_CONFIG_INVALID',
      file,
      '',
      `not valid YAML: ${firstLine((err as Error).message)}`,
      { cause: err },
    );
  }
  if (data === null || data === undefined)
    throw new ConfigError('ERR_CONFIG_INVALID', file, '', 'file is empty');
  const result = schema.safeParse(data);
  if (result.success) return result.data;
  // A misspelled key also makes the real key look missing; the misspelling is the cause to report.
  const issue = result.error.issues.find((i) => i.code === 'unrecognized_keys') ?? result.error.issues[0]!;
  const path = issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0]!] : issue.path;
  throw new ConfigError('ERR_CONFIG_INVALID', file, formatKeyPath(path), describeIssue(issue, data));
}

/** Formats a key path the way a reader of the YAML file would write it: `workloads[0].tokenTtl`. */
export function formatKeyPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out ? `.${String(key)}` : String(key);
  }
  return out;
}

function describeIssue(issue: z.core.$ZodIssue, data: unknown): string {
  switch (issue.code) {
    case 'unrecognized_keys': {
      const known = knownKeysHint(issue);
      const key = issue.keys[0]!;
      const near = known ? closest(key, known) : undefined;
      return `unknown key${near ? ` (did you mean "${near}"?)` : ''}`;
    }
    case 'invalid_type': {
      const actual = valueAt(data, issue.path);
      if (actual === undefined) return `is required (${issue.expected})`;
      return `must be ${article(issue.expected)}, got ${describeValue(actual)}`;
    }
    case 'invalid_value':
      return `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, got ${describeValue(valueAt(data, issue.path))}`;
    default:
      return issue.message;
  }
}

/** The schema's known keys are attached by {@link strictObject} so that misspellings get a hint. */
function knownKeysHint(issue: z.core.$ZodIssue): string[] | undefined {
  const known = (issue as { known?: unknown }).known;
  return Array.isArray(known) ? (known as string[]) : undefined;
}

/**
 * `z.strictObject` that reports unknown keys with the list of known ones, so that the
 * error can suggest the nearest (`tokenTtll` → `tokenTtl`).
 */
export function strictObject<T extends z.core.$ZodLooseShape>(shape: T) {
  const known = Object.keys(shape);
  return z.strictObject(shape, {
    error: (iss) => {
      if (iss.code === 'unrecognized_keys') {
        (iss as { known?: string[] }).known = known;
      }
      return undefined;
    },
  });
}

function valueAt(data: unknown, path: readonly PropertyKey[]): unknown {
  let cur = data;
  for (const key of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[key];
  }
  return cur;
}

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string')
    return `the string ${JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value)}`;
  return `${typeof value} ${String(value)}`;
}

function article(expected: string): string {
  if (expected === 'array') return 'a list';
  if (expected === 'object') return 'a mapping';
  return /^[aeiou]/.test(expected) ? `an ${expected}` : `a ${expected}`;
}

function firstLine(message: string): string {
  return message.split('\n')[0]!.trim();
}

/** The known key within edit distance 2 of `key`, if any. */
function closest(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of known) {
    const d = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}
