// The collector of the audit bench, in its own process (so that the load generator does not share
// its event loop): config JSON in argv[2]; prints `port <n>` once listening; SIGTERM stops it.
import { createLogger } from '../../core/index.ts';
import { parseAuditConfig, startCollector } from '../../audit/index.ts';

const config = parseAuditConfig(JSON.parse(process.argv[2]!));
const running = await startCollector(config, {
  logger: createLogger({ name: 'bench-audit', level: 'warn' }),
  defaultMetrics: false,
});
process.stdout.write(`port ${running.port}\n`);
process.once('SIGTERM', () => {
  void running.close().then(() => process.exit(0));
});
