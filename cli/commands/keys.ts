import type { KeySummary, StsAdminClient } from '../../sts/index.ts';
import type { CliCommand } from '../lib/command.ts';
import { parseFlags } from '../lib/command.ts';
import { ADMIN_FLAGS_HELP, ADMIN_OPTIONS, withAdminClientFor } from '../lib/admin-client.ts';
import { findContext } from '../lib/context.ts';

/** Group summary shown by `portcullis --help`. */
export const summary = 'list and rotate the STS signing keys (admin API over mTLS)';

const FLAGS = `flags:
${ADMIN_FLAGS_HELP}
  --ca FILE      the same as --cacert (this command's older spelling)`;

/** The admin client of every admin command; `--ca` is kept as this command's name for `--cacert`. */
function withClient<T>(
  argv: readonly string[],
  command: string,
  fn: (c: StsAdminClient, json: boolean) => Promise<T>,
): Promise<T> {
  const flags = parseFlags(argv, { ...ADMIN_OPTIONS, ca: { type: 'string' } }, command);
  return withAdminClientFor(
    { ...flags, cacert: flags.cacert ?? flags.ca },
    findContext(flags.context),
    command,
    (client) => fn(client, flags.json),
  );
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
