// The benchmark's sidecar process: the real sidecar from a config file, with an audit sink that
// does what the collector client (audit/client) does on the request path (validate, queue) plus its
// serialization off the request path, so that audit cost is counted — or, with `config-sink` as
// second argument, the real collector client of the config. Prints its inbound port.
import { dirname, join } from 'node:path';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { pino } from 'pino';
import type { AuditEvent, AuditSink } from '../../core/index.ts';
import { createLogger, parseAuditEvent } from '../../core/index.ts';
import { loadSidecarConfig, startSidecar } from '../../sidecar/index.ts';

/** Validates and queues events and serializes them in batches every 100 ms, as the collector client does before sending. */
class BatchingSink implements AuditSink {
  queue: AuditEvent[] = [];
  delivered = 0;
  bytes = 0;
  readonly timer = setInterval(() => this.drain(), 100);
  lost = 0;
  emit(event: AuditEvent): void {
    // Like the client: an invalid event is counted as lost (reported at exit), never thrown at the caller.
    try {
      this.queue.push(parseAuditEvent(event));
    } catch {
      this.lost++;
    }
  }
  async record(event: AuditEvent): Promise<void> {
    this.emit(event);
  }
  accepting(): boolean {
    return true;
  }
  drain(): void {
    if (this.queue.length === 0) return;
    const batch = this.queue;
    this.queue = [];
    this.bytes += JSON.stringify(batch).length;
    this.delivered += batch.length;
  }
  async flush(): Promise<void> {
    this.drain();
  }
  async close(): Promise<void> {
    clearInterval(this.timer);
    this.drain();
  }
}

// Garbage collections by kind (count, total ms), reported at exit with the memory figures.
const gc: Record<string, { n: number; ms: number }> = {};
const GC_KINDS: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'scavenge',
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'markCompact',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakCallbacks',
};
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = GC_KINDS[(e as PerformanceEntry & { detail: { kind: number } }).detail.kind] ?? 'other';
    const g = (gc[kind] ??= { n: 0, ms: 0 });
    g.n++;
    g.ms += e.duration;
  }
}).observe({ entryTypes: ['gc'] });

const sink = new BatchingSink();
// `config-sink`: the real audit client the config's `audit:` section names (a collector, failMode
// open or closed), instead of the in-process stand-in.
const configSink = process.argv[3] === 'config-sink';
if (configSink) await sink.close();
const config = loadSidecarConfig(process.argv[2]!);
// With the access log on (bench --access-log), info lines go to a file beside the config, written
// as a service's stdout would be (synchronously); stdout stays for the figures the bench reads.
const logger = config.accessLog.enabled
  ? createLogger({
      name: 'bench-sidecar',
      level: 'info',
      destination: pino.destination({ dest: join(dirname(process.argv[2]!), 'access.log'), sync: true }),
    })
  : createLogger({ name: 'bench-sidecar', level: 'warn' });
const running = await startSidecar(config, { ...(configSink ? {} : { sink }), logger });
console.log(JSON.stringify({ port: running.inbound.port }));
process.on('SIGTERM', () => {
  void running.close().then(() => {
    (globalThis as { gc?: () => void }).gc?.();
    const m = process.memoryUsage();
    const mb = (n: number) => Math.round(n / 1e5) / 10;
    console.log(
      JSON.stringify({
        ...(configSink ? {} : { auditEvents: sink.delivered, auditLost: sink.lost, auditBytes: sink.bytes }),
        rssMb: mb(m.rss),
        heapUsedMb: mb(m.heapUsed),
        heapTotalMb: mb(m.heapTotal),
        externalMb: mb(m.external),
        arrayBuffersMb: mb(m.arrayBuffers),
        gc: Object.fromEntries(Object.entries(gc).map(([k, v]) => [k, { n: v.n, ms: Math.round(v.ms) }])),
      }),
    );
    process.exit(0);
  });
});
