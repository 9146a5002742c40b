import type { ParseArgsConfig } from 'node:util';
import { ConfigError, readConfiguredFile } from '../../core/index.ts';
import { createStsAdminClient } from '../../sts/index.ts';
import type { StsAdminClient } from '../../sts/index.ts';
import { parseFlags } from './command.ts';
import { findContext, fromContext } from './context.ts';
import type { Context } from './context.ts';

/** The `--help` lines of the flags every admin-API command takes. */
export const ADMIN_FLAGS_HELP = `  --context DIR  the deployment's context (default: $PORTCULLIS_CONTEXT, else ./.portcullis when
                 \`portcullis up\` wrote one there): supplies every flag below
  --sts URL      STS base URL (default: the context's, else https://localhost:8443)
  --cert FILE    admin certificate chain (default: the context's admin, else certs/admin-console.pem)
  --key FILE     its private key (default: the context's, else certs/admin-console-key.pem)
  --cacert FILE  trust bundle for the STS certificate (default: the context's, else certs/root.pem)
  --json         print the raw JSON answer`;

/** The flags of {@link ADMIN_FLAGS_HELP}, for `parseArgs`. */
export const ADMIN_OPTIONS = {
  context: { type: 'string' },
  sts: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  cacert: { type: 'string' },
  json: { type: 'boolean', default: false },
} as const;

type Options = NonNullable<ParseArgsConfig['options']>;
type Flags = Readonly<Record<string, string | boolean | undefined>>;

/**
 * Parses the admin flags plus `extra`, opens an admin client (mTLS with the admin certificate; each
 * flag not given comes from the context, else the local layout's default), runs `fn` and closes
 * the client.
 */
export async function withAdminClient<T>(
  argv: readonly string[],
  command: string,
  extra: Options,
  fn: (client: StsAdminClient, flags: Flags) => Promise<T>,
): Promise<T> {
  const flags = parseFlags(argv, { ...ADMIN_OPTIONS, ...extra }, command) as Record<
    string,
    string | boolean | undefined
  >;
  return withAdminClientFor(flags, findContext(flags.context as string | undefined), command, fn);
}

/** {@link withAdminClient} with flags already parsed and the context already found. */
export async function withAdminClientFor<T>(
  flags: Flags,
  ctx: Context | undefined,
  command: string,
  fn: (client: StsAdminClient, flags: Flags) => Promise<T>,
): Promise<T> {
  const str = (name: string) => flags[name] as string | undefined;
  const url = fromContext(str('sts'), 'sts', command, ctx, (c) => c.sts.url, 'https://localhost:8443');
  try {
    new URL(url);
  } catch {
    throw new ConfigError('ERR_CONFIG_INVALID', '--sts', '', `"${url}" is not a URL`);
  }
  const cert = fromContext(
    str('cert'),
    'cert',
    command,
    ctx,
    (c) => c.operators.admin?.cert,
    'certs/admin-console.pem',
  );
  const key = fromContext(
    str('key'),
    'key',
    command,
    ctx,
    (c) => c.operators.admin?.key,
    'certs/admin-console-key.pem',
  );
  const cacert = fromContext(str('cacert'), 'cacert', command, ctx, (c) => c.trustBundle, 'certs/root.pem');
  const client = createStsAdminClient({
    url,
    cert: readConfiguredFile(cert, '--cert'),
    key: readConfiguredFile(key, '--key'),
    ca: readConfiguredFile(cacert, '--cacert'),
  });
  try {
    return await fn(client, flags);
  } finally {
    await client.close();
  }
}
