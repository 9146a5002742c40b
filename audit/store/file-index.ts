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

  /**
   * Adds a record the writer has in hand (no parse): its line is `length` bytes at `offset`,
   * `time` its append time in ms. Gives the same entry {@link add} reads off the line.
   */
  addRecord(record: IndexedRecord, offset: number, length: number, time: number): void {
    if (this.count === this.times.length) this.#grow();
    const i = this.count++;
    this.offsets[i] = offset;
    this.lengths[i] = length;
    this.#fill(i, time, record.hash, record.event as unknown as Record<string, unknown>);
  }

  /** Adds the record line at `offset` (a line that is no record is kept as one that matches nothing). */
  add(line: Buffer, offset: number, timeCache: Map<string, number>): void {
    if (this.count === this.times.length) this.#grow();
    const i = this.count++;
    this.offsets[i] = offset;
    this.lengths[i] = line.length;
    // A large canonical line: its six fields read off the bytes, no string of the whole line or
    // event built (large events would fill the heap with garbage). Anything else: parsed (V8's
    // parser is the faster for ordinary lines).
    const fields = line.length > SCAN_LINES_OVER ? scanIndexedFields(line) : undefined;
    if (fields) {
      this.#fill(i, timeOf(fields.time, timeCache), fields.hash, fields.event);
      return;
    }
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
    this.#fill(i, timeOf(parsed.time, timeCache), parsed.hash, event);
  }

  #fill(i: number, t: number, hash: unknown, event: Record<string, unknown>): void {
    this.times[i] = t;
    this.hashes[i] = typeof hash === 'string' ? parseInt(hash.slice(0, 8), 16) >>> 0 : 0;
    if (t < this.minTime) this.minTime = t;
    if (t > this.maxTime) this.maxTime = t;
    for (let c = 0; c < FILTER_FIELDS.length; c++) this.cols[c]![i] = this.#intern(event[FILTER_FIELDS[c]!]);
  }

  /**
   * Reads the segment's whole lines from `this.bytes` up to `limit` bytes into the index; returns
   * how many records it parsed. Stops where the lines no longer follow on from `this.bytes` (the
   * writer added records meanwhile).
   */
  async extend(file: string, limit: number): Promise<number> {
    if (this.bytes >= limit) return 0;
    const timeCache = new Map<string, number>();
    const before = this.count;
    let stop = false;
    for await (const chunk of readLineChunks(file, { from: this.bytes })) {
      forEachLine(chunk, (line, offset) => {
        if (stop) return;
        const end = offset + line.length + 1;
        if (end > limit || offset !== this.bytes) {
          stop = true;
          return;
        }
        // A commit line ({"commit":…}) is no record.
        if (line[2] !== 0x63) this.add(line, offset, timeCache);
        this.bytes = end;
      });
      if (stop) break;
    }
    if (this.count !== before) this.saved = false;
    return this.count - before;
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
    const h = indexHeader(buf.toString('utf8', 0, nl), { first, fileSize, mtimeMs, size: buf.length, nl });
    if (!h) return undefined;
    const n = h.count;
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

/** Lines longer than this (bytes) are read by {@link scanIndexedFields} instead of parsed. */
const SCAN_LINES_OVER = 16_384;
const EVENT_PREFIX = Buffer.from('{"event":{');
const HASH_KEY = Buffer.from(',"hash":"');
const LINE_TAIL = /^,"hash":"([0-9a-f]{64})","prev":"[0-9a-f]{64}","seq":\d{1,16},"time":"([^"\\]{1,40})"}$/;
const FIELD_KEYS = FILTER_FIELDS.map((f) => Buffer.from(`"${f}"`));
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** Index of the quote that closes the JSON string opening at `at`, or -1. */
function stringEnd(buf: Buffer, at: number, end: number): number {
  for (let from = at + 1; ;) {
    const q = buf.indexOf(QUOTE, from);
    if (q < 0 || q >= end) return -1;
    // Escaped when an odd number of backslashes precede it.
    let b = q - 1;
    while (b > at && buf[b] === BACKSLASH) b--;
    if ((q - 1 - b) % 2 === 0) return q;
    from = q + 1;
  }
}

