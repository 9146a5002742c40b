import { createLogger, startTelemetry } from '../../core/index.ts';
import { loadSidecarConfig, sidecarServiceName, startSidecar } from '../../sidecar/index.ts';
import type { CliCommand } from '../lib/command.ts';
import { closeWithin, untilShutdownSignal } from '../lib/signals.ts';
import { parseFlags, required } from '../lib/command.ts';

/** Group summary shown by `portcullis --help`. */
export const summary = 'run a service sidecar (inbound mTLS + token + RBAC, outbound token-and-mTLS proxy)';

const USAGE = `usage: portcullis sidecar --config FILE

Runs one service's sidecar until SIGINT/SIGTERM (then drains for at most connections.drainTimeout,
flushes audit events and exits 0; a second signal exits 1 at once):
  inbound   mTLS listener: peer certificate → bound token → path → policy → app, one audit event per request
  outbound  loopback HTTP proxy for the app (HTTP_PROXY=http://127.0.0.1:15001, or http://<route>/…)
Policies and certificates are reloaded from disk while it runs.

flags:
  --config FILE   sidecar config (see config/sidecar-web.yaml, config/sidecar-orders.yaml) (required)`;

/** `portcullis sidecar --config FILE`. */
export const commands: readonly CliCommand[] = [
  {
    name: 'sidecar',
    summary,
    usage: USAGE,
    async run(argv) {
      const flags = parseFlags(argv, { config: { type: 'string' } }, 'sidecar');
      const config = loadSidecarConfig(required(flags.config, 'config', 'sidecar'));
      const logger = createLogger({ name: 'sidecar' });
      // Traces go out over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set; otherwise this is a no-op.
      // The service is named after the workload (`orders-sidecar`) unless OTEL_SERVICE_NAME says otherwise.
      const telemetry = await startTelemetry({ serviceName: sidecarServiceName(config.service) });
      const running = await startSidecar(config, { logger });
      logger.info(
        {
          service: config.service,
          inbound: running.inbound.url,
          outbound: running.outbound?.url,
          policyHash: running.policy.current().policy.hash,
        },
        'sidecar listening',
      );
      await untilShutdownSignal();
      logger.info('sidecar draining');
      // Drains for at most connections.drainTimeout; the audit flush gets 10 s more.
      await closeWithin('sidecar', config.connections.drainTimeout + 10_000, () => running.close());
      await telemetry.shutdown();
      return 0;
    },
  },
];
