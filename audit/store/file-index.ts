import { mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { AggregateQuery, FilterField, RecordFilter, GroupCounter } from '../query-filter.ts';
import { FILTER_FIELDS, bucketStart } from '../query-filter.ts';
import { forEachLine, readLineChunks } from './line-chunks.ts';

/** Directory of the index files, inside the store directory (decision 0073). */
const INDEX_DIR = 'index';
const VERSION = 2;
/** Dictionary id of a field an event does not have. */
const ABSENT = 0;
/** Dictionary id of every field of a line that is no record (never matches a value). */
const JUNK = 0xffffffff;
/** Segment indexes kept in memory at once (about 4.4 MB per 100,000 records). */
const CACHED_SEGMENTS = 16;

/**
 * The compact index of one segment: per record, its append time, where its line is, and the
 * dictionary ids of its type, source, subject, decision, rule and reason. Built from the segment's
 * bytes; never trusted for integrity (every record it points at is read and checked again).
 */
export class SegmentIndex {
  readonly first: number;
  count = 0;
  /** Bytes of the segment read into the index (whole lines). */
  bytes = 0;
  minTime = Infinity;
  maxTime = -Infinity;
  /** True once written to (or read from) `DIR/index/`. */
  saved = false;
  times: Float64Array;
  offsets: Float64Array;
  lengths: Uint32Array;
  /** The first 32 bits of each record's hash: what a fetched line is checked against. */
  hashes: Uint32Array;
  readonly cols: Uint32Array[];
  readonly dict: string[] = [''];
  readonly #ids = new Map<string, number>();

  constructor(first: number, capacity = 1024) {
    this.first = first;
    this.times = new Float64Array(capacity);
    this.offsets = new Float64Array(capacity);
    this.lengths = new Uint32Array(capacity);
    this.hashes = new Uint32Array(capacity);
    this.cols = FILTER_FIELDS.map(() => new Uint32Array(capacity));
  }

  /** The dictionary id of a value, or undefined when no record of the segment has it. */
  idOf(value: string): number | undefined {
    return this.#ids.get(value);
  }

  #intern(value: unknown): number {
    if (typeof value !== 'string') return ABSENT;
    let id = this.#ids.get(value);
    if (id === undefined) {
      id = this.dict.length;
      this.dict.push(value);
      this.#ids.set(value, id);
    }
    return id;
  }

  #grow(): void {
    const cap = this.times.length * 2;
    const grow = <T extends Float64Array | Uint32Array>(a: T, make: (n: number) => T): T => {
      const b = make(cap);
      b.set(a);
      return b;
    };
    this.times = grow(this.times, (n) => new Float64Array(n));
    this.offsets = grow(this.offsets, (n) => new Float64Array(n));
    this.lengths = grow(this.lengths, (n) => new Uint32Array(n));
    this.hashes = grow(this.hashes, (n) => new Uint32Array(n));
    for (let c = 0; c < this.cols.length; c++) this.cols[c] = grow(this.cols[c]!, (n) => new Uint32Array(n));
  }

  /** Adds the record line at `offset` (a line that is no record is kept as one that matches nothing). */
  add(line: Buffer, offset: number, timeCache: Map<string, number>): void {
    if (this.count === this.times.length) this.#grow();
    const i = this.count++;
    this.offsets[i] = offset;
    this.lengths[i] = line.length;
    let parsed: { time?: unknown; hash?: unknown; event?: Record<string, unknown> } | undefined;
    try {
      parsed = JSON.parse(line.toString()) as typeof parsed;
    } catch {
      parsed = undefined;
    }
    const event = parsed?.event;
    if (!event || typeof event !== 'object' || typeof parsed?.time !== 'string') {
      this.times[i] = NaN;
      for (const col of this.cols) col[i] = JUNK;
      return;
    }
    let t = timeCache.get(parsed.time);
    if (t === undefined) {
      t = Date.parse(parsed.time);
      if (timeCache.size > 1000) timeCache.clear();
      timeCache.set(parsed.time, t);
    }
    this.times[i] = t;
    this.hashes[i] = typeof parsed.hash === 'string' ? parseInt(parsed.hash.slice(0, 8), 16) >>> 0 : 0;
    if (t < this.minTime) this.minTime = t;
    if (t > this.maxTime) this.maxTime = t;
    for (let c = 0; c < FILTER_FIELDS.length; c++) this.cols[c]![i] = this.#intern(event[FILTER_FIELDS[c]!]);
  }

  /** Reads the segment's whole lines from `this.bytes` up to `limit` bytes into the index. */
  async extend(file: string, limit: number): Promise<void> {
    if (this.bytes >= limit) return;
    const timeCache = new Map<string, number>();
    let stop = false;
    for await (const chunk of readLineChunks(file, { from: this.bytes })) {
      forEachLine(chunk, (line, offset) => {
        if (stop) return;
        const end = offset + line.length + 1;
        if (end > limit) {
          stop = true;
          return;
        }
        // A commit line ({"commit":…}) is no record.
        if (line[2] !== 0x63) this.add(line, offset, timeCache);
        this.bytes = end;
      });
      if (stop) break;
    }
  }

  /**
   * A filter compiled for this segment: the dictionary id each given field must have, or
   * undefined when a value occurs in no record of the segment (nothing can match).
   */
  compile(filter: Omit<RecordFilter, 'limit'>): CompiledFilter | undefined {
    const want: [Uint32Array, number][] = [];
    for (let c = 0; c < FILTER_FIELDS.length; c++) {
      const v = filter[FILTER_FIELDS[c]!];
      if (v === undefined) continue;
      const id = this.idOf(v);
      if (id === undefined) return undefined;
      want.push([this.cols[c]!, id]);
    }
    const since = filter.since !== undefined ? Date.parse(filter.since) : -Infinity;
    const until = filter.until !== undefined ? Date.parse(filter.until) : Infinity;
    if (this.count && (this.maxTime < since || this.minTime >= until)) return undefined;
    const times = this.times;
    const timed = filter.since !== undefined || filter.until !== undefined;
    return (i) => {
      for (let k = 0; k < want.length; k++) if (want[k]![0][i] !== want[k]![1]) return false;
      if (timed) {
        const t = times[i]!;
        if (!(t >= since && t < until)) return false;
      }
      return true;
    };
  }

  /** Serialized: a JSON header line, then the columns. */
  encode(fileSize: number, mtimeMs: number): Buffer {
    const header = Buffer.from(
      `${JSON.stringify({
        v: VERSION,
        first: this.first,
        count: this.count,
        bytes: this.bytes,
        fileSize,
        mtimeMs,
        dict: this.dict,
      })}\n`,
    );
    const n = this.count;
    const parts = [
      header,
      Buffer.from(this.times.buffer, 0, n * 8),
      Buffer.from(this.offsets.buffer, 0, n * 8),
      Buffer.from(this.lengths.buffer, 0, n * 4),
      Buffer.from(this.hashes.buffer, 0, n * 4),
      ...this.cols.map((c) => Buffer.from(c.buffer, 0, n * 4)),
    ];
    return Buffer.concat(parts);
  }

  /** The index of `buf` if it describes this segment file as it is (size and mtime), else undefined. */
  static decode(buf: Buffer, first: number, fileSize: number, mtimeMs: number): SegmentIndex | undefined {
    const nl = buf.indexOf(0x0a);
    if (nl < 0) return undefined;
    let h: {
      v: number;
      first: number;
      count: number;
      bytes: number;
      fileSize: number;
      mtimeMs: number;
      dict: string[];
    };
    try {
      h = JSON.parse(buf.toString('utf8', 0, nl)) as typeof h;
    } catch {
      return undefined;
    }
    if (h.v !== VERSION || h.first !== first || h.fileSize !== fileSize || h.mtimeMs !== mtimeMs)
      return undefined;
    const n = h.count;
    if (!Number.isSafeInteger(n) || n < 0 || !Array.isArray(h.dict) || h.dict[0] !== '') return undefined;
    if (buf.length !== nl + 1 + n * (8 + 8 + 4 + 4 + 4 * FILTER_FIELDS.length)) return undefined;
    const idx = new SegmentIndex(first, Math.max(n, 1));
    let at = nl + 1;
    const take = (bytes: number) => {
      const slice = buf.subarray(at, at + bytes);
      at += bytes;
      return slice;
    };
    const copyInto = (target: Float64Array | Uint32Array, src: Buffer) =>
      Buffer.from(target.buffer, 0, src.length).set(src);
    copyInto(idx.times, take(n * 8));
    copyInto(idx.offsets, take(n * 8));
    copyInto(idx.lengths, take(n * 4));
    copyInto(idx.hashes, take(n * 4));
    for (const col of idx.cols) copyInto(col, take(n * 4));
    idx.count = n;
    idx.bytes = h.bytes;
    for (let i = 1; i < h.dict.length; i++) {
      if (typeof h.dict[i] !== 'string') return undefined;
      idx.#intern(h.dict[i]);
    }
    for (let i = 0; i < n; i++) {
      const t = idx.times[i]!;
      if (t < idx.minTime) idx.minTime = t;
      if (t > idx.maxTime) idx.maxTime = t;
    }
    return idx;
  }
}