/** Index just after the JSON value starting at `at` (strings, objects, arrays skipped whole), or -1. */
function valueEnd(buf: Buffer, at: number, end: number): number {
  let depth = 0;
  for (let i = at; i < end; i++) {
    const c = buf[i]!;
    if (c === QUOTE) {
      i = stringEnd(buf, i, end);
      if (i < 0) return -1;
      if (depth === 0) return i + 1;
    } else if (c === 0x7b || c === 0x5b) depth++;
    else if (c === 0x7d || c === 0x5d) {
      if (depth === 0) return i; // the end of the enclosing object
      if (--depth === 0) return i + 1;
    } else if (c === 0x2c && depth === 0) return i;
  }
  return -1;
}

/**
 * The indexed fields of a canonical record line — hash, time and the event's top-level
 * {@link FILTER_FIELDS} that are strings — read off its bytes: only those values become strings.
 * Undefined when the line is not laid out as a canonical record line (the caller parses it).
 */
export function scanIndexedFields(
  line: Buffer,
): { hash: string; time: string; event: Record<string, unknown> } | undefined {
  if (line.length < 160 || line.compare(EVENT_PREFIX, 0, EVENT_PREFIX.length, 0, EVENT_PREFIX.length) !== 0)
    return undefined;
  const tailAt = line.lastIndexOf(HASH_KEY);
  if (tailAt < 0) return undefined;
  const tail = LINE_TAIL.exec(line.toString('latin1', tailAt));
  if (!tail) return undefined;
  const event: Record<string, unknown> = {};
  let i = EVENT_PREFIX.length;
  if (line[i] === 0x7d) i++;
  else
    for (;;) {
      if (line[i] !== QUOTE) return undefined;
      const keyEnd = stringEnd(line, i, tailAt);
      if (keyEnd < 0 || line[keyEnd + 1] !== 0x3a) return undefined;
      let field = -1;
      for (let f = 0; f < FIELD_KEYS.length && field < 0; f++) {
        const k = FIELD_KEYS[f]!;
        if (keyEnd + 1 - i !== k.length) continue;
        let b = 1;
        while (b < k.length - 1 && line[i + b] === k[b]) b++;
        if (b === k.length - 1) field = f;
      }
      // A key written with an escape could be one of the fields: leave it to the parser.
      if (field < 0) for (let b = i + 1; b < keyEnd; b++) if (line[b] === BACKSLASH) return undefined;
      const v = keyEnd + 2;
      const after = valueEnd(line, v, tailAt);
      if (after < 0) return undefined;
      if (field >= 0) {
        if (line[v] === QUOTE) {
          const raw = line.subarray(v + 1, after - 1);
          if (!raw.includes(BACKSLASH)) event[FILTER_FIELDS[field]!] = raw.toString('utf8');
          else
            try {
              event[FILTER_FIELDS[field]!] = JSON.parse(line.toString('utf8', v, after)) as string;
            } catch {
              return undefined;
            }
        } else delete event[FILTER_FIELDS[field]!];
      }
      i = after;
      if (line[i] === 0x2c) i++;
      else if (line[i] === 0x7d) {
        i++;
        break;
      } else return undefined;
    }
  if (i !== tailAt) return undefined;
  return { hash: tail[1]!, time: tail[2]!, event };
}

/**
 * True when `line` is the record a {@link LineRef} describes: its seq and the first 32 bits of
 * its hash, read off the canonical line's tail without parsing the event.
 */
export function lineIsRef(line: string, ref: LineRef): boolean {
  const m = TAIL.exec(line.slice(line.lastIndexOf(',"hash":"')));
  return m !== null && Number(m[2]) === ref.seq && parseInt(m[1]!, 16) >>> 0 === ref.hash;
}

/** What the writer indexes of a record it appended. */
export interface IndexedRecord {
  readonly hash: string;
  readonly event: object;
}

