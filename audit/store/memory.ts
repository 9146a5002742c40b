import type { AuditEvent } from '../../core/index.ts';
import type { AuditRecord } from '../record.ts';
import { GENESIS_PREV, buildRecord, parseRecordLine } from '../record.ts';
import { StoreError } from '../errors.ts';
import type { RecordFilter } from '../query-filter.ts';
import { scanQuery } from '../query-filter.ts';
import type { AuditStore, LogHead, StoreDeps } from './store.ts';
import { linesToBuffers } from './store.ts';

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
  readonly #clock: () => Date;

  constructor(deps: StoreDeps = {}) {
    this.#clock = deps.clock ?? (() => new Date());
  }

  async append(events: readonly AuditEvent[]): Promise<AuditRecord[]> {
    this.#open();
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
    return out;
  }

  readBuffers(): AsyncIterable<Buffer> {
    return linesToBuffers(this.readLines(0));
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
    return scanQuery(this.read(filter.fromSeq ?? 0), filter);
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
