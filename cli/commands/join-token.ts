import type { CliCommand } from '../lib/command.ts';
import { required } from '../lib/command.ts';
import { ADMIN_FLAGS_HELP, withAdminClient } from '../lib/admin-client.ts';

/** Group summary shown by `portcullis --help`. */
export const summary = 'create one-time join tokens that let a workload enrol (admin API over mTLS)';

/** `portcullis join-token create`. */
export const commands: readonly CliCommand[] = [
  {
    name: 'join-token create',
    summary: 'create a single-use join token for one registry entry',
    usage: `usage: portcullis join-token create --workload NAME [--ttl 15m] [flags]

Calls POST /v1/admin/join-tokens with an admin certificate and prints the token. The token enrols
WORKLOAD once through EST simpleenroll (Authorization: Bearer TOKEN) before it expires; the STS
keeps only its hash. Treat it as a secret until it is used.

flags:
  --workload NAME  registry entry name (required)
  --ttl DURATION   lifetime (default 15m; at most the STS's ca.joinTokenTtlCap)
${ADMIN_FLAGS_HELP}`,
    run: (argv) =>
      withAdminClient(
        argv,
        'join-token create',
        { workload: { type: 'string' }, ttl: { type: 'string' } },
        async (client, flags) => {
          const workload = required(flags.workload as string | undefined, 'workload', 'join-token create');
          const ttl = flags.ttl as string | undefined;
          const res = await client.createJoinToken({ workload, ...(ttl ? { ttl } : {}) });
          if (flags.json) console.log(JSON.stringify(res));
          else {
            console.log(res.token);
            console.error(`join token for ${res.spiffeId}, single use, expires ${res.expiresAt}`);
          }
          return 0;
        },
      ),
  },
];
