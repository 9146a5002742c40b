import type { AuditEvent } from '../../core/index.ts';
import type { AuditRecord } from '../record.ts';
import type { AggregateGroup, AggregateQuery, RecordFilter } from '../query-filter.ts';
import type { Sealer } from '../seal.ts';

/** The head of a log: how many records it holds and the hash of the last one. */
export interface LogHead {
  readonly size: number;
  /** Hash of record `size - 1`, or 64 zeros for an empty log. */
  readonly hash: string;
}

/** Options of {@link AuditStore.readBuffers}. */
export interface ReadBuffersOptions {
  /** Start at this seq (default 0). */
  readonly fromSeq?: number;
  /** Told about bytes at the end of a segment that are no whole line (read-only file stores). */
  readonly onTail?: (tail: { where: string; bytes: number }) => void;
}

/** An idempotency key given with a batch: scoped by the caller's SPIFFE ID. */
export interface IdempotencyClaim {
  readonly source: string;
  /** 1–128 characters of `[A-Za-z0-9._:-]`. */
  readonly key: string;
  /** Hex SHA-256 of the request body. */
  readonly bodyHash: string;
}

/** What a store keeps of a keyed batch, durably with its records. */
export interface IdempotencyEntry extends IdempotencyClaim {
  readonly firstSeq: number;
  readonly lastSeq: number;
  /** When it was stored (ms since the epoch); entries older than the retention are forgotten. */
  readonly at: number;
}

/** Outcome of {@link AuditStore.appendOnce}: new records, or the entry of the batch stored before. */
export type AppendOutcome =
  | { readonly records: AuditRecord[]; readonly replay?: undefined }
  | { readonly replay: IdempotencyEntry; readonly records?: undefined };

/** Limits of the idempotency table of a store. */
export interface IdempotencyOptions {
  /** How long an entry is kept (ms, default 24 h). */
  readonly retentionMs?: number;
  /** Most entries a file or memory store keeps in memory; the oldest go first (default 1,000,000). */
  readonly maxKeys?: number;
}

/** A range of stored records that no trusted seal covers, refused (moved aside) on open or before a write. */
export interface UncoveredTail {
  /** First and last seq of the refused records (`to < from` when only non-record bytes were refused). */
  readonly from: number;
  readonly to: number;
  /** Where the refused bytes or rows were kept for inspection. */
  readonly keptIn: string;
}

/**
 * Where audit records live. Every implementation (memory, file, postgres) passes the shared
 * conformance suite in test/audit/store-conformance.ts.
 */