const TAIL =
  /,"hash":"([0-9a-f]{8})[0-9a-f]{56}","prev":"[0-9a-f]{64}","seq":(\d{1,16}),"time":"[^"]{1,40}"}$/;

/**
 * True when `line` is the record a {@link LineRef} describes: its seq and the first 32 bits of
 * its hash, read off the canonical line's tail without parsing the event.
 */
export function lineIsRef(line: string, ref: LineRef): boolean {
  const m = TAIL.exec(line.slice(line.lastIndexOf(',"hash":"')));
  return m !== null && Number(m[2]) === ref.seq && parseInt(m[1]!, 16) >>> 0 === ref.hash;
}

/** Whether record `i` of a segment passes a compiled filter. */
export type CompiledFilter = (i: number) => boolean;

/** Where one matching record's line is. */
export interface LineRef {
  readonly seq: number;
  readonly segment: string;
  readonly offset: number;
  readonly length: number;
  /** First 32 bits of the record's hash, as indexed. */
  readonly hash: number;
}

/**
 * The indexes of a file store's segments: built from the segments on first use, kept in memory
 * (the newest {@link CACHED_SEGMENTS}), and, for a writable store, saved beside the segments in
 * `DIR/index/` once a segment is complete. A saved index is used only while its segment file has
 * the size and mtime it was built from; otherwise it is rebuilt (decision 0073).
 */
