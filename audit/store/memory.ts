import type { AuditEvent } from '../../core/index.ts';
import type { AuditRecord } from '../record.ts';
import { GENESIS_PREV, buildRecord, parseRecordLine } from '../record.ts';
import { StoreError } from '../errors.ts';
import type { AggregateGroup, AggregateQuery, RecordFilter } from '../query-filter.ts';
import { scanAggregate, scanQuery } from '../query-filter.ts';
import type {
  AppendOutcome,
  AuditStore,
  IdempotencyClaim,
  IdempotencyEntry,
  LogHead,
  ReadBuffersOptions,
  StoreDeps,
} from './store.ts';
import { IdempotencyTable, linesToBuffers } from './store.ts';

/**
 * An in-process store for tests and single-process tools. `lines` is exposed so that tests can
 * tamper with it the way an attacker would edit a file.
 */
export class MemoryStore implements AuditStore {
  readonly kind = 'memory';
  /** Stored canonical lines, one per record. */
  readonly lines: string[] = [];
  #records: AuditRecord[] = [];
  #closed = false;
  #seal: string | undefined;
  readonly #clock: () => Date;
  readonly #deps: StoreDeps;
  readonly #idem: IdempotencyTable;

  constructor(deps: StoreDeps = {}) {
    this.#deps = deps;
    this.#clock = deps.clock ?? (() => new Date());
    this.#idem = new IdempotencyTable(deps.idempotency, () => this.#clock().getTime());
  }

  async appendOnce(events: readonly AuditEvent[], claim: IdempotencyClaim): Promise<AppendOutcome> {
    this.#open();
    const known = this.#idem.get(claim.source, claim.key);
    if (known) return { replay: known };
    const records = await this.append(events);
    this.#idem.set({
      ...claim,
      firstSeq: records[0]!.seq,
      lastSeq: records.at(-1)!.seq,
      at: this.#clock().getTime(),
    });
    return { records };
  }

  async idempotencyEntry(source: string, key: string): Promise<IdempotencyEntry | undefined> {
    this.#open();
    return this.#idem.get(source, key);
  }

  async seals(): Promise<string[]> {
    return this.#seal ? [this.#seal] : [];
  }

  async append(events: readonly AuditEvent[]): Promise<AuditRecord[]> {
    this.#open();
    if (events.length === 0) return [];
    const out: AuditRecord[] = [];
    const time = this.#clock().toISOString();
    let prev = this.#records.at(-1)?.hash ?? GENESIS_PREV;
    for (const event of events) {
      const { record, line } = buildRecord(this.#records.length, time, event, prev);
      this.#records.push(record);
      this.lines.push(line);
      out.push(record);
      prev = record.hash;
    }
    if (this.#deps.sealer) this.#seal = this.#deps.sealer.seal(this.#records.length, prev);
    return out;
  }

  readBuffers(options: ReadBuffersOptions = {}): AsyncIterable<Buffer> {
    return linesToBuffers(this.readLines(options.fromSeq ?? 0));
  }

  async *read(fromSeq: number, toSeq?: number): AsyncIterable<AuditRecord> {
    this.#open();
    const end = Math.min(toSeq ?? this.lines.length, this.lines.length);
    for (let i = Math.max(0, fromSeq); i < end; i++) yield parseRecordLine(this.lines[i]!);
  }

  async *readLines(fromSeq = 0): AsyncIterable<string> {
    this.#open();
    for (let i = fromSeq; i < this.lines.length; i++) yield this.lines[i]!;
  }

  query(filter: RecordFilter): Promise<AuditRecord[]> {
    this.#open();
    if (filter.order !== 'desc') return scanQuery(this.read(filter.fromSeq ?? 0), filter);
    const lines = this.lines;
    const top = Math.min(filter.beforeSeq ?? lines.length, lines.length);
    function* newestFirst(): Iterable<AuditRecord> {
      for (let i = top - 1; i >= 0; i--) yield parseRecordLine(lines[i]!);
    }
    return scanQuery(newestFirst(), filter);
  }

  async queryLines(filter: RecordFilter): Promise<{ seq: number; line: string }[]> {
    return (await this.query(filter)).map((r) => ({ seq: r.seq, line: this.lines[r.seq]! }));
  }

  aggregate(query: AggregateQuery): Promise<AggregateGroup[]> {
    return scanAggregate(this.read(0), query);
  }

  async size(): Promise<number> {
    this.#open();
    return this.lines.length;
  }

  async head(): Promise<LogHead> {
    this.#open();
    return { size: this.#records.length, hash: this.#records.at(-1)?.hash ?? GENESIS_PREV };
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  #open(): void {
    if (this.#closed) throw new StoreError('ERR_AUDIT_STORE_CLOSED', 'the store is closed');
  }
}

/** Creates an empty {@link MemoryStore}. */
export function createMemoryStore(deps: StoreDeps = {}): MemoryStore {
  return new MemoryStore(deps);
}
