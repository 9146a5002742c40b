// The context directory: where a deployment's parts are and who the operator is, so that every
// command finds them without flags (kubectl's kubeconfig, step's $STEPPATH). `portcullis up` writes
// `<data dir>/context.yaml`; commands read it from --context, $PORTCULLIS_CONTEXT or ./.portcullis.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { loadConfigFile, resolveConfigPath, strictObject } from '../../core/index.ts';
import { UsageError } from './command.ts';

/** File name of the context inside its directory. */
export const CONTEXT_FILE = 'context.yaml';

const url = z.url({ protocol: /^https$/, error: 'must be an https URL' });
const spiffeId = z.string().startsWith('spiffe://', { error: 'must be a SPIFFE ID' });
const identity = strictObject({ cert: z.string().min(1), key: z.string().min(1) });

/** Schema of `context.yaml`; paths are relative to the file's directory. */
export const contextSchema = strictObject({
  trustDomain: z.string().min(1),
  trustBundle: z.string().min(1),
  sts: strictObject({ url, spiffeId }),
  collector: strictObject({
    url,
    spiffeId,
    /** The store the collector writes, for offline commands (`audit verify`, `audit query --store`). */
    store: z.string().min(1).optional(),
    /** The collector's checkpoint verifier key file. */
    verifierKey: z.string().min(1).optional(),
    /** Where the operator keeps the running checkpoint that `audit checkpoint` extends. */
    checkpoint: z.string().min(1).optional(),
  }),
  ca: strictObject({ dir: z.string().min(1), crl: z.string().min(1) }).optional(),
  operators: strictObject({ admin: identity.optional(), auditReader: identity.optional() }),
});

/** A loaded context, every path absolute. */
export type Context = z.output<typeof contextSchema> & { readonly file: string };

/**
 * The context named by `flag` (`--context DIR`), else `$PORTCULLIS_CONTEXT`, else `./.portcullis`
 * when it holds a context file; `undefined` when none is named and there is none there. A named
 * directory without a context file, or a file that does not parse, is a {@link ConfigError}
 * naming the file and key.
 */
export function findContext(
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  cwd = process.cwd(),
): Context | undefined {
  const named = flag ?? (env.PORTCULLIS_CONTEXT || undefined);
  const dir = resolve(cwd, named ?? '.portcullis');
  const file = join(dir, CONTEXT_FILE);
  if (named === undefined && !existsSync(file)) return undefined;
  const raw = loadConfigFile(file, contextSchema);
  const base = dirname(file);
  const abs = (p: string) => resolveConfigPath(p, base);
  const absId = (i: { cert: string; key: string } | undefined) =>
    i ? { cert: abs(i.cert), key: abs(i.key) } : undefined;
  return {
    file,
    trustDomain: raw.trustDomain,
    trustBundle: abs(raw.trustBundle),
    sts: raw.sts,
    collector: {
      url: raw.collector.url,
      spiffeId: raw.collector.spiffeId,
      ...(raw.collector.store ? { store: storeWithAbsolutePath(raw.collector.store, abs) } : {}),
      ...(raw.collector.verifierKey ? { verifierKey: abs(raw.collector.verifierKey) } : {}),
      ...(raw.collector.checkpoint ? { checkpoint: abs(raw.collector.checkpoint) } : {}),
    },
    ...(raw.ca ? { ca: { dir: abs(raw.ca.dir), crl: abs(raw.ca.crl) } } : {}),
    operators: {
      ...(raw.operators.admin ? { admin: absId(raw.operators.admin)! } : {}),
      ...(raw.operators.auditReader ? { auditReader: absId(raw.operators.auditReader)! } : {}),
    },
  };
}

/** `file:relative/dir` is relative to the context; other store URLs (postgres:…) are kept. */
function storeWithAbsolutePath(store: string, abs: (p: string) => string): string {
  return store.startsWith('file:') ? `file:${abs(store.slice('file:'.length))}` : store;
}

/**
 * The value of a setting: the flag when given, else what the context says, else `fallback`. With
 * none of them, a {@link UsageError} (exit 2) saying where the value could come from.
 */
export function fromContext<T>(
  flagValue: T | undefined,
  flag: string,
  command: string,
  context: Context | undefined,
  pick: (c: Context) => T | undefined,
  fallback?: T,
): T {
  if (flagValue !== undefined) return flagValue;
  const value = context ? pick(context) : undefined;
  if (value !== undefined) return value;
  if (fallback !== undefined) return fallback;
  throw new UsageError(
    context
      ? `${command}: --${flag} is required: ${context.file} names none`
      : `${command}: --${flag} is required, or a context: run where \`portcullis up\` wrote .portcullis/${CONTEXT_FILE}, or pass --context DIR (or set PORTCULLIS_CONTEXT)`,
  );
}
