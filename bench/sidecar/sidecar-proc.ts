// The benchmark's sidecar process: the real sidecar from a config file, with an audit sink that
// does what the collector client (audit/client) does with each event in the sidecar's process
// (validate, serialize into its pending buffer, take the buffer every 100 ms), so that audit cost
// is counted, but ships nothing — or, with `config-sink` as second argument, the real collector
// client of the config. Prints its inbound port.
//
// BENCH_AUDIT_ALTERNATE="queue:100,bytes:100,none" (decisions 0103, 0104) alternates what the
// stand-in does with each event every BENCH_AUDIT_SLICE_MS (default 3000) inside this one process,
// there and back (A B C C B A …), and reports the CPU and the GC pause per request of each variant
// over the slices that saw saturating load: an A/B that run-to-run noise (±10 % between processes)
// cannot blur. The variants:
// - `bytes:N`: validate, serialize at emit into the collector client's own pending buffer outside
//   the JS heap (audit/client/pending.ts), and take its contents every N ms, as the client does
//   for each spool write (the default is bytes:100; decision 0104);
// - `queue:N`: validate, keep the event objects, and serialize them every N ms (the default before
//   decision 0104);
// - `serialize`: validate and serialize at emit, keep nothing;
// - `validate`: validate only; `stringify`: serialize only, unvalidated;
// - `none`: count the event and drop it.
import { dirname, join } from 'node:path';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { pino } from 'pino';
import type { AuditEvent, AuditSink } from '../../core/index.ts';
import { createLogger, parseAuditEvent } from '../../core/index.ts';
import { loadSidecarConfig, startSidecar } from '../../sidecar/index.ts';
import { PendingLines } from '../../audit/index.ts';

type Variant =
  | { kind: 'queue'; drainMs: number }
  | { kind: 'bytes'; drainMs: number }
  | { kind: 'serialize' }
  | { kind: 'validate' }
  | { kind: 'stringify' }
  | { kind: 'none' };

/**
 * Validates each event, serializes it into the client's pending buffer and takes the buffer every
 * 100 ms, as the collector client does before each spool write; {@link BatchingSink.use} switches
 * to another variant (BENCH_AUDIT_ALTERNATE).
 */
class BatchingSink implements AuditSink {
  queue: AuditEvent[] = [];
  delivered = 0;
  bytes = 0;
  variant: Variant = { kind: 'bytes', drainMs: 100 };
  timer = setInterval(() => this.drain(), 100);
  lost = 0;
  /** `bytes:N`: the client's pending events, serialized outside the JS heap. */
  readonly pending = new PendingLines();
  emit(event: AuditEvent): void {
    if (this.variant.kind === 'none') {
      this.delivered++;
      return;
    }
    if (this.variant.kind === 'stringify') {
      this.bytes += JSON.stringify(event).length;
      this.delivered++;
      return;
    }
    // Like the client: an invalid event is counted as lost (reported at exit), never thrown at the caller.
    try {
      const parsed = parseAuditEvent(event);
      if (this.variant.kind === 'validate') this.delivered++;
      else if (this.variant.kind === 'queue') this.queue.push(parsed);
      else if (this.variant.kind === 'bytes') {
        this.pending.push(JSON.stringify(parsed));
      } else {
        this.bytes += JSON.stringify(parsed).length;
        this.delivered++;
      }
    } catch {
      this.lost++;
    }
  }
  use(variant: Variant): void {
    this.variant = variant;
    this.drain();
    clearInterval(this.timer);
    if (variant.kind === 'queue' || variant.kind === 'bytes')
      this.timer = setInterval(() => this.drain(), variant.drainMs);
  }
  /** Events emitted so far, whatever became of them. */
  seen(): number {
    return this.delivered + this.queue.length + this.pending.length + this.lost;
  }
  async record(event: AuditEvent): Promise<void> {
    this.emit(event);
  }
  accepting(): boolean {
    return true;
  }
  drain(): void {
    if (this.pending.length) {
      const taken = this.pending.take();
      this.bytes += taken.bytes.length;
      this.delivered += taken.count;
      this.pending.release(taken);
    }
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
let gcMsTotal = 0;
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
    gcMsTotal += e.duration;
  }
}).observe({ entryTypes: ['gc'] });

const sink = new BatchingSink();
// `config-sink`: the real audit client the config's `audit:` section names (a collector, failMode
// open or closed), instead of the in-process stand-in.
const configSink = process.argv[3] === 'config-sink';
// The real client has no variants: only the stand-in alternates.
const alternated = alternate(
  configSink ? undefined : process.env.BENCH_AUDIT_ALTERNATE,
  process.env.BENCH_AUDIT_SLICE_MS ?? '3000',
);

/** Runs the variants in turn, a slice each, and sums CPU and events per variant over saturated slices. */
function alternate(spec: string | undefined, slice: string) {
  const totals: Record<string, { cpuUs: number; events: number; slices: number; gcMs: number }> = {};
  if (!spec) return totals;
  const sliceMs = Number(slice);
  if (!Number.isSafeInteger(sliceMs) || sliceMs < 500)
    throw new Error(`BENCH_AUDIT_SLICE_MS: "${slice}" is not a whole number of milliseconds, at least 500`);
  const variants = spec.split(',').map((name): [string, Variant] => {
    const [kind, ms] = name.split(':');
    if ((kind === 'queue' || kind === 'bytes') && Number(ms) > 0)
      return [name, { kind, drainMs: Number(ms) }];
    if (
      (kind === 'serialize' || kind === 'none' || kind === 'validate' || kind === 'stringify') &&
      ms === undefined
    )
      return [name, { kind }];
    throw new Error(
      `BENCH_AUDIT_ALTERNATE: unknown variant "${name}" (queue:<ms>, bytes:<ms>, serialize, validate, stringify, none)`,
    );
  });
  // There and back (A B C C B A …): a slice pays part of the collections of the slice before it,
  // and this order gives each variant a mix of predecessors instead of always the same one.
  const order = [...variants, ...[...variants].reverse()];
  let turn = 0;
  let cpu = process.cpuUsage();
  let events = sink.seen();
  let gcAt = gcMsTotal;
  sink.use(order[0]![1]);
  setInterval(() => {
    const used = process.cpuUsage(cpu);
    const seen = sink.seen() - events;
    // Saturation only (over 2,000 events a second): the 1,000 req/s phase and idle moments would
    // mix another workload in.
    if (seen >= 2 * sliceMs) {
      const t = (totals[order[turn % order.length]![0]] ??= { cpuUs: 0, events: 0, slices: 0, gcMs: 0 });
      t.gcMs += gcMsTotal - gcAt;
      t.cpuUs += used.user + used.system;
      t.events += seen;
      t.slices++;
    }
    turn++;
    sink.use(order[turn % order.length]![1]);
    cpu = process.cpuUsage();
    events = sink.seen();
    gcAt = gcMsTotal;
  }, sliceMs).unref();
  return totals;
}
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
        ...(Object.keys(alternated).length
          ? {
              alternated: Object.fromEntries(
                Object.entries(alternated).map(([k, v]) => [
                  k,
                  {
                    cpuUsPerRequest: Math.round((v.cpuUs / v.events) * 10) / 10,
                    slices: v.slices,
                    gcUsPerRequest: Math.round(((v.gcMs * 1000) / v.events) * 10) / 10,
                    events: v.events,
                  },
                ]),
              ),
            }
          : {}),
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
