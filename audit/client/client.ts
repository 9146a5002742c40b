import { collectorConnector } from './server-identity.ts';
import { Agent, request } from 'undici';
import type { Registry as MetricsRegistry } from 'prom-client';
import { Counter, Gauge } from 'prom-client';
import { watchTlsFiles } from '../../ca/index.ts';
import type { TlsMaterial, TlsWatcher } from '../../ca/index.ts';
import { createLogger, parseAuditEvent } from '../../core/index.ts';
import type { AuditEvent, AuditSink, Logger } from '../../core/index.ts';
import { Spool } from './spool.ts';

/** Options of {@link createAuditClient}; the STS and the sidecar fill them from their own config. */
export interface AuditClientOptions {
  /** Collector base URL, `https://host:port`. */
  readonly url: string;
  /**
   * PEM files (this workload's certificate chain and key, and the trust bundle), which the client
   * watches for renewals itself; or the owner's watcher of those files, which the client follows
   * and leaves to the owner to close.
   */
  readonly tls: { readonly cert: string; readonly key: string; readonly trustBundle: string } | TlsWatcher;
  /** The SPIFFE ID the collector's certificate must carry. */
  readonly collectorId: string;
  /** Directory of the on-disk spool (created 0700). */
  readonly spoolDir: string;
  /** Most bytes the spool may hold on disk. */
  readonly spoolMaxBytes: number;
  /** `open`: keep serving, count what could not be kept; `closed`: `accepting()` turns false when the spool is full. */
  readonly failMode: 'open' | 'closed';
  /** Most events per request (default 500). */
  readonly batchSize?: number;
  /** Most bytes of JSON per request (default 512 KiB, under the collector's default 1 MiB body limit). */
  readonly batchMaxBytes?: number;
  /** Longest an event waits in memory for a batch to fill (default 100 ms). */
  readonly batchIntervalMs?: number;
  /** Events held in memory before they go to the spool (default 10,000). */
  readonly queueMax?: number;
  /** Retry backoff bounds while the collector is away (defaults 100 ms and 5 s). */
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
  /** Per-request timeout (default 10 s). */
  readonly requestTimeoutMs?: number;
  /** Allowance on the collector certificate's validity (the part's `tls.clockSkew`; default 60 s). */
  readonly clockSkewMs?: number;
  /** How often the certificate files are checked for a renewal, when the client watches them (default 5 s). */
  readonly tlsReloadIntervalMs?: number;
  readonly logger?: Logger;
  /** Registers queue/spool gauges and delivered/lost counters here when given. */
  readonly metricsRegistry?: MetricsRegistry;
}

/** Counters and depths of an {@link AuditClient}. */
export interface AuditClientMetrics {
  /** Events in memory, including a batch in flight. */
  readonly queueDepth: number;
  /** Events waiting in the spool. */
  readonly spoolDepth: number;
  readonly spoolBytes: number;
  readonly delivered: number;
  /** Events that went through the spool. */
  readonly spooled: number;
  /** Events that could not be kept (spool full, invalid, emitted after close); never silent: each loss is logged. */
  readonly lost: number;
  /** Failed deliveries (each retried). */
  readonly failures: number;
}

/** The collector client: an {@link AuditSink} plus metrics. */
export interface AuditClient extends AuditSink {
  metrics(): AuditClientMetrics;
}

/**
 * Creates the client the STS and the sidecar emit audit events through. `emit` never blocks:
 * events are batched in memory and posted over mTLS to `POST /v1/events`; while the collector
 * is unreachable they go to a bounded on-disk spool and are replayed in order when it returns
 * (also by the next process, if this one stops first). Order is kept throughout: once anything
 * is spooled, new events queue behind it.
 */
