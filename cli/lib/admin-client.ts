import type { ParseArgsConfig } from 'node:util';
import { ConfigError, readConfiguredFile } from '../../core/index.ts';
import { createStsAdminClient } from '../../sts/index.ts';
import type { StsAdminClient } from '../../sts/index.ts';
import { parseFlags } from './command.ts';

/** The `--help` lines of the flags every admin-API command takes. */
export const ADMIN_FLAGS_HELP = `  --sts URL      STS base URL (default https://localhost:8443)
  --cert FILE    admin certificate chain (default certs/admin-console.pem)
  --key FILE     its private key (default certs/admin-console-key.pem)
  --cacert FILE  trust bundle for the STS certificate (default certs/root.pem)
  --json         print the raw JSON answer`;

const ADMIN_OPTIONS = {
  sts: { type: 'string', default: 'https://localhost:8443' },
  cert: { type: 'string', default: 'certs/admin-console.pem' },
  key: { type: 'string', default: 'certs/admin-console-key.pem' },
  cacert: { type: 'string', default: 'certs/root.pem' },
  json: { type: 'boolean', default: false },
} as const;

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * Parses the admin flags plus `extra`, opens an admin client (mTLS with the admin certificate),
 * runs `fn` and closes the client.
 */
export async function withAdminClient<T>(
  argv: readonly string[],
  command: string,
  extra: Options,
  fn: (client: StsAdminClient, flags: Readonly<Record<string, string | boolean | undefined>>) => Promise<T>,
): Promise<T> {
  const flags = parseFlags(argv, { ...ADMIN_OPTIONS, ...extra }, command) as Record<
    string,
    string | boolean | undefined
  >;
  const url = String(flags.sts);
  try {
    new URL(url);
  } catch {
    throw new ConfigError('ERR_CONFIG_INVALID', '--sts', '', `"${url}" is not a URL`);
  }
  const client = createStsAdminClient({
    url,
    cert: readConfiguredFile(String(flags.cert), '--cert'),
    key: readConfiguredFile(String(flags.key), '--key'),
    ca: readConfiguredFile(String(flags.cacert), '--cacert'),
  });
  try {
    return await fn(client, flags);
  } finally {
    await client.close();
  }
}
