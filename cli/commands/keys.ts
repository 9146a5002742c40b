import { ConfigError, readConfiguredFile } from '../../core/index.ts';
import { createStsAdminClient } from '../../sts/index.ts';
import type { KeySummary, StsAdminClient } from '../../sts/index.ts';
import type { CliCommand } from '../lib/command.ts';
import { parseFlags } from '../lib/command.ts';
import { findContext, fromContext } from '../lib/context.ts';

/** Group summary shown by `portcullis --help`. */
export const summary = 'list and rotate the STS signing keys (admin API over mTLS)';

const FLAGS = `flags:
  --context DIR  the deployment's context (default: $PORTCULLIS_CONTEXT, else ./.portcullis when
                 \`portcullis up\` wrote one there): supplies every flag below
  --sts URL      STS base URL (default: the context's, else https://localhost:8443)
  --cert FILE    admin certificate chain (default: the context's admin, else certs/admin-console.pem)
  --key FILE     its private key (default: the context's, else certs/admin-console-key.pem)
  --ca FILE      trust bundle for the STS certificate (default: the context's, else certs/root.pem)
  --json         print the raw JSON answer`;

const OPTIONS = {
  context: { type: 'string' },
  sts: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  ca: { type: 'string' },
  json: { type: 'boolean', default: false },
} as const;

async function withClient<T>(
  argv: readonly string[],
  command: string,
  fn: (c: StsAdminClient, json: boolean) => Promise<T>,
) {
  const flags = parseFlags(argv, OPTIONS, command);
  const ctx = findContext(flags.context);
  const sts = fromContext(flags.sts, 'sts', command, ctx, (c) => c.sts.url, 'https://localhost:8443');
  try {
    new URL(sts);
  } catch {
    throw new ConfigError('ERR_CONFIG_INVALID', '--sts', '', `"${sts}" is not a URL`);
  }
  const client = createStsAdminClient({
    url: sts,
    cert: readConfiguredFile(
      fromContext(
        flags.cert,
        'cert',
        command,
        ctx,
        (c) => c.operators.admin?.cert,
        'certs/admin-console.pem',
      ),
      '--cert',
    ),
    key: readConfiguredFile(
      fromContext(
        flags.key,
        'key',
        command,
        ctx,
        (c) => c.operators.admin?.key,
        'certs/admin-console-key.pem',
      ),
      '--key',
    ),
    ca: readConfiguredFile(
      fromContext(flags.ca, 'ca', command, ctx, (c) => c.trustBundle, 'certs/root.pem'),
      '--ca',
    ),
  });
  try {
    return await fn(client, flags.json);
  } finally {
    await client.close();
  }
}

function table(keys: readonly KeySummary[]): string {
  const rows = keys.map((k) => [k.state, k.kid, k.alg, k.activatedAt ?? k.publishedAt, k.until ?? '']);
  const head = ['STATE', 'KID', 'ALG', 'SINCE', 'UNTIL'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [head, ...rows]
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** `portcullis keys list` and `portcullis keys rotate`. */
export const commands: readonly CliCommand[] = [
  {
    name: 'keys list',
    summary: 'list the signing keys with their state (next, current, retiring)',
    usage: `usage: portcullis keys list [flags]\n\nCalls GET /v1/admin/keys with an admin certificate.\n\n${FLAGS}`,
    run: (argv) =>
      withClient(argv, 'keys list', async (client, json) => {
        const res = await client.listKeys();
        console.log(json ? JSON.stringify(res) : table(res.keys));
        return 0;
      }),
  },
  {
    name: 'keys rotate',
    summary: 'rotate the signing key now (or as soon as the next key has been published long enough)',
    usage: `usage: portcullis keys rotate [flags]\n\nCalls POST /v1/admin/keys/rotate with an admin certificate. The next key signs at once if it\nhas been published for one JWKS cache period; otherwise the STS rotates as soon as it has.\n\n${FLAGS}`,
    run: (argv) =>
      withClient(argv, 'keys rotate', async (client, json) => {
        const res = await client.rotate();
        if (json) console.log(JSON.stringify(res));
        else
          console.log(
            res.rotated
              ? `rotated: ${res.currentKid} now signs`
              : `rotation scheduled: the next key signs at ${res.activatesAt} (still ${res.currentKid} until then)`,
          );
        return 0;
      }),
  },
];
