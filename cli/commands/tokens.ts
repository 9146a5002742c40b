import type { CliCommand } from '../lib/command.ts';
import { UsageError, required } from '../lib/command.ts';
import { ADMIN_FLAGS_HELP, withAdminClient } from '../lib/admin-client.ts';

/** Group summary shown by `portcullis --help`. */
export const summary = 'revoke access tokens by jti (admin API over mTLS)';

/** `portcullis tokens revoke`. */
export const commands: readonly CliCommand[] = [
  {
    name: 'tokens revoke',
    summary: 'put a token id (jti) on the deny-list of every STS replica and sidecar',
    usage: `usage: portcullis tokens revoke --jti JTI [--expires-at TIME] [flags]

Calls POST /v1/admin/revoke. The STS stores the revocation durably before answering; sidecars
refuse the token within their revocation poll interval, whichever replica took it.

flags:
  --jti JTI          token id (required)
  --expires-at TIME  RFC 3339 time the entry may be dropped (default: the token TTL cap plus skew)
${ADMIN_FLAGS_HELP}`,
    run: (argv) =>
      withAdminClient(
        argv,
        'tokens revoke',
        { jti: { type: 'string' }, 'expires-at': { type: 'string' } },
        async (client, flags) => {
          const jti = required(flags.jti as string | undefined, 'jti', 'tokens revoke');
          const expiresAt = flags['expires-at'] as string | undefined;
          if (expiresAt !== undefined && Number.isNaN(Date.parse(expiresAt)))
            throw new UsageError(`tokens revoke: --expires-at must be an RFC 3339 time, got "${expiresAt}"`);
          const res = (await client.revoke({ jti, ...(expiresAt ? { expiresAt } : {}) })) as {
            revoked: { jti: string; expiresAt: string };
          };
          console.log(
            flags.json
              ? JSON.stringify(res)
              : `revoked jti ${res.revoked.jti} until ${res.revoked.expiresAt}`,
          );
          return 0;
        },
      ),
  },
];
