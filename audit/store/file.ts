import { mkdir, open, readdir, readFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { AuditEvent } from '../../core/index.ts';
import type { AuditRecord } from '../record.ts';
import { GENESIS_PREV, buildRecord, parseRecordLine, scanRecordLine } from '../record.ts';
import { StoreError } from '../errors.ts';
import type { RecordFilter } from '../query-filter.ts';
import { scanQuery } from '../query-filter.ts';
import type { AuditStore, LogHead, StoreDeps } from './store.ts';
import { PipelineCommitter, linesToBuffers } from './store.ts';

/** Options of {@link openFileStore}. */
export interface FileStoreOptions extends StoreDeps {
  /** Directory of the segment files; created (0700) if missing. */
  readonly dir: string;
  /** Records per segment file before a new one starts (default 100,000). */
  readonly segmentRecords?: number;
  /** Open without recovery and refuse appends: what `verify` uses, so it sees the files as they are. */
  readonly readOnly?: boolean;
  /** fdatasync each batch (default true). Only benchmarks turn it off, to measure its cost. */
  readonly fsync?: boolean;
  /** Told about a torn tail dropped on open. */
  readonly onRecover?: (info: { segment: string; droppedBytes: number }) => void;
}

const SEGMENT = /^(\d{16})\.jsonl$/;
const segmentName = (first: number) => `${String(first).padStart(16, '0')}.jsonl`;

interface Prepared {
  readonly first: number;
  readonly lines: readonly string[];
  readonly head: string;
}

interface Segment {
  readonly first: number;
  readonly name: string;
}

/**
 * The embedded store: append-only segment files of canonical JSON lines (one record per line),
 * group-committed with one fdatasync per batch. Opening for writing recovers from a crash: a
 * torn last line is cut off and the last segment is verified against the chain.
 */
export class FileStore implements AuditStore {
  readonly kind = 'file';
  readonly dir: string;
  #segments: Segment[] = [];
  #fh: FileHandle | undefined;
  #segCount = 0;
  #size = 0;
  #head = GENESIS_PREV;
  #closed = false;
  #broken: StoreError | undefined;
  /** Size and head including batches built but not yet durable. */
  #prepSize = 0;
  #prepHead = GENESIS_PREV;
  readonly #committer: PipelineCommitter<Prepared>;
  readonly #options: FileStoreOptions;
  readonly #clock: () => Date;

  private constructor(options: FileStoreOptions) {
    this.#options = options;
    this.dir = options.dir;
    this.#clock = options.clock ?? (() => new Date());
    this.#committer = new PipelineCommitter(
      (events) => this.#prepare(events),
      (batch) => this.#persist(batch),
    );
  }

  /** Opens (and, unless read-only, recovers) the store in `options.dir`. */
  static async open(options: FileStoreOptions): Promise<FileStore> {
    const segmentRecords = options.segmentRecords ?? 100_000;
    if (!Number.isSafeInteger(segmentRecords) || segmentRecords < 1)
      throw new TypeError('"segmentRecords" must be a positive integer');
    const store = new FileStore({ ...options, segmentRecords });
    await store.#load();
    return store;
  }

  async #load(): Promise<void> {
    const { dir, readOnly } = this.#options;
    let names: string[];
    try {
      if (!readOnly) await mkdir(dir, { recursive: true, mode: 0o700 });
      names = await readdir(dir);
    } catch (err) {
      throw new StoreError(
        'ERR_AUDIT_STORE_UNAVAILABLE',
        `${dir}: cannot open the store directory (${(err as NodeJS.ErrnoException).code})`,
        { cause: err },
      );
    }
    this.#segments = names
      .map((name) => SEGMENT.exec(name))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => ({ first: Number(m[1]), name: m[0] }))
      .sort((a, b) => a.first - b.first);
    const last = this.#segments.at(-1);
    if (!last) return;
    const file = join(dir, last.name);
    const content = await readFile(file, 'utf8');
    const cut = content.lastIndexOf('\n') + 1;
    const lines = content.slice(0, cut).split('\n');
    lines.pop();
    if (!readOnly) {
      // A batch is one write: after a crash only its end can be missing, so a torn last line is
      // a record nobody was told was stored. Dropping it is safe; anything else is corruption.
      const fh = await open(file, 'r+');
      try {
        if (cut < Buffer.byteLength(content)) {
          const keep = Buffer.byteLength(content.slice(0, cut));
          await fh.truncate(keep);
          await fh.datasync();
          this.#options.onRecover?.({ segment: file, droppedBytes: Buffer.byteLength(content) - keep });
        }
      } finally {
        await fh.close();
      }
      await this.#verifyTail(last, lines);
    }
    this.#segCount = lines.length;
    this.#size = last.first + lines.length;
    this.#head = lines.length ? scanRecordLine(lines.at(-1)!).hash : await this.#lastHashBefore(last);
    this.#prepSize = this.#size;
    this.#prepHead = this.#head;
  }

  async #lastHashBefore(segment: Segment): Promise<string> {
    const i = this.#segments.indexOf(segment);
    const before = this.#segments[i - 1];
    if (!before) return GENESIS_PREV;
    const lines = (await readFile(join(this.dir, before.name), 'utf8')).split('\n');
    lines.pop();
    if (!lines.length) return GENESIS_PREV;
    return scanRecordLine(lines.at(-1)!).hash;
  }

  async #verifyTail(segment: Segment, lines: readonly string[]): Promise<void> {
    let prev: string;
    try {
      prev = await this.#lastHashBefore(segment);
    } catch (err) {
      throw new StoreError(
        'ERR_AUDIT_STORE_CORRUPT',
        `${this.dir}: the segment before ${segment.name} is corrupt`,
        {
          cause: err,
        },
      );
    }
    for (let i = 0; i < lines.length; i++) {
      const seq = segment.first + i;
      const corrupt = (why: string) =>
        new StoreError('ERR_AUDIT_STORE_CORRUPT', `${join(this.dir, segment.name)}: record ${seq}: ${why}`);
      let s;
      try {
        s = scanRecordLine(lines[i]!);
      } catch {
        throw corrupt('not a canonical record line');
      }
      if (s.seq !== seq) throw corrupt(`holds seq ${s.seq}`);
      if (s.computed !== s.hash) throw corrupt('hash does not match the record content');
      if (s.prev !== prev) throw corrupt('prev does not match the previous record');
      prev = s.hash;
    }
  }

  append(events: readonly AuditEvent[]): Promise<AuditRecord[]> {
    if (this.#closed) return Promise.reject(new StoreError('ERR_AUDIT_STORE_CLOSED', 'the store is closed'));
    if (this.#options.readOnly)
      return Promise.reject(new StoreError('ERR_AUDIT_STORE_UNAVAILABLE', `${this.dir}: opened read-only`));
    return this.#committer.submit(events);
  }

  /** Builds a batch's records after the last prepared one (CPU only; runs while the previous batch syncs). */
  #prepare(events: readonly AuditEvent[]): { records: AuditRecord[]; prepared: Prepared } {
    if (this.#broken) throw this.#broken;
    const time = this.#clock().toISOString();
    const records: AuditRecord[] = [];
    const lines: string[] = [];
    let prev = this.#prepHead;
    let seq = this.#prepSize;
    for (const event of events) {
      const { record, line } = buildRecord(seq, time, event, prev);
      records.push(record);
      lines.push(line);
      prev = record.hash;
      seq++;
    }
    const first = this.#prepSize;
    this.#prepSize = seq;
    this.#prepHead = prev;
    return { records, prepared: { first, lines, head: prev } };
  }

  /** Writes a prepared batch (rolling segments as needed) and fdatasyncs it. Batches come in order. */
  async #persist(batch: Prepared): Promise<void> {
    if (this.#broken) throw this.#broken;
    const max = this.#options.segmentRecords!;
    let inSegment = this.#segCount;
    let buffer = '';
    try {
      for (let i = 0; i < batch.lines.length; i++) {
        if (!this.#fh || inSegment >= max) {
          await this.#flush(buffer);
          buffer = '';
          await this.#roll(batch.first + i);
          inSegment = 0;
        }
        buffer += `${batch.lines[i]}\n`;
        inSegment++;
      }
      await this.#flush(buffer);
    } catch (err) {
      // The files may now end in part of a batch nobody was told about. Refuse further appends;
      // reopening runs the crash recovery, which cuts a torn line and re-verifies the tail.
      this.#broken = new StoreError(
        'ERR_AUDIT_STORE_UNAVAILABLE',
        `${this.dir}: append failed (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); reopen the store`,
        { cause: err },
      );
      throw this.#broken;
    }
    this.#size = batch.first + batch.lines.length;
    this.#head = batch.head;
    this.#segCount = inSegment;
  }

  async #flush(buffer: string): Promise<void> {
    if (!buffer) return;
    // With no file yet (first batch), #roll opened it before the first line was added.
    const bytes = Buffer.from(buffer);
    await this.#fh!.write(bytes);
    if (this.#options.fsync !== false) await this.#fh!.datasync();
  }

  async #roll(first: number): Promise<void> {
    const last = this.#segments.at(-1);
    if (!this.#fh && last && this.#segCount < this.#options.segmentRecords!) {
      this.#fh = await open(join(this.dir, last.name), 'a', 0o600);
      return;
    }
    if (this.#fh) await this.#fh.close();
    const segment = { first, name: segmentName(first) };
    this.#fh = await open(join(this.dir, segment.name), 'a', 0o600);
    this.#segments.push(segment);
    this.#segCount = 0;
    // The new file's directory entry must be durable too, or a crash could lose the whole segment.
    const dirHandle = await open(this.dir, 'r');
    try {
      await dirHandle.sync();
    } finally {
      await dirHandle.close();
    }
  }

  async *readLines(fromSeq = 0): AsyncIterable<string> {
    this.#check();
    const limit = this.#options.readOnly ? Infinity : this.#size;
    for (let i = 0; i < this.#segments.length; i++) {
      const seg = this.#segments[i]!;
      const next = this.#segments[i + 1];
      if (next && next.first <= fromSeq) continue;
      if (seg.first >= limit) break;
      const lines = (await readFile(join(this.dir, seg.name), 'utf8')).split('\n');
      lines.pop();
      for (let j = Math.max(0, fromSeq - seg.first); j < lines.length; j++) {
        if (seg.first + j >= limit) return;
        yield lines[j]!;
      }
    }
  }

  async *readBuffers(): AsyncIterable<Buffer> {
    this.#check();
    if (!this.#options.readOnly) {
      // A live store may be mid-append: only committed lines count.
      yield* linesToBuffers(this.readLines(0));
      return;
    }
    for (const seg of this.#segments) {
      const buf = await readFile(join(this.dir, seg.name));
      // A torn last line (no newline yet) is not a record.
      const cut = buf.lastIndexOf(0x0a) + 1;
      if (cut) yield buf.subarray(0, cut);
    }
  }

  async *read(fromSeq: number, toSeq?: number): AsyncIterable<AuditRecord> {
    const end = toSeq ?? Infinity;
    if (fromSeq >= end) return;
    for await (const line of this.readLines(fromSeq)) {
      const record = parseRecordLine(line);
      if (record.seq >= end) return;
      yield record;
    }
  }

  query(filter: RecordFilter): Promise<AuditRecord[]> {
    return scanQuery(this.read(filter.fromSeq ?? 0), filter);
  }

  async size(): Promise<number> {
    this.#check();
    return this.#size;
  }

  async head(): Promise<LogHead> {
    this.#check();
    return { size: this.#size, hash: this.#head };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#committer.idle();
    await this.#fh?.close();
    this.#fh = undefined;
  }

  #check(): void {
    if (this.#closed) throw new StoreError('ERR_AUDIT_STORE_CLOSED', 'the store is closed');
  }
}

/** Opens the file store in a directory; see {@link FileStore}. */
export function openFileStore(options: FileStoreOptions): Promise<FileStore> {
  return FileStore.open(options);
}
