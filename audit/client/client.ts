import { collectorConnector } from './server-identity.ts';
import { Agent, request } from 'undici';
import type { Registry as MetricsRegistry } from 'prom-client';
import { Counter, Gauge } from 'prom-client';
import { watchTlsFiles } from '../../ca/index.ts';
import type { TlsMaterial, TlsWatcher } from '../../ca/index.ts';
import { AuditEventError, createLogger, parseAuditEvent } from '../../core/index.ts';
import type { AuditEvent, AuditSink, Logger } from '../../core/index.ts';
import { AuditSpoolError } from '../errors.ts';
import { RESERVED_EVENT_TYPE } from '../record.ts';
import { PendingLines } from './pending.ts';
import { Spool } from './spool.ts';
import {
  DEFAULT_REPORT_INTERVAL_MS,
  REPORT_INTERVAL_MAX_MS,
  REPORT_INTERVAL_MIN_MS,
  SPOOL_REPORT_HEADER,
  formatSpoolReport,
} from '../spool-report.ts';
import type { SpoolReport, SpoolState } from '../spool-report.ts';
import type { SpoolBatch } from './spool.ts';

/** How the client's warning that delivery started failing begins (the CLI picks it out of the log). */
export const DELIVERY_FAILING = 'audit delivery failing';

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
  /** Directory of the on-disk write-ahead spool (created 0700). */
  readonly spoolDir: string;
  /** Most bytes the spool may hold on disk. */
  readonly spoolMaxBytes: number;
  /**
   * `closed`: every event is written and fsynced to the spool as soon as it is emitted (concurrent
   * events share one fsync) and `record()` resolves only then; `accepting()` turns false when the
   * spool is full. `open`: events reach the spool within the loss window; nothing waits.
   */
  readonly failMode: 'open' | 'closed';
  /**
   * `failMode: open` only: the most events (`events`) and the longest time (`ms`) an event waits
   * in memory before its spool write; what a crash can lose (defaults 1,000 events, 200 ms).
   */
  readonly lossWindow?: { readonly events?: number; readonly ms?: number };
  /** Deprecated (decision 0028): only the default of `lossWindow.ms`. */
  readonly batchIntervalMs?: number;
  /** Most events per request (default 500). */
  readonly batchSize?: number;
  /** Most bytes of JSON per request (default 512 KiB, under the collector's default 1 MiB body limit). */
  readonly batchMaxBytes?: number;
  /** Events held in memory waiting for the spool before new ones are refused (default 10,000). */
  readonly queueMax?: number;
  /** Retry backoff bounds while the collector is away (defaults 100 ms and 5 s). */
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
  /** Per-request timeout (default 10 s). */
  readonly requestTimeoutMs?: number;
  /**
   * How long `close()` keeps delivering the spool to a reachable collector (default 5 s). What is
   * left stays in the spool, durable, and is delivered by the next start: a large backlog never
   * holds a shutdown past its drain budget.
   */
  readonly closeDeliveryMs?: number;
  /**
   * How often the client tells the collector about its spool when no batch carried a report
   * (`POST /v1/sources/report`; default 30 s, at least 1 s): an idle source still shows as alive,
   * and the collector calls a source stale after 3 intervals without a word (decision 0096).
   */
  readonly reportIntervalMs?: number;
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
  /** Events in memory, not yet in the spool (including a spool write in progress). */
  readonly queueDepth: number;
  /** Events in the spool not yet delivered. */
  readonly spoolDepth: number;
  /** Bytes of the spool files. */
  readonly spoolBytes: number;
  readonly delivered: number;
  /** Events written to the spool. */
  readonly spooled: number;
  /** Spool writes (each one write and one fdatasync; concurrent events share one). */
  readonly spoolWrites: number;
  /** Events that could not be kept (spool full, invalid, emitted after close); never silent: each loss is logged. */
  readonly lost: number;
  /** Failed deliveries (each retried). */
  readonly failures: number;
  /** Events of batches the collector refused for good (idempotency mismatch), set aside on disk. */
  readonly rejected: number;
  /** Batches the collector answered as replays of a batch it had already stored. */
  readonly replayed: number;
  /**
   * Events the previous process on this spool may have lost: it stopped without closing the
   * spool in `failMode: open`, so up to its loss window of events was still in memory.
   */
  readonly possiblyLostAtRestart: number;
}