export function createAuditClient(options: AuditClientOptions): AuditClient {
  if (options.failMode !== 'open' && options.failMode !== 'closed')
    throw new TypeError('"failMode" must be "open" or "closed"');
  if (!Number.isSafeInteger(options.spoolMaxBytes) || options.spoolMaxBytes < 1024)
    throw new TypeError('"spoolMaxBytes" must be an integer of at least 1024');
  if (!/^https:\/\//.test(options.url)) throw new TypeError('"url" must be an https URL');
  return new Client(options);
}

class Client implements AuditClient {
  readonly #o: AuditClientOptions;
  readonly #logger: Logger;
  #agent: Agent;
  readonly #tls: TlsWatcher;
  readonly #ownsTls: boolean;
  readonly #endpoint: string;
  readonly #batchSize: number;
  readonly #queueMax: number;
  #queue: AuditEvent[] = [];
  #inflight = 0;
  #spool: Spool | undefined;
  #spoolFull = false;
  #failing = false;
  #retryAt = 0;
  #backoff: number;
  #delivered = 0;
  #spooled = 0;
  #lost = 0;
  #failures = 0;
  #closing = false;
  #closed = false;
  #closingDone: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #idleWaiters: (() => void)[] = [];
  readonly #done: Promise<void>;

  constructor(o: AuditClientOptions) {
    this.#o = o;
    this.#logger = o.logger ?? createLogger({ name: 'audit-client' });
    this.#batchSize = o.batchSize ?? 500;
    this.#queueMax = o.queueMax ?? 10_000;
    this.#backoff = o.retryMinMs ?? 100;
    this.#endpoint = new URL('/v1/events', o.url).href;
    // A renewed certificate is picked up without a restart: new connections use the new leaf.
    this.#ownsTls = !('current' in o.tls);
    this.#tls =
      'current' in o.tls
        ? o.tls
        : watchTlsFiles({ ...o.tls, reloadInterval: o.tlsReloadIntervalMs ?? 5_000 }, this.#logger);
    this.#agent = this.#connect(this.#tls.current());
    this.#tls.onChange((material) => {
      const old = this.#agent;
      this.#agent = this.#connect(material);
      void old.close();
    });
    if (o.metricsRegistry) this.#registerMetrics(o.metricsRegistry);
    this.#done = this.#run().catch((err: unknown) => {
      this.#logger.error(
        { err },
        'audit client stopped on an unexpected error; events emitted from now on are lost',
      );
      this.#closed = true;
      this.#releaseIdle();
    });
  }

  emit(event: AuditEvent): void {
    if (this.#closed || this.#closing) return this.#lose(1, 'emitted after close');
    let parsed: AuditEvent;
    try {
      parsed = parseAuditEvent(event);
    } catch (err) {
      return this.#lose(1, `invalid event: ${(err as Error).message}`);
    }
    if (this.#spoolFull && this.#queue.length >= this.#queueMax)
      return this.#lose(1, 'memory queue and spool are full');
    this.#queue.push(parsed);
    // The first event wakes a loop that sleeps on an empty queue, so a lone event leaves within one
    // batch interval; a full batch wakes it early.
    if (
      this.#queue.length === 1 ||
      this.#queue.length >= this.#batchSize ||
      this.#queue.length > this.#queueMax
    )
      this.#wake?.();
  }

  accepting(): boolean {
    if (this.#closed || this.#closing) return false;
    return this.#o.failMode === 'open' || !this.#spoolFull;
  }

  flush(): Promise<void> {
    if (this.#isIdle() || this.#closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.#idleWaiters.push(resolve);
      this.#wake?.();
    });
  }

  /** An mTLS agent presenting `material`, accepting only a collector named by `collectorId`. */
  #connect(material: TlsMaterial): Agent {
    return new Agent({
      connect: collectorConnector(material, this.#o.collectorId, {
        timeoutMs: this.#o.requestTimeoutMs ?? 10_000,
        ...(this.#o.clockSkewMs !== undefined ? { clockSkewMs: this.#o.clockSkewMs } : {}),
      }),
      keepAliveTimeout: 30_000,
    });
  }

  close(): Promise<void> {
    this.#closingDone ??= (async () => {
      this.#closing = true;
      this.#wake?.();
      await this.#done;
      this.#closed = true;
      if (this.#ownsTls) this.#tls.close();
      await this.#agent.close();
    })();
    return this.#closingDone;
  }

  metrics(): AuditClientMetrics {
    return {
      queueDepth: this.#queue.length + this.#inflight,
      spoolDepth: this.#spool?.depth ?? 0,
      spoolBytes: this.#spool?.bytes ?? 0,
      delivered: this.#delivered,
      spooled: this.#spooled,
      lost: this.#lost,
      failures: this.#failures,
    };
  }

  #lose(n: number, why: string): void {
    this.#lost += n;
    // Never silent: every loss is logged with the running total (STYLE: nothing dropped silently).
    this.#logger.error(
      { lost: n, totalLost: this.#lost, failMode: this.#o.failMode },
      `audit events lost: ${why}`,
    );
  }

  #isIdle(): boolean {
    return this.#queue.length === 0 && this.#inflight === 0;
  }

  #releaseIdle(): void {
    const waiters = this.#idleWaiters.splice(0);
    for (const w of waiters) w();
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = Number.isFinite(ms) ? setTimeout(done, Math.max(0, ms)) : undefined;
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = () => {
        this.#wake = undefined;
        done();
      };
    });
  }

  /** Moves events to the spool, counting what does not fit. */
  async #spill(events: AuditEvent[]): Promise<void> {
    if (!events.length) return;
    const kept = await this.#spool!.append(events);
    this.#spooled += kept;
    if (kept < events.length) {
      this.#spoolFull = true;
      this.#lose(events.length - kept, `spool is full (${this.#o.spoolMaxBytes} bytes)`);
    }
  }

  async #run(): Promise<void> {
    this.#spool = await Spool.open(this.#o.spoolDir, this.#o.spoolMaxBytes);
    if (this.#spool.depth)
      this.#logger.info({ events: this.#spool.depth }, 'replaying audit events left in the spool');
    const interval = this.#o.batchIntervalMs ?? 100;
    for (;;) {
      const spool = this.#spool;
      if (spool.depth > 0 || this.#failing || this.#queue.length > this.#queueMax) {
        // Spool mode: everything new goes behind what is spooled, so order holds.
        await this.#spill(this.#queue.splice(0));
        if (this.#isIdle()) this.#releaseIdle();
        if (spool.depth === 0) {
          this.#failing = false;
          continue;
        }
        const wait = this.#retryAt - Date.now();
        if (wait > 0) {
          if (this.#closing) return;
          await this.#sleep(wait);
          continue;
        }
        const { count, body } = this.#batch(await spool.peek(this.#batchSize));
        if (await this.#post(body)) {
          await spool.ack(count);
          this.#delivered += count;
          if (spool.bytes < spool.maxBytes / 2) this.#spoolFull = false;
        } else if (this.#closing) {
          return;
        }
        continue;
      }
      if (this.#queue.length === 0) {
        this.#releaseIdle();
        if (this.#closing) return;
        await this.#sleep(Infinity);
        continue;
      }
      if (this.#queue.length < this.#batchSize && !this.#closing && !this.#idleWaiters.length) {
        // Let the batch fill for up to one interval; emit wakes us early once it is full.
        await this.#sleep(interval);
      }
      const { count, body } = this.#batch(this.#queue.slice(0, this.#batchSize));
      const batch = this.#queue.splice(0, count);
      this.#inflight = batch.length;
      const ok = await this.#post(body);
      if (ok) this.#delivered += batch.length;
      else await this.#spill([...batch, ...this.#queue.splice(0)]);
      this.#inflight = 0;
    }
  }

  /**
   * The leading `events` that fit in one request body (at least one), and that body: each event
   * is serialized once, for both the size check and the body.
   */
  #batch(events: readonly AuditEvent[]): { count: number; body: string } {
    const max = this.#o.batchMaxBytes ?? 524_288;
    const parts: string[] = [];
    let bytes = 12; // {"events":[]}
    for (const event of events) {
      const json = JSON.stringify(event);
      bytes += Buffer.byteLength(json) + 1;
      if (bytes > max && parts.length > 0) break;
      parts.push(json);
    }
    return { count: parts.length, body: `{"events":[${parts.join(',')}]}` };
  }

  /** Posts one batch body; false (and backoff set) when the collector is unreachable or refuses. */
  async #post(body: string): Promise<boolean> {
    try {
      const res = await request(this.#endpoint, {
        method: 'POST',
        dispatcher: this.#agent,
        headers: { 'content-type': 'application/json' },
        body,
        headersTimeout: this.#o.requestTimeoutMs ?? 10_000,
        bodyTimeout: this.#o.requestTimeoutMs ?? 10_000,
      });
      const text = await res.body.text();
      if (res.statusCode === 200) {
        this.#failing = false;
        this.#backoff = this.#o.retryMinMs ?? 100;
        return true;
      }
      this.#fail(`collector answered ${res.statusCode}: ${text.slice(0, 200)}`);
      return false;
    } catch (err) {
      this.#fail(`collector unreachable: ${(err as Error).message}`);
      return false;
    }
  }

  #fail(why: string): void {
    this.#failures++;
    if (!this.#failing) this.#logger.warn({ url: this.#o.url }, `audit delivery failing, spooling: ${why}`);
    this.#failing = true;
    this.#retryAt = Date.now() + this.#backoff;
    this.#backoff = Math.min(this.#backoff * 2, this.#o.retryMaxMs ?? 5_000);
  }

  #registerMetrics(registry: MetricsRegistry): void {
    const m = () => this.metrics();
    new Gauge({
      name: 'portcullis_audit_queue_depth',
      help: 'Audit events waiting in memory',
      registers: [registry],
      collect() {
        this.set(m().queueDepth);
      },
    });
    new Gauge({
      name: 'portcullis_audit_spool_depth',
      help: 'Audit events waiting in the on-disk spool',
      registers: [registry],
      collect() {
        this.set(m().spoolDepth);
      },
    });
    new Gauge({
      name: 'portcullis_audit_spool_bytes',
      help: 'Bytes of the on-disk audit spool',
      registers: [registry],
      collect() {
        this.set(m().spoolBytes);
      },
    });
    for (const [name, help, key] of [
      ['portcullis_audit_events_delivered_total', 'Audit events delivered to the collector', 'delivered'],
      ['portcullis_audit_events_lost_total', 'Audit events that could not be kept', 'lost'],
    ] as const) {
      let last = 0;
      new Counter({
        name,
        help,
        registers: [registry],
        collect() {
          const now = m()[key];
          this.inc(now - last);
          last = now;
        },
      });
    }
  }
}