/** Where the writer put the records of one batch in one segment (decision 0095). */
export interface AppendedSpan {
  readonly seg: { readonly first: number; readonly name: string };
  readonly records: readonly IndexedRecord[];
  /** Byte offset of each record's line in the segment. */
  readonly offsets: readonly number[];
  /** Byte length of each record's line, without its newline. */
  readonly lengths: readonly number[];
  /** The batch's append time, ms. */
  readonly time: number;
  /** The segment's length after the batch (its commit line included). */
  readonly end: number;
}

/** What a file store's index did: for tests and benches. */
export interface IndexStats {
  /** Records indexed by parsing segment bytes (a build or catch-up). */
  parsedRecords: number;
  /** Records the writer indexed as it appended them. */
  appendedRecords: number;
  /** Index files read back (past the cache bound at a start: their header checked) and accepted. */
  filesRead: number;
  /** Index files written. */
  filesWritten: number;
}

/** The header line of an index file (what {@link SegmentIndex.encode} writes before the columns). */
interface IndexHeader {
  readonly v: number;
  readonly first: number;
  readonly count: number;
  readonly bytes: number;
  readonly fileSize: number;
  readonly mtimeMs: number;
  readonly dict: unknown[];
}

/** Bytes of one record in an index file: time, offset, length, hash and the filter columns. */
const RECORD_BYTES = 8 + 8 + 4 + 4 + 4 * FILTER_FIELDS.length;

/**
 * Parses an index file's header line and returns it when it describes segment `first` as that
 * file is now (`fileSize`, `mtimeMs`) and an index file of `size` bytes whose header ends at `nl`;
 * undefined otherwise.
 */
function indexHeader(
  line: string,
  want: { first: number; fileSize: number; mtimeMs: number; size: number; nl: number },
): IndexHeader | undefined {
  let h: IndexHeader;
  try {
    h = JSON.parse(line) as IndexHeader;
  } catch {
    return undefined;
  }
  if (h.v !== VERSION || h.first !== want.first || h.fileSize !== want.fileSize || h.mtimeMs !== want.mtimeMs)
    return undefined;
  const n = h.count;
  if (!Number.isSafeInteger(n) || n < 0 || !Array.isArray(h.dict) || h.dict[0] !== '') return undefined;
  return want.size === want.nl + 1 + n * RECORD_BYTES ? h : undefined;
}