export interface AuditStore {
  /** `file`, `postgres` or `memory`, for logs and metrics. */
  readonly kind: string;
  /**
   * Appends events in order after the current head and resolves with their records only once
   * they are durable. Concurrent calls are group-committed; each call's records are contiguous.
   */
  append(events: readonly AuditEvent[]): Promise<AuditRecord[]>;
  /**
   * Appends like {@link append}, at most once per `(claim.source, claim.key)`: the entry is stored
   * durably with the records (same write, same transaction). If the key is already stored, appends
   * nothing and resolves with that entry (the caller compares `bodyHash`).
   */
  appendOnce(events: readonly AuditEvent[], claim: IdempotencyClaim): Promise<AppendOutcome>;
  /** The stored entry of a key, if any and not older than the retention. */
  idempotencyEntry(source: string, key: string): Promise<IdempotencyEntry | undefined>;
  /**
   * Seal notes stored with the log as they are (newest last), for `verify`: a file store keeps
   * them inline in its segments (and yields none here), PostgreSQL in a table.
   */
  seals(): Promise<string[]>;
  /** Records with `fromSeq <= seq < toSeq` (default: to the head), in order. */
  read(fromSeq: number, toSeq?: number): AsyncIterable<AuditRecord>;
  /** Stored canonical lines in storage order, as they are: what `verify` checks, tampered or not. */
  readLines(fromSeq?: number): AsyncIterable<string>;
  /**
   * The same lines as {@link readLines}, as buffers of whole `\n`-terminated lines: the fast
   * path of `verify` and of the collector's catch-up, which hash bytes without building strings.
   * A file store's buffers may also hold its commit lines (`{"commit":…}`), which readers skip
   * or check; a buffer is valid only until the next one is asked for.
   */
  readBuffers(options?: ReadBuffersOptions): AsyncIterable<Buffer>;
  /**
   * Records matching `filter`, at most `filter.limit`: ascending from `fromSeq`, or with
   * `order: 'desc'` newest first below `beforeSeq` (without reading the whole log).
   */
  query(filter: RecordFilter): Promise<AuditRecord[]>;
  /**
   * The same records as {@link query}, as their stored canonical lines (each one record's JSON),
   * for answers that pass them on without parsing and serializing them again.
   */
  queryLines(filter: RecordFilter): Promise<{ seq: number; line: string }[]>;
  /** Counts of the records matching `query.filter`, grouped by fields and time buckets. */
  aggregate(query: AggregateQuery): Promise<AggregateGroup[]>;
  /** Optional: prepares what queries need (a file store's index), in the background of a start. */
  prepareQueries?(): Promise<void>;
  /** Number of durable records. */
  size(): Promise<number>;
  /** Size and last hash. */
  head(): Promise<LogHead>;
  /** Waits for pending appends, then releases files or connections. Later calls fail with `ERR_AUDIT_STORE_CLOSED`. */
  close(): Promise<void>;
}

/** Dependencies of a store: the clock that stamps record times, and the collector's sealer. */
export interface StoreDeps {
  readonly clock?: () => Date;
  /**
   * Signs a seal with every group commit and decides which stored records are trusted: with
   * one, a store adopts only records covered by a seal a trusted key signed, and refuses
   * (moves aside) an uncovered tail. Without one (tools, tests), every well-chained record counts.
   */
  readonly sealer?: Sealer;
  /** An extra signed note (the collector's last checkpoint) that also covers records, for logs older than seals. */
  readonly adopt?: string;
  /** Told about an uncovered tail refused. */
  readonly onUncovered?: (tail: UncoveredTail) => void;
  readonly idempotency?: IdempotencyOptions;
}

/** One caller's part of a group commit. */
export interface CommitItem {
  readonly events: readonly AuditEvent[];
  readonly claim?: IdempotencyClaim;
}

interface Pending extends CommitItem {
  resolve(outcome: AppendOutcome): void;
  reject(err: unknown): void;
}

/** Default idempotency retention: 24 hours. */
export const DEFAULT_IDEMPOTENCY_RETENTION_MS = 24 * 3_600_000;

/**
 * The in-memory idempotency table of a single-writer store: insertion-ordered, so that the
 * oldest entries are dropped first, past the retention or the key budget.
 */
export class IdempotencyTable {
  readonly #map = new Map<string, IdempotencyEntry>();
  readonly #retention: number;
  readonly #maxKeys: number;
  readonly #now: () => number;

  constructor(options: IdempotencyOptions = {}, now: () => number = Date.now) {
    this.#retention = options.retentionMs ?? DEFAULT_IDEMPOTENCY_RETENTION_MS;
    this.#maxKeys = options.maxKeys ?? 1_000_000;
    this.#now = now;
  }

  static id(source: string, key: string): string {
    return `${source} ${key}`;
  }

  get(source: string, key: string): IdempotencyEntry | undefined {
    const e = this.#map.get(IdempotencyTable.id(source, key));
    return e && e.at >= this.#now() - this.#retention ? e : undefined;
  }

  /** True when `at` is recent enough to be kept. */
  fresh(at: number): boolean {
    return at >= this.#now() - this.#retention;
  }

