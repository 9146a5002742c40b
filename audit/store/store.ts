import type { AuditEvent } from '../../core/index.ts';
import type { AuditRecord } from '../record.ts';
import type { RecordFilter } from '../query-filter.ts';

/** The head of a log: how many records it holds and the hash of the last one. */
export interface LogHead {
  readonly size: number;
  /** Hash of record `size - 1`, or 64 zeros for an empty log. */
  readonly hash: string;
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
  /** Records with `fromSeq <= seq < toSeq` (default: to the head), in order. */
  read(fromSeq: number, toSeq?: number): AsyncIterable<AuditRecord>;
  /** Stored canonical lines in storage order, as they are: what `verify` checks, tampered or not. */
  readLines(fromSeq?: number): AsyncIterable<string>;
  /**
   * The same lines as {@link readLines}, as buffers of whole `\n`-terminated lines: the fast
   * path of `verify`, which hashes bytes without building strings.
   */
  readBuffers(): AsyncIterable<Buffer>;
  /** Records matching `filter`, in seq order, at most `filter.limit`. */
  query(filter: RecordFilter): Promise<AuditRecord[]>;
  /** Number of durable records. */
  size(): Promise<number>;
  /** Size and last hash. */
  head(): Promise<LogHead>;
  /** Waits for pending appends, then releases files or connections. Later calls fail with `ERR_AUDIT_STORE_CLOSED`. */
  close(): Promise<void>;
}

/** Dependencies of a store: the clock that stamps record times. */
export interface StoreDeps {
  readonly clock?: () => Date;
}

interface Pending {
  readonly events: readonly AuditEvent[];
  resolve(records: AuditRecord[]): void;
  reject(err: unknown): void;
}

/**
 * Group commit: appends that arrive while a batch is being made durable wait and go together
 * in the next batch, so that one fsync (or one transaction) serves many producers.
 */
export class GroupCommitter {
  #queue: Pending[] = [];
  #running: Promise<void> | undefined;
  readonly #write: (events: readonly AuditEvent[]) => Promise<AuditRecord[]>;
  readonly #maxBatch: number;

  constructor(write: (events: readonly AuditEvent[]) => Promise<AuditRecord[]>, maxBatch = 50_000) {
    this.#write = write;
    this.#maxBatch = maxBatch;
  }

  /** Queues events; resolves with their records once the batch holding them is written. */
  submit(events: readonly AuditEvent[]): Promise<AuditRecord[]> {
    if (events.length === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      this.#queue.push({ events, resolve, reject });
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
        const all = batch.length === 1 ? batch[0]!.events : batch.flatMap((p) => p.events);
        try {
          const records = await this.#write(all);
          let at = 0;
          for (const p of batch) {
            p.resolve(records.slice(at, at + p.events.length));
            at += p.events.length;
          }
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
  readonly #prepare: (events: readonly AuditEvent[]) => { records: AuditRecord[]; prepared: P };
  readonly #persist: (prepared: P) => Promise<void>;
  readonly #maxInFlight: number;
  readonly #maxBatch: number;

  constructor(
    prepare: (events: readonly AuditEvent[]) => { records: AuditRecord[]; prepared: P },
    persist: (prepared: P) => Promise<void>,
    options: { maxInFlight?: number; maxBatch?: number } = {},
  ) {
    this.#prepare = prepare;
    this.#persist = persist;
    this.#maxInFlight = options.maxInFlight ?? 2;
    this.#maxBatch = options.maxBatch ?? 50_000;
  }

  /** Queues events; resolves with their records once the batch holding them is durable. */
  submit(events: readonly AuditEvent[]): Promise<AuditRecord[]> {
    if (events.length === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      this.#queue.push({ events, resolve, reject });
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
      let built: { records: AuditRecord[]; prepared: P };
      try {
        built = this.#prepare(batch.length === 1 ? batch[0]!.events : batch.flatMap((p) => p.events));
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
          () => {
            let at = 0;
            for (const p of batch) {
              p.resolve(built.records.slice(at, at + p.events.length));
              at += p.events.length;
            }
          },
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