/** The collector client: an {@link AuditSink} plus metrics. */
export interface AuditClient extends AuditSink {
  metrics(): AuditClientMetrics;
}

const IDEMPOTENCY_MISMATCH = 'ERR_AUDIT_IDEMPOTENCY_MISMATCH';
const BAD_REQUEST = 'ERR_AUDIT_BAD_REQUEST';
/** failMode closed: how long `accepting()` stays false after a spool write failed, before the next event tries again. */
const WRITE_RETRY_MS = 1_000;
/** Longest `Retry-After` obeyed, so that one bad header cannot stall delivery for days. */
const MAX_RETRY_AFTER_MS = 300_000;

/**
 * Creates the client the STS and the sidecar emit audit events through (decision 0028). Every
 * event goes first to an on-disk write-ahead spool, then, in order, to the collector over mTLS
 * (`POST /v1/events`) in batches whose boundaries and `Idempotency-Key` are fixed before the
 * first attempt, so a retry — also by the next process, after a crash — sends the same bytes
 * under the same key. `failMode: closed` makes each event durable as soon as it is emitted and
 * lets callers wait for it (`record`); `failMode: open` writes within a loss window and never
 * makes anyone wait.
 */
export function createAuditClient(options: AuditClientOptions): AuditClient {
  if (options.failMode !== 'open' && options.failMode !== 'closed')
    throw new TypeError('"failMode" must be "open" or "closed"');
  if (!Number.isSafeInteger(options.spoolMaxBytes) || options.spoolMaxBytes < 1024)
    throw new TypeError('"spoolMaxBytes" must be an integer of at least 1024');
  if (!/^https:\/\//.test(options.url)) throw new TypeError('"url" must be an https URL');
  const w = options.lossWindow;
  if (w?.events !== undefined && (!Number.isSafeInteger(w.events) || w.events < 1))
    throw new TypeError('"lossWindow.events" must be a positive integer');
  if (w?.ms !== undefined && (!Number.isFinite(w.ms) || w.ms < 0))
    throw new TypeError('"lossWindow.ms" must be a number of milliseconds');
  const r = options.reportIntervalMs;
  if (
    r !== undefined &&
    (!Number.isSafeInteger(r) || r < REPORT_INTERVAL_MIN_MS || r > REPORT_INTERVAL_MAX_MS)
  )
    throw new TypeError(
      `"reportIntervalMs" must be an integer from ${REPORT_INTERVAL_MIN_MS} to ${REPORT_INTERVAL_MAX_MS}`,
    );
  const b = options.batchIntervalMs;
  if (b !== undefined && (!Number.isFinite(b) || b < 0))
    throw new TypeError('"batchIntervalMs" must be a number of milliseconds');
  return new Client(options);
}

type PostOutcome =
  | { readonly kind: 'ok'; readonly replayed: boolean }
  | { readonly kind: 'retry'; readonly afterMs?: number }
  | { readonly kind: 'reject'; readonly why: string };

class Client implements AuditClient {
  readonly #o: AuditClientOptions;
  readonly #logger: Logger;
  #agent: Agent;
  readonly #tls: TlsWatcher;
  readonly #ownsTls: boolean;
  readonly #endpoint: string;
  readonly #reportEndpoint: string;
  readonly #reportIntervalMs: number;
  /** When the collector last took a report (monotonic), and when one was last tried. */
  #reportedAt = -Infinity;
  #reportTriedAt = -Infinity;
  #reportTimer: NodeJS.Timeout | undefined;
  #reporting: Promise<void> | undefined;
  /** Aborts a report in flight when the client closes: a report never holds a shutdown. */
  readonly #reportAbort = new AbortController();
  /** Epoch ms of the oldest undelivered event, as the last batch built showed it. */
  #oldestTime: number | undefined;
  /** The collector answered a report with 404 (a collector older than reports): said once. */
  #reportsUnsupportedSaid = false;
  /** The collector ignored a batch's report (`Portcullis-Spool-Refused`): said once. */
  #reportRefusedSaid = false;
  readonly #batchSize: number;
  readonly #queueMax: number;
  readonly #windowEvents: number;
  readonly #windowMs: number;
  #spool: Spool | undefined;
  readonly #ready: Promise<Spool>;
  /** Events waiting for the spool, in emit order, serialized. */
  readonly #pending = new PendingLines();
  /** Events in the spool write in progress. */
  #writing = 0;
  #writer: Promise<void> | undefined;
  #windowTimer: NodeJS.Timeout | undefined;
  /** failMode open: the background fsync of what was written, at most one loss window later. */
  #syncTimer: NodeJS.Timeout | undefined;
  #syncing: Promise<void> | undefined;
  #spoolFull = false;
  /** When the last spool write failed, on the monotonic clock (undefined: the last one succeeded). */
  #writeFailedAt: number | undefined;
  #failing = false;
  /** Next delivery attempt, on the monotonic clock. */
  #retryAt = 0;
  #backoff: number;
  #delivered = 0;
  #spooled = 0;
  #spoolWrites = 0;
  #lost = 0;
  #failures = 0;
  #rejected = 0;
  #replayed = 0;
  #possiblyLost = 0;
  #closing = false;
  /** Monotonic ms past which a closing client stops delivering and leaves the rest spooled. */
  #closeDeadline = Infinity;
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
    this.#windowEvents = o.lossWindow?.events ?? 1_000;
    this.#windowMs = o.lossWindow?.ms ?? o.batchIntervalMs ?? 200;
    this.#backoff = o.retryMinMs ?? 100;
    this.#endpoint = new URL('/v1/events', o.url).href;
    this.#reportEndpoint = new URL('/v1/sources/report', o.url).href;
    this.#reportIntervalMs = o.reportIntervalMs ?? DEFAULT_REPORT_INTERVAL_MS;
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
    this.#ready = this.#openSpool();
    // Unhandled if nobody emits before it fails; #run reports it.
    this.#ready.catch(() => {});
    this.#done = this.#run().catch((err: unknown) => {
      this.#logger.error(
        { err },
        'audit client stopped on an unexpected error; events emitted from now on are lost',
      );
      this.#closed = true;
      this.#failPending(err instanceof Error ? err : new Error(String(err)));
      this.#releaseIdle();
    });
  }

  emit(event: AuditEvent): void {
    this.#enqueue(event);
  }

  record(event: AuditEvent): Promise<void> {
    if (this.#o.failMode === 'open') {
      this.#enqueue(event);
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => this.#enqueue(event, resolve, reject));
  }

  #enqueue(event: AuditEvent, resolve?: () => void, reject?: (err: Error) => void): void {
    if (this.#closed || this.#closing) {
      this.#lose(1, 'emitted after close');
      return reject?.(new AuditSpoolError('ERR_AUDIT_CLIENT_CLOSED', 'the audit client is closed'));
    }
    let line: string;
    try {
      const parsed = parseAuditEvent(event);
      // The collector refuses these for good (403): spooled, the batch would be retried for ever
      // and hold back every later event.
      if (RESERVED_EVENT_TYPE.test(parsed.type))
        throw new AuditEventError(`type ${parsed.type} is written by the collector only`);
      line = JSON.stringify(parsed);
    } catch (err) {
      this.#lose(1, `invalid event: ${(err as Error).message}`);
      return reject?.(err as Error);
    }
    if (this.#pending.length >= this.#queueMax) {
      this.#lose(1, `${this.#queueMax} events already wait for the spool`);
      return reject?.(
        new AuditSpoolError('ERR_AUDIT_SPOOL_FULL', 'too many audit events wait for the spool'),
      );
    }
    this.#pending.push(line, resolve ? { resolve, reject: reject! } : undefined);
    this.#schedule();
  }

  accepting(): boolean {
    if (this.#closed || this.#closing) return false;
    if (this.#o.failMode === 'open') return true;
    return (
      !this.#spoolFull &&
      (this.#writeFailedAt === undefined || monotonicNow() - this.#writeFailedAt >= WRITE_RETRY_MS)
    );
  }

  /** Resolves once everything emitted so far is in the spool and, unless the collector is failing, delivered. */
  async flush(): Promise<void> {
    if (this.#closed) return;
    // A spool that failed to open has been reported by #run; there is nothing to wait for then.
    if (
      !(await this.#ready.then(
        () => true,
        () => false,
      ))
    )
      return;
    await this.#writeAll();
    if (this.#shipIdle()) return;
    await new Promise<void>((resolve) => {
      this.#idleWaiters.push(resolve);
      this.#wake?.();
    });
  }

  close(): Promise<void> {
    this.#closingDone ??= (async () => {
      this.#closing = true;
      clearTimeout(this.#reportTimer);
      this.#reportAbort.abort();
      this.#closeDeadline = monotonicNow() + (this.#o.closeDeliveryMs ?? 5_000);
      await this.#writeAll().catch(() => {});
      this.#wake?.();
      await this.#done;
      this.#closed = true;
      clearTimeout(this.#windowTimer);
      clearTimeout(this.#syncTimer);
      await this.#reporting;
      if (this.#spool)
        await this.#spool.close().catch((err: unknown) => this.#logger.error({ err }, 'spool close failed'));
      if (this.#ownsTls) this.#tls.close();
      await this.#agent.close();
    })();
    return this.#closingDone;
  }

  metrics(): AuditClientMetrics {
    return {
      queueDepth: this.#pending.length + this.#writing,
      spoolDepth: this.#spool?.depth ?? 0,
      spoolBytes: this.#spool?.bytes ?? 0,
      delivered: this.#delivered,
      spooled: this.#spooled,
      spoolWrites: this.#spoolWrites,
      lost: this.#lost,
      failures: this.#failures,
      rejected: this.#rejected,
      replayed: this.#replayed,
      possiblyLostAtRestart: this.#possiblyLost,
    };
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

  #lose(n: number, why: string): void {
    this.#lost += n;
    // Never silent: every loss is logged with the running total.
    this.#logger.error(
      { lost: n, totalLost: this.#lost, failMode: this.#o.failMode },
      `audit events lost: ${why}`,
    );
  }

  // ---- the writer: memory → spool -------------------------------------------------------------

  /**
   * Starts a spool write when one is due: at once in `failMode: closed` (a write in progress
   * gathers everything emitted meanwhile into the next one: group commit); in `open` once the loss
   * window's count is reached or its time has passed since the oldest waiting event.
   */
  #schedule(): void {
    if (this.#writer || !this.#pending.length) return;
    if (
      this.#o.failMode === 'closed' ||
      this.#pending.length >= Math.min(this.#windowEvents, this.#queueMax) ||
      this.#closing
    ) {
      clearTimeout(this.#windowTimer);
      this.#windowTimer = undefined;
      this.#startWriter();
    } else {
      this.#windowTimer ??= setTimeout(() => {
        this.#windowTimer = undefined;
        this.#startWriter();
      }, this.#windowMs);
    }
  }

  #startWriter(): void {
    if (this.#writer || !this.#pending.length) return;
    this.#writer = this.#write().finally(() => {
      this.#writer = undefined;
      this.#schedule();
    });
  }

  async #write(): Promise<void> {
    let spool: Spool;
    try {
      spool = await this.#ready;
    } catch (err) {
      return this.#failPending(err as Error);
    }
    const batch = this.#pending.take();
    this.#writing = batch.count;
    let kept = 0;
    let failure: Error | undefined;
    try {
      this.#spoolWrites++;
      // closed: written and fsynced before anyone is told; open: written (a crash of this process
      // no longer loses it) and fsynced in the background within one window.
      kept = await spool.appendBytes(batch.bytes, batch.count, this.#o.failMode === 'closed');
      if (this.#o.failMode === 'open')
        this.#syncTimer ??= setTimeout(() => void this.#sync(), this.#windowMs);
      this.#writeFailedAt = undefined;
    } catch (err) {
      failure = err as Error;
      // Refuse for a moment, then let the next event try again (a disk freed, a transient error).
      this.#writeFailedAt = monotonicNow();
      this.#logger.error({ err: failure.message }, 'audit spool write failed');
    } finally {
      this.#writing = 0;
      this.#pending.release(batch);
    }
    this.#spooled += kept;
    for (const w of batch.waiters) if (w.at < kept) w.resolve();
    if (kept < batch.count) {
      if (!failure) this.#spoolFull = true;
      const refused = failure
        ? new AuditSpoolError('ERR_AUDIT_SPOOL_UNWRITABLE', 'the audit spool cannot be written')
        : new AuditSpoolError(
            'ERR_AUDIT_SPOOL_FULL',
            `the audit spool cannot take more events (${this.#o.spoolMaxBytes} bytes)`,
          );
      for (const w of batch.waiters) if (w.at >= kept) w.reject(refused);
      this.#lose(
        batch.count - kept,
        failure ? `spool write failed: ${failure.message}` : `spool is full (${this.#o.spoolMaxBytes} bytes)`,
      );
    }
    this.#wake?.();
  }

  /** Writes everything pending now, whatever the window. */
  /** Writes everything pending now, whatever the window, and fsyncs it. */
  async #writeAll(): Promise<void> {
    while (this.#writer || this.#pending.length) {
      if (!this.#writer) {
        clearTimeout(this.#windowTimer);
        this.#windowTimer = undefined;
        this.#startWriter();
      }
      await this.#writer;
    }
    await this.#sync();
  }

  /** Fsyncs what the writer wrote without syncing (failMode open); wakes the shipper, which sends only fsynced events. */
  async #sync(): Promise<void> {
    clearTimeout(this.#syncTimer);
    this.#syncTimer = undefined;
    while (this.#syncing) await this.#syncing;
    const spool = this.#spool;
    if (!spool || spool.unsynced === 0) return;
    this.#syncing = spool
      .sync()
      .catch((err: unknown) =>
        this.#logger.error({ err: (err as Error).message }, 'audit spool fsync failed'),
      )
      .finally(() => {
        this.#syncing = undefined;
      });
    await this.#syncing;
    this.#wake?.();
  }

  #failPending(err: Error): void {
    if (!this.#pending.length) return;
    const pending = this.#pending.take();
    this.#pending.release(pending);
    for (const w of pending.waiters) w.reject(err);
    this.#lose(pending.count, `the spool is unusable: ${err.message}`);
  }

  async #openSpool(): Promise<Spool> {
    const spool = await Spool.open(this.#o.spoolDir, this.#o.spoolMaxBytes);
    this.#spool = spool;
    if (spool.missing) this.#lose(spool.missing, 'their spool files were removed before delivery');
    const prev = spool.previousRun;
    if (prev.tornBytes)
      this.#logger.warn(
        { bytes: prev.tornBytes },
        'audit spool: dropped the torn end of an append a crash interrupted (never reported as kept)',
      );
    if (!prev.clean) {
      const owner = prev.owner ?? {};
      if (owner.failMode === 'open') {
        const window = Number.isSafeInteger(owner.windowEvents) ? (owner.windowEvents as number) : 0;
        this.#possiblyLost = window;
        this.#logger.error(
          { possiblyLost: window, windowMs: owner.windowMs, pid: owner.pid },
          `audit spool: the previous process stopped without closing it in failMode open; up to ${window} audit events emitted in its last ${String(owner.windowMs)} ms may be lost`,
        );
      } else {
        this.#logger.warn(
          { pid: owner.pid },
          'audit spool: the previous process stopped without closing it in failMode closed; every event it made durable is kept',
        );
      }
    }
    await spool.begin({
      failMode: this.#o.failMode,
      windowEvents: this.#o.failMode === 'open' ? this.#windowEvents : 0,
      windowMs: this.#o.failMode === 'open' ? this.#windowMs : 0,
      startedAt: new Date().toISOString(),
    });
    if (spool.depth) this.#logger.info({ events: spool.depth }, 'replaying audit events left in the spool');
    return spool;
  }

  // ---- the shipper: spool → collector ---------------------------------------------------------

  #shipIdle(): boolean {
    return (
      !this.#writer &&
      this.#pending.length === 0 &&
      (!this.#spool || this.#spool.depth === 0 || this.#failing)
    );
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

  async #run(): Promise<void> {
    const spool = await this.#ready;
    this.#scheduleReport();
    for (;;) {
      if (this.#shipIdle()) this.#releaseIdle();
      if (spool.depth === 0) {
        if (this.#closing && !this.#writer && !this.#pending.length) return;
        await this.#sleep(Infinity);
        continue;
      }
      const wait = this.#retryAt - monotonicNow();
      if (wait > 0) {
        if (this.#closing) return;
        await this.#sleep(wait);
        continue;
      }
      if (this.#closing && monotonicNow() > this.#closeDeadline) {
        this.#logger.warn(
          { events: spool.depth },
          'audit events left in the spool at shutdown; the next start delivers them',
        );
        return;
      }
      const missingBefore = spool.missing;
      const batch = await spool.nextBatch(this.#batchSize, this.#o.batchMaxBytes ?? 524_288);
      if (spool.missing > missingBefore)
        this.#lose(spool.missing - missingBefore, 'their spool files were removed before delivery');
      if (!batch) {
        // What is in the spool is not fsynced yet (failMode open): the background sync wakes us.
        if (this.#closing && !this.#writer && !this.#pending.length && !spool.unsynced) return;
        await this.#sleep(this.#windowMs);
        continue;
      }
      const outcome = await this.#post(batch);
      if (outcome.kind === 'ok') {
        await spool.ack(batch);
        this.#delivered += batch.count;
        if (outcome.replayed) this.#replayed++;
        if (this.#spoolFull && spool.bytes < spool.maxBytes / 2) this.#spoolFull = false;
      } else if (outcome.kind === 'reject') {
        const file = await spool.reject(batch, outcome.why);
        this.#rejected += batch.count;
        if (this.#spoolFull && spool.bytes < spool.maxBytes / 2) this.#spoolFull = false;
        this.#logger.error(
          { key: batch.key, events: batch.count, file },
          `audit batch refused for good by the collector and set aside: ${outcome.why}`,
        );
      } else {
        this.#fail(outcome.afterMs);
        if (this.#closing) return;
      }
    }
  }

  /** Posts one batch under its idempotency key and says what to do next. */
  async #post(batch: SpoolBatch): Promise<PostOutcome> {
    let status: number;
    let text: string;
    let headers: Record<string, string | string[] | undefined>;
    if (batch.firstTime !== undefined) this.#oldestTime = batch.firstTime;
    try {
      const res = await request(this.#endpoint, {
        method: 'POST',
        dispatcher: this.#agent,
        headers: {
          'content-type': 'application/json',
          'idempotency-key': batch.key,
          [SPOOL_REPORT_HEADER]: formatSpoolReport(this.#report(batch)),
        },
        body: batch.body,
        headersTimeout: this.#o.requestTimeoutMs ?? 10_000,
        bodyTimeout: this.#o.requestTimeoutMs ?? 10_000,
      });
      status = res.statusCode;
      headers = res.headers;
      text = await res.body.text();
    } catch (err) {
      this.#warn(`collector unreachable: ${(err as Error).message}`);
      return { kind: 'retry' };
    }
    if (status === 200) {
      this.#failing = false;
      this.#backoff = this.#o.retryMinMs ?? 100;
      this.#reportedAt = monotonicNow();
      if (headers['portcullis-spool-refused'] !== undefined && !this.#reportRefusedSaid) {
        this.#reportRefusedSaid = true;
        this.#logger.warn(
          { reason: String(headers['portcullis-spool-refused']).slice(0, 200) },
          'the collector ignored the spool report of a batch (the events were stored; said once)',
        );
      }
      return { kind: 'ok', replayed: headers['idempotent-replayed'] === 'true' };
    }
    let code = '';
    try {
      code = String((JSON.parse(text) as { error?: unknown }).error ?? '');
    } catch {
      // not JSON
    }
    if (status === 422 && code === IDEMPOTENCY_MISMATCH)
      // Same key, other bytes: a client bug that no retry can mend. Kept on disk, not looped on.
      return { kind: 'reject', why: `${status} ${code}: ${text.slice(0, 200)}` };
    if (status === 400 && code === BAD_REQUEST)
      // The collector refuses these bytes (a junk spool line, an event it does not take): no retry
      // of the same bytes can succeed, and looping on them would hold back every later event.
      return { kind: 'reject', why: `${status} ${code}: ${text.slice(0, 200)}` };
    this.#warn(`collector answered ${status}: ${text.slice(0, 200)}`);
    const after = retryAfterMs(headers['retry-after']);
    return after === undefined ? { kind: 'retry' } : { kind: 'retry', afterMs: after };
  }

  // ---- the spool report (decision 0096) ------------------------------------------------------

  /**
   * What the collector is told about the spool. With a batch: `pending` is what stays behind it
   * once it is stored, `oldestPendingMs` the age of its first event while anything stays behind
   * (0 otherwise), and the state that of a delivery that got through. Without: the whole spool.
   */
  #report(batch?: SpoolBatch): SpoolReport {
    const spool = this.#spool;
    const depth = spool?.depth ?? 0;
    const pending = batch ? Math.max(0, depth - batch.count) : depth;
    if (depth === 0) this.#oldestTime = undefined;
    const oldest =
      pending > 0 && this.#oldestTime !== undefined
        ? Math.max(0, Math.round(Date.now() - this.#oldestTime))
        : 0;
    let state: SpoolState;
    if (this.#writeFailedAt !== undefined) state = 'unwritable';
    else if (this.#spoolFull) state = 'full';
    else if (!batch && this.#failing) state = 'retrying';
    else state = pending > 0 ? 'delivering' : 'idle';
    return {
      pending,
      pendingBytes: spool?.bytes ?? 0,
      oldestPendingMs: oldest,
      missing: spool?.missing ?? 0,
      lost: this.#lost,
      state,
      intervalMs: this.#reportIntervalMs,
    };
  }

  /** Arms the next report for one interval after the last one taken (or tried). */
  #scheduleReport(): void {
    clearTimeout(this.#reportTimer);
    if (this.#closing || this.#closed) return;
    const last = Math.max(this.#reportedAt, this.#reportTriedAt);
    const wait = Number.isFinite(last) ? last + this.#reportIntervalMs - monotonicNow() : 0;
    this.#reportTimer = setTimeout(
      () => {
        this.#reporting = this.#sendReport().finally(() => {
          this.#reporting = undefined;
          this.#scheduleReport();
        });
      },
      Math.max(0, wait),
    );
    this.#reportTimer.unref();
  }

  /**
   * Sends the spool report on its own, unless a batch carried one within the interval. A report
   * that fails changes nothing else: delivery has its own retries, and an old collector (404)
   * simply never shows this source's spool.
   */
  async #sendReport(): Promise<void> {
    if (this.#closing || this.#closed) return;
    if (monotonicNow() - this.#reportedAt < this.#reportIntervalMs * 0.9) return;
    this.#reportTriedAt = monotonicNow();
    try {
      const res = await request(this.#reportEndpoint, {
        method: 'POST',
        dispatcher: this.#agent,
        signal: this.#reportAbort.signal,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(this.#report()),
        headersTimeout: this.#o.requestTimeoutMs ?? 10_000,
        bodyTimeout: this.#o.requestTimeoutMs ?? 10_000,
      });
      const text = await res.body.text();
      if (res.statusCode === 200) this.#reportedAt = monotonicNow();
      else if (res.statusCode === 404) {
        if (!this.#reportsUnsupportedSaid)
          this.#logger.info({ url: this.#o.url }, 'the collector takes no spool reports (an older version)');
        this.#reportsUnsupportedSaid = true;
      } else
        this.#logger.debug(
          { status: res.statusCode, body: text.slice(0, 200) },
          'spool report not taken by the collector',
        );
    } catch (err) {
      this.#logger.debug({ err: (err as Error).message }, 'spool report not sent');
    }
  }

  #warn(why: string): void {
    this.#failures++;
    if (!this.#failing) this.#logger.warn({ url: this.#o.url }, `${DELIVERY_FAILING}, spooling: ${why}`);
    this.#failing = true;
    if (this.#shipIdle()) this.#releaseIdle();
  }

  /** Sets the next attempt: as the collector said (`Retry-After`), else exponential backoff. */
  #fail(afterMs: number | undefined): void {
    if (afterMs !== undefined) {
      this.#retryAt = monotonicNow() + afterMs;
      return;
    }
    this.#retryAt = monotonicNow() + this.#backoff;
    this.#backoff = Math.min(this.#backoff * 2, this.#o.retryMaxMs ?? 5_000);
  }

  #registerMetrics(registry: MetricsRegistry): void {
    const m = () => this.metrics();
    for (const [name, help, key] of [
      ['portcullis_audit_queue_depth', 'Audit events waiting in memory for the spool', 'queueDepth'],
      ['portcullis_audit_spool_depth', 'Audit events in the on-disk spool not yet delivered', 'spoolDepth'],
      ['portcullis_audit_spool_bytes', 'Bytes of the on-disk audit spool', 'spoolBytes'],
      [
        'portcullis_audit_events_possibly_lost_at_restart',
        'Audit events the previous process may have lost (stopped without closing its spool in failMode open)',
        'possiblyLostAtRestart',
      ],
    ] as const) {
      new Gauge({
        name,
        help,
        registers: [registry],
        collect() {
          this.set(m()[key]);
        },
      });
    }
    for (const [name, help, key] of [
      ['portcullis_audit_events_delivered_total', 'Audit events delivered to the collector', 'delivered'],
      ['portcullis_audit_events_lost_total', 'Audit events that could not be kept', 'lost'],
      [
        'portcullis_audit_events_rejected_total',
        'Audit events of batches the collector refused for good, set aside in the spool directory',
        'rejected',
      ],
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

/**
 * Milliseconds on a clock that never jumps: retry and refusal delays are durations, and a wall
 * clock set back (an NTP step, an operator) must not stretch them by the size of the jump.
 */
function monotonicNow(): number {
  return performance.now();
}

/** `Retry-After` as delta-seconds (RFC 9110 §10.2.3), capped; undefined when absent or not a number. */
function retryAfterMs(value: string | string[] | undefined): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined || !/^\d{1,9}$/.test(v.trim())) return undefined;
  return Math.min(Number(v.trim()) * 1000, MAX_RETRY_AFTER_MS);
}