  set(entry: IdempotencyEntry): void {
    const id = IdempotencyTable.id(entry.source, entry.key);
    this.#map.delete(id);
    this.#map.set(id, entry);
    const cutoff = this.#now() - this.#retention;
    for (const [k, e] of this.#map) {
      if (this.#map.size <= this.#maxKeys && e.at >= cutoff) break;
      this.#map.delete(k);
    }
  }

  delete(source: string, key: string): void {
    this.#map.delete(IdempotencyTable.id(source, key));
  }

  get size(): number {
    return this.#map.size;
  }
}

/** Splits a group's records back to its callers, in order. */
function settle(batch: readonly Pending[], outcomes: readonly AppendOutcome[]): void {
  for (let i = 0; i < batch.length; i++) batch[i]!.resolve(outcomes[i]!);
}

/** Outcomes for items whose records were built in order from `records`. */
export function splitOutcomes(
  items: readonly CommitItem[],
  records: readonly AuditRecord[],
  replays: ReadonlyMap<number, IdempotencyEntry> = new Map(),
): AppendOutcome[] {
  const out: AppendOutcome[] = [];
  let at = 0;
  for (let i = 0; i < items.length; i++) {
    const replay = replays.get(i);
    if (replay) {
      out.push({ replay });
      continue;
    }
    const n = items[i]!.events.length;
    out.push({ records: records.slice(at, at + n) });
    at += n;
  }
  return out;
}

/** Adapts a committer's outcome to `append`'s plain records. */
function recordsOf(outcome: AppendOutcome): AuditRecord[] {
  if (!outcome.records) throw new TypeError('append without a claim cannot be a replay');
  return outcome.records;
}

/**
 * The `append` and `appendOnce` of a store that commits through a group or pipeline committer:
 * refused while the store is closed or broken (`refuse()` says why), then submitted. File and
 * PostgreSQL stores share it, so they refuse and validate alike.
 */
export function committedAppends(
  committer: { submit(events: readonly AuditEvent[], claim?: IdempotencyClaim): Promise<AppendOutcome> },
  refuse: () => Error | undefined,
): Pick<AuditStore, 'append' | 'appendOnce'> {
  return {
    append(events) {
      const refused = refuse();
      if (refused) return Promise.reject(refused);
      return committer.submit(events).then(recordsOf);
    },
    appendOnce(events, claim) {
      const refused = refuse();
      if (refused) return Promise.reject(refused);
      if (events.length === 0) return Promise.reject(new TypeError('appendOnce needs at least one event'));
      return committer.submit(events, claim);
    },
  };
}

/**
 * Group commit: appends that arrive while a batch is being made durable wait and go together
 * in the next batch, so that one fsync (or one transaction) serves many producers.
 */
export class GroupCommitter {
  #queue: Pending[] = [];
  #running: Promise<void> | undefined;
  readonly #write: (items: readonly CommitItem[]) => Promise<AppendOutcome[]>;
  readonly #maxBatch: number;

  constructor(write: (items: readonly CommitItem[]) => Promise<AppendOutcome[]>, maxBatch = 50_000) {
    this.#write = write;
    this.#maxBatch = maxBatch;
  }

  /** Queues events; resolves with their outcome once the batch holding them is written. */
  submit(events: readonly AuditEvent[], claim?: IdempotencyClaim): Promise<AppendOutcome> {
    if (events.length === 0) return Promise.resolve({ records: [] });
    return new Promise((resolve, reject) => {
      this.#queue.push({ events, claim, resolve, reject });
      this.#running ??= this.#drain();
    });
  }

