// Child of bench/audit/big-log.ts: starts a collector on the log (config JSON in argv[2]), signs
// a checkpoint, stops, and prints the records adopted, the start time and its peak RSS (KiB).
import { createLogger } from '../../core/index.ts';
import { parseAuditConfig, startCollector } from '../../audit/index.ts';

const t = performance.now();
const running = await startCollector(parseAuditConfig(JSON.parse(process.argv[2]!)), {
  logger: createLogger({ name: 'big-log', level: 'warn' }),
  defaultMetrics: false,
});
const startSeconds = (performance.now() - t) / 1000;
await running.log.checkpoint();
const size = running.log.size;
await running.close();
process.stdout.write(
  `${JSON.stringify({ size, startSeconds, maxRssKiB: process.resourceUsage().maxRSS })}\n`,
);