export class FileIndex {
  readonly #dir: string;
  readonly #persist: boolean;
  readonly #cache = new Map<number, SegmentIndex>();
  /** One index operation at a time: two queries must not extend the same index twice. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(dir: string, persist: boolean) {
    this.#dir = dir;
    this.#persist = persist;
  }

  /** Drops a segment's index (after a read found it disagreeing with the segment). */
  forget(first: number): void {
    this.#cache.delete(first);
  }

  /**
   * The index of a segment up to `limit` bytes. `complete` segments never grow again: their
   * index is loaded from (or saved to) `DIR/index/`.
   */
  segment(seg: { first: number; name: string }, limit: number, complete: boolean): Promise<SegmentIndex> {
    const run = this.#queue.then(() => this.#segment(seg, limit, complete));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #segment(
    seg: { first: number; name: string },
    limit: number,
    complete: boolean,
  ): Promise<SegmentIndex> {
    const file = join(this.#dir, seg.name);
    let idx = this.#cache.get(seg.first);
    if (idx && idx.bytes > limit) idx = undefined; // the segment was cut (recovery): rebuild
    if (!idx) {
      // Saved when complete, or at the last close (the live segment): only while the segment is
      // exactly as it was then.
      idx = await this.#load(seg.first, file);
      if (idx && idx.bytes > limit) idx = undefined;
    }
    if (!idx) idx = new SegmentIndex(seg.first);
    await idx.extend(file, limit);
    // Saved once complete: also a segment that filled up while this process indexed it.
    if (complete && this.#persist && !idx.saved) idx.saved = await this.#save(idx, file);
    this.#cache.delete(seg.first);
    this.#cache.set(seg.first, idx);
    while (this.#cache.size > CACHED_SEGMENTS) this.#cache.delete(this.#cache.keys().next().value!);
    return idx;
  }

  /** At close: saves the live segment's index if it covers the whole file, for the next start. */
  keep(seg: { first: number; name: string }): Promise<void> {
    const run = this.#queue.then(async () => {
      const idx = this.#cache.get(seg.first);
      if (idx && this.#persist) await this.#save(idx, join(this.#dir, seg.name));
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  #path(first: number): string {
    return join(this.#dir, INDEX_DIR, `${String(first).padStart(16, '0')}.idx`);
  }

  async #load(first: number, file: string): Promise<SegmentIndex | undefined> {
    try {
      const [buf, st] = await Promise.all([readFile(this.#path(first)), stat(file)]);
      const idx = SegmentIndex.decode(buf, first, st.size, st.mtimeMs);
      if (idx) idx.saved = true;
      return idx;
    } catch {
      return undefined;
    }
  }

  /** Writes a complete segment's index (tmp + rename); false when it could not (rebuilt next time). */
  async #save(idx: SegmentIndex, file: string): Promise<boolean> {
    try {
      const st = await stat(file);
      if (idx.bytes !== st.size) return false;
      await mkdir(join(this.#dir, INDEX_DIR), { recursive: true, mode: 0o700 });
      const target = this.#path(idx.first);
      const tmp = `${target}.${process.pid}.tmp`;
      const fh = await open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(idx.encode(st.size, st.mtimeMs));
      } finally {
        await fh.close();
      }
      await rename(tmp, target).catch(async (err: unknown) => {
        await unlink(tmp).catch(() => {});
        throw err;
      });
      return true;
    } catch {
      return false;
    }
  }
}

/** Adds the records of one segment that pass `query.filter` to `counter`. */
export function countSegment(
  idx: SegmentIndex,
  query: AggregateQuery,
  counter: GroupCounter,
  below: number,
): void {
  const match = idx.compile(query.filter);
  if (!match) return;
  const end = Math.min(idx.count, below - idx.first);
  const cols = query.groupBy.map((f) => idx.cols[FILTER_FIELDS.indexOf(f as FilterField)]!);
  const local = new Map<string, { ids: number[]; time: number; n: number }>();
  const interval = query.interval;
  for (let i = 0; i < end; i++) {
    if (!match(i)) continue;
    const time = interval ? bucketStart(idx.times[i]!, interval) : 0;
    let id = interval ? String(time) : '';
    for (const c of cols) id += `|${c[i]}`;
    const g = local.get(id);
    if (g) g.n++;
    else local.set(id, { ids: cols.map((c) => c[i]!), time, n: 1 });
  }
  for (const g of local.values())
    counter.add(
      (f) => {
        const id = g.ids[query.groupBy.indexOf(f)]!;
        return id === ABSENT || id === JUNK ? undefined : idx.dict[id];
      },
      g.time,
      g.n,
    );
}