  /** Resolves once every submitted append has settled. */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  async #drain(): Promise<void> {
    // Let producers that run in the same tick join the first batch.
    await new Promise<void>((r) => setImmediate(r));
    try {
      while (this.#queue.length) {
        const batch: Pending[] = [];
        let count = 0;
        while (
          this.#queue.length &&
          (count === 0 || count + this.#queue[0]!.events.length <= this.#maxBatch)
        ) {
          const p = this.#queue.shift()!;
          batch.push(p);
          count += p.events.length;
        }
        try {
          settle(batch, await this.#write(batch));
        } catch (err) {
          for (const p of batch) p.reject(err);
        }
      }
    } finally {
      this.#running = undefined;
    }
  }
}

/** Groups lines into `\n`-terminated buffers of about 1 MiB, for stores that hold lines as strings. */
export async function* linesToBuffers(lines: AsyncIterable<string>): AsyncIterable<Buffer> {
  let batch: string[] = [];
  let size = 0;
  for await (const line of lines) {
    batch.push(line);
    size += line.length;
    if (size >= 1_048_576) {
      yield Buffer.from(`${batch.join('\n')}\n`);
      batch = [];
      size = 0;
    }
  }
  if (batch.length) yield Buffer.from(`${batch.join('\n')}\n`);
}

/**
 * Group commit with a two-stage pipeline, for stores whose records can be built before the
 * previous batch is durable (a single writer, like the file store): while batch k is written and
 * fsynced, batch k+1 is already being built. Batches are persisted strictly in order; a batch's
 * appends resolve only after its own persist. If a persist fails, the ones chained after it must
 * fail too (the store's `persist` refuses once broken).
 */
export class PipelineCommitter<P> {
  #queue: Pending[] = [];
  #tail: Promise<void> = Promise.resolve();
  #inflight = 0;
  #scheduled = false;
  readonly #prepare: (items: readonly CommitItem[]) => { outcomes: AppendOutcome[]; prepared: P };
  readonly #persist: (prepared: P) => Promise<void>;
  readonly #maxInFlight: number;
  readonly #maxBatch: number;

  constructor(
    prepare: (items: readonly CommitItem[]) => { outcomes: AppendOutcome[]; prepared: P },
    persist: (prepared: P) => Promise<void>,
    options: { maxInFlight?: number; maxBatch?: number } = {},
  ) {
    this.#prepare = prepare;
    this.#persist = persist;
    this.#maxInFlight = options.maxInFlight ?? 2;
    this.#maxBatch = options.maxBatch ?? 50_000;
  }

  /** Queues events; resolves with their outcome once the batch holding them is durable. */
  submit(events: readonly AuditEvent[], claim?: IdempotencyClaim): Promise<AppendOutcome> {
    if (events.length === 0) return Promise.resolve({ records: [] });
    return new Promise((resolve, reject) => {
      this.#queue.push({ events, claim, resolve, reject });
      this.#kick();
    });
  }

  /** Resolves once every submitted append has settled. */
  async idle(): Promise<void> {
    while (this.#inflight || this.#queue.length) {
      await this.#tail;
      await new Promise<void>((r) => setImmediate(r));
    }
  }

  #kick(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    // Let producers that run in the same tick join the batch.
    setImmediate(() => {
      this.#scheduled = false;
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#queue.length && this.#inflight < this.#maxInFlight) {
      const batch: Pending[] = [];
      let count = 0;
      while (this.#queue.length && (count === 0 || count + this.#queue[0]!.events.length <= this.#maxBatch)) {
        const p = this.#queue.shift()!;
        batch.push(p);
        count += p.events.length;
      }
      let built: { outcomes: AppendOutcome[]; prepared: P };
      try {
        built = this.#prepare(batch);
      } catch (err) {
        for (const p of batch) p.reject(err);
        continue;
      }
      this.#inflight++;
      const done = this.#tail.then(() => this.#persist(built.prepared));
      this.#tail = done.then(
        () => {},
        () => {},
      );
      void done
        .then(
          () => settle(batch, built.outcomes),
          (err: unknown) => {
            for (const p of batch) p.reject(err);
          },
        )
        .finally(() => {
          this.#inflight--;
          if (this.#queue.length) this.#kick();
        });
    }
  }
}
