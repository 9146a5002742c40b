import { startTelemetry } from '../../core/index.ts';
import { loadStsConfig, startSts } from '../../sts/index.ts';
import type { CliCommand } from '../lib/command.ts';
import { closeWithin, untilShutdownSignal } from '../lib/signals.ts';
import { parseFlags, required } from '../lib/command.ts';

/** Group summary shown by `portcullis --help`. */
export const summary = 'run the Security Token Service (mTLS in, certificate-bound JWT out)';

const USAGE = `usage: portcullis sts --config FILE

Runs the Security Token Service described by FILE (see config/sts.yaml and docs/sts.md).
The file keystore reads its master key from PORTCULLIS_MASTER_KEY (base64 of at least 32 bytes;
generate one with: openssl rand -base64 32). Stops gracefully on SIGINT or SIGTERM: drains
requests for at most connections.drainTimeout, flushes audit events, exits 0 (a second signal
exits 1 at once).

flags:
  --config FILE   STS configuration (required)`;

/** `portcullis sts`. */
export const commands: readonly CliCommand[] = [
  {
    name: 'sts',
    summary,
    usage: USAGE,
    async run(argv) {
      const flags = parseFlags(argv, { config: { type: 'string' } }, 'sts');
      const config = loadStsConfig(required(flags.config, 'config', 'sts'));
      // Traces go out over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set; otherwise this is a no-op.
      const telemetry = await startTelemetry({ serviceName: 'portcullis-sts' });
      const sts = await startSts(config);
      console.error(
        `portcullis sts: listening on ${sts.url} (issuer ${config.issuer})${sts.opsUrl ? `, ops on ${sts.opsUrl}` : ''}`,
      );
      await untilShutdownSignal();
      // Drains for at most connections.drainTimeout; the flush and store close get 10 s more.
      await closeWithin('sts', config.connections.drainTimeout + 10_000, () => sts.close());
      await telemetry.shutdown();
      console.error('portcullis sts: stopped');
      return 0;
    },
  },
];