/** `Date.parse(time)` through `cache` (a batch's records share their time), kept under ~1,000 entries. */
function timeOf(time: string, cache: Map<string, number>): number {
  let t = cache.get(time);
  if (t === undefined) {
    t = Date.parse(time);
    if (cache.size > 1000) cache.clear();
    cache.set(time, t);
  }
  return t;
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
 * The indexes of a file store's segments, kept in memory (at most {@link CACHED_SEGMENTS} at
 * once, the live segment's always among them) and, for a writable store, saved beside the
 * segments in `DIR/index/`. A writable store's writer adds each record it appends to the live
 * segment's index and saves it once the segment is complete (and the live one at close); what no
 * index covers (files missing or stale, the live segment after an unclean stop) is built from the
 * segment's bytes by {@link prepare} in the background, by a catch-up the writer starts, or by
 * the first query that needs it. A saved index is used only while its segment file has the size
 * and mtime it was saved with (decisions 0073, 0095).
 */
export class FileIndex {
  readonly #dir: string;
  readonly #persist: boolean;
  readonly #cache = new Map<number, SegmentIndex>();
  /** First seq of the segment the writer appends to (never evicted, never cut by a stale limit). */
  #live: number | undefined;
  /** A queued catch-up of the live segment's index from its bytes, up to the newest durable end. */
  #catchUp: { seg: { first: number; name: string }; limit: number } | undefined;
  /** Set at close: a {@link prepare} under way stops. */
  #stopped = false;
  /** One index operation at a time: two queries must not extend the same index twice. */
  #queue: Promise<unknown> = Promise.resolve();
  readonly stats: IndexStats = { parsedRecords: 0, appendedRecords: 0, filesRead: 0, filesWritten: 0 };

  constructor(dir: string, persist: boolean) {
    this.#dir = dir;
    this.#persist = persist;
  }

  /** Drops a segment's index (after a read found it disagreeing with the segment). */
  forget(first: number): void {
    this.#cache.delete(first);
  }

  #enqueue<T>(f: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(f);
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * At a writable open, after recovery: the live segment is `seg`, `bytes` long. Its index is read
   * back if saved at the last close and still exact; otherwise the writer's first append queues
   * a catch-up from the segment's bytes.
   */
  openLive(seg: { first: number; name: string }, bytes: number): Promise<void> {
    this.#live = seg.first;
    return this.#enqueue(async () => {
      const idx = await this.#load(seg.first, join(this.#dir, seg.name));
      if (idx && idx.bytes === bytes) this.#cache.set(seg.first, idx);
    });
  }

  /**
   * The writer appended (and synced) `span`: its records go into the segment's index without
   * parsing anything, when that index covers the segment up to them. Otherwise a catch-up from
   * the segment's bytes is queued (after an unclean stop, or while a build was under way).
   */
  appended(span: AppendedSpan): void {
    const { seg } = span;
    this.#live = seg.first;
    let idx = this.#cache.get(seg.first);
    if (!idx && span.offsets[0] === 0) {
      idx = new SegmentIndex(seg.first);
      this.#remember(idx);
    }
    if (idx && idx.bytes === span.offsets[0]) {
      for (let k = 0; k < span.records.length; k++)
        idx.addRecord(span.records[k]!, span.offsets[k]!, span.lengths[k]!, span.time);
      idx.bytes = span.end;
      idx.saved = false;
      this.stats.appendedRecords += span.records.length;
      return;
    }
    if (idx && idx.bytes >= span.end) return;
    const queued = this.#catchUp;
    this.#catchUp = { seg, limit: span.end };
    if (queued) return; // the queued one reads up to this batch too
    void this.#enqueue(async () => {
      const job = this.#catchUp!;
      this.#catchUp = undefined;
      if (job.seg.first === this.#live) await this.#segment(job.seg, job.limit, false);
    }).catch(() => {});
  }

  /**
   * The writer moved on from `seg`, `bytes` long: it never grows again. Its index (the writer's,
   * or built from what it lacks) is saved in the background; {@link keep} and close wait for it.
   */
  completed(seg: { first: number; name: string }, bytes: number): void {
    // Newest used, so that the next segment's index does not evict it before it is saved.
    const idx = this.#cache.get(seg.first);
    if (idx) this.#remember(idx);
    if (this.#live === seg.first) this.#live = undefined;
    void this.#enqueue(() => this.#segment(seg, bytes, true)).catch(() => {});
  }

  /**
   * In the background of a start: makes sure every segment has an index, newest first, without
   * holding more than the cache bound: the newest {@link CACHED_SEGMENTS} are kept in memory, older
   * ones only checked (an exact index file's header and size) or built and saved. One
   * segment per queue turn, so that a query waits for one segment's work at most.
   */
  async prepare(
    segments: readonly { seg: { first: number; name: string }; limit: number; complete: boolean }[],
  ): Promise<void> {
    for (let k = 0; k < segments.length && !this.#stopped; k++) {
      const { seg, limit, complete } = segments[k]!;
      const cache = k < CACHED_SEGMENTS;
      await this.#enqueue(async () => {
        // Past the cache bound, an exact index file's header is enough: decoding it (megabytes a
        // segment) only to drop it would be read again by the first query that needs it.
        if (!cache && complete && !this.#cache.has(seg.first) && (await this.#exact(seg, limit))) return;
        await this.#segment(seg, limit, complete, cache);
      });
    }
  }

  /**
   * The index of a segment up to `limit` bytes. `complete` segments never grow again: their
   * index is loaded from (or saved to) `DIR/index/`.
   */
  segment(seg: { first: number; name: string }, limit: number, complete: boolean): Promise<SegmentIndex> {
    return this.#enqueue(() => this.#segment(seg, limit, complete));
  }

  async #segment(
    seg: { first: number; name: string },
    limit: number,
    complete: boolean,
    cache = true,
  ): Promise<SegmentIndex> {
    const file = join(this.#dir, seg.name);
    // The live segment's index may be ahead of a limit taken before the writer's last batch (a
    // query cuts by seq); any other index longer than its segment means the segment was cut.
    const fits = (i: SegmentIndex | undefined) => i && (i.bytes <= limit || seg.first === this.#live);
    let idx = this.#cache.get(seg.first);
    if (!fits(idx)) idx = undefined;
    if (!idx) {
      // Saved when complete, or at the last close (the live segment): only while the segment is
      // exactly as it was then.
      idx = await this.#load(seg.first, file);
      if (!fits(idx)) idx = undefined;
      // The writer may have started this segment's index meanwhile.
      const now = this.#cache.get(seg.first);
      if (now && (!idx || now.bytes >= idx.bytes) && fits(now)) idx = now;
    }
    if (!idx) idx = new SegmentIndex(seg.first);
    this.stats.parsedRecords += await idx.extend(file, limit);
    // Saved once complete: also a segment that filled up while this process indexed it.
    if (complete && this.#persist && !idx.saved && idx.bytes === limit)
      idx.saved = await this.#save(idx, file);
    if (cache || this.#cache.has(seg.first)) this.#remember(idx);
    return idx;
  }

  /** Caches `idx` as the newest used; evicts the least recently used, never the live segment's. */
  #remember(idx: SegmentIndex): void {
    this.#cache.delete(idx.first);
    this.#cache.set(idx.first, idx);
    for (const first of this.#cache.keys()) {
      if (this.#cache.size <= CACHED_SEGMENTS) break;
      if (first !== this.#live) this.#cache.delete(first);
    }
  }

  /**
   * At close: saves the live segment's index if it covers the whole file, for the next start, once
   * the index work queued before (segments completed, a catch-up) is done.
   */
  keep(seg: { first: number; name: string } | undefined): Promise<void> {
    this.#stopped = true;
    return this.#enqueue(async () => {
      if (!seg) return;
      const idx = this.#cache.get(seg.first);
      if (idx && this.#persist && !idx.saved) idx.saved = await this.#save(idx, join(this.#dir, seg.name));
    });
  }

  #path(first: number): string {
    return join(this.#dir, INDEX_DIR, `${String(first).padStart(16, '0')}.idx`);
  }

  /**
   * Whether `seg`'s index file describes it exactly as it is, `limit` bytes long, read from its
   * header line and the file's size alone (what {@link SegmentIndex.decode} checks first).
   */
  async #exact(seg: { first: number; name: string }, limit: number): Promise<boolean> {
    let fh;
    try {
      fh = await open(this.#path(seg.first), 'r');
      const [st, own] = await Promise.all([stat(join(this.#dir, seg.name)), fh.stat()]);
      // The header holds the dictionary: read on until its newline (bounded by the file).
      let head = Buffer.alloc(0);
      let nl = -1;
      while (nl < 0 && head.length < own.size) {
        const { buffer, bytesRead } = await fh.read(Buffer.alloc(64 * 1024), 0, 64 * 1024, head.length);
        if (bytesRead === 0) break;
        nl = buffer.subarray(0, bytesRead).indexOf(0x0a);
        if (nl >= 0) nl += head.length;
        head = Buffer.concat([head, buffer.subarray(0, bytesRead)]);
      }
      if (nl < 0) return false;
      const h = indexHeader(head.toString('utf8', 0, nl), {
        first: seg.first,
        fileSize: st.size,
        mtimeMs: st.mtimeMs,
        size: own.size,
        nl,
      });
      const exact = h !== undefined && h.bytes === limit;
      if (exact) this.stats.filesRead++;
      return exact;
    } catch {
      return false;
    } finally {
      await fh?.close();
    }
  }

  async #load(first: number, file: string): Promise<SegmentIndex | undefined> {
    try {
      const [buf, st] = await Promise.all([readFile(this.#path(first)), stat(file)]);
      const idx = SegmentIndex.decode(buf, first, st.size, st.mtimeMs);
      if (idx) {
        idx.saved = true;
        this.stats.filesRead++;
      }
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
      this.stats.filesWritten++;
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
