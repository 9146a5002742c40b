import { existsSync } from 'node:fs';
import { readConfiguredFile } from '../../core/index.ts';
import { isLoopbackHost, startConsole } from '../console/server.ts';
import type { CliCommand } from '../lib/command.ts';
import { UsageError, parseFlags } from '../lib/command.ts';
import { findContext, fromContext } from '../lib/context.ts';
import { closeWithin, untilShutdownSignal } from '../lib/signals.ts';

/** Group summary shown by `portcullis --help`. */
export const summary = 'web console on loopback: audit log, integrity, decisions, service graph, replay';

const USAGE = `usage: portcullis console [--context DIR] [--host ADDR] [--port N] [collector flags]

Serves the security console on this machine only and prints the URL to open: it carries a
random session secret once (?token=…), which the browser then keeps in an HttpOnly,
SameSite=Strict cookie. The console reads the collector's query API with your own certificate
(role audit-reader): the audit log with filters and a live tail, each event's inclusion proof
checked against the latest signed checkpoint, integrity, decisions over time, the service
graph, certificate and key timelines, and policy replay. Ctrl-C stops it.

Everything it needs comes from the context that \`portcullis up\` writes (.portcullis/context.yaml):
the collector, your audit-reader identity, the trust bundle and the checkpoint verifier key.
Flags win over the context.

flags:
  --context DIR          context directory (default: $PORTCULLIS_CONTEXT, else ./.portcullis)
  --host ADDR            loopback address to listen on (default 127.0.0.1; no other is accepted)
  --port N               port (default 0: an unused one)
  --url URL              collector base URL
  --cert FILE            your certificate chain (PEM; role audit-reader)
  --key FILE             your private key (PEM)
  --trust FILE           trust bundle (PEM)
  --collector-id ID      SPIFFE ID the collector must present
  --public-key KEY       the collector's checkpoint verifier key, or a file holding it
  --checkpoint FILE      a checkpoint saved earlier (audit checkpoint --out): the first one the
                         integrity page checks the latest against (default: the context's)`;

const command = 'console';

/** `portcullis console`. */
export const commands: readonly CliCommand[] = [
  {
    name: 'console',
    summary,
    usage: USAGE,
    async run(argv) {
      const flags = parseFlags(
        argv,
        {
          context: { type: 'string' },
          host: { type: 'string' },
          port: { type: 'string' },
          url: { type: 'string' },
          cert: { type: 'string' },
          key: { type: 'string' },
          trust: { type: 'string' },
          'collector-id': { type: 'string' },
          'public-key': { type: 'string' },
          checkpoint: { type: 'string' },
        },
        command,
      );
      const host = flags.host ?? '127.0.0.1';
      if (!isLoopbackHost(host))
        throw new UsageError(
          `${command}: --host ${host} is not a loopback address; the console listens on 127.0.0.1, ::1 or localhost only (it holds your audit-reader identity)`,
        );
      const port = flags.port ?? '0';
      if (!/^(0|[1-9][0-9]{0,4})$/.test(port) || Number(port) > 65_535)
        throw new UsageError(`${command}: --port must be an integer from 0 to 65535`);
      const ctx = findContext(flags.context);
      const reader = ctx?.operators.auditReader;
      const pick = <T>(
        value: T | undefined,
        flag: string,
        from: (c: NonNullable<typeof ctx>) => T | undefined,
      ) => fromContext(value, flag, command, ctx, from);
      const keyValue = pick(flags['public-key'], 'public-key', (c) => c.collector.verifierKey);
      const verifierKey = /^[^\s+]+\+[0-9a-f]{8}\+/.test(keyValue)
        ? keyValue
        : readConfiguredFile(keyValue, '--public-key').trim();
      const checkpointFile = flags.checkpoint ?? ctx?.collector.checkpoint;
      const savedCheckpoint =
        checkpointFile !== undefined && (flags.checkpoint !== undefined || existsSync(checkpointFile))
          ? readConfiguredFile(checkpointFile, '--checkpoint')
          : undefined;
      const running = await startConsole({
        host,
        port: Number(port),
        collector: {
          url: pick(flags.url, 'url', (c) => c.collector.url),
          collectorId: pick(flags['collector-id'], 'collector-id', (c) => c.collector.spiffeId),
          tls: {
            cert: fromContext(flags.cert, 'cert', command, ctx, () => reader?.cert),
            key: fromContext(flags.key, 'key', command, ctx, () => reader?.key),
            trustBundle: pick(flags.trust, 'trust', (c) => c.trustBundle),
          },
        },
        verifierKey,
        ...(savedCheckpoint !== undefined ? { savedCheckpoint } : {}),
      });
      console.log(
        `Portcullis console on ${running.url} (this machine only). Open:\n\n  ${running.loginUrl}\n`,
      );
      console.log("The link holds this session's secret: do not share it. Ctrl-C stops the console.");
      await untilShutdownSignal();
      await closeWithin(command, 10_000, () => running.close());
      return 0;
    },
  },
];
