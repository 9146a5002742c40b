import { copyFile, mkdir, open, readdir, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { AuditEvent } from '../../core/index.ts';
import type { AuditRecord } from '../record.ts';
import {
  GENESIS_PREV,
  buildRecord,
  newByteScan,
  parseRecordLine,
  scanRecordBytes,
  scanRecordLine,
} from '../record.ts';
import { StoreError } from '../errors.ts';
import type { AggregateGroup, AggregateQuery, RecordFilter } from '../query-filter.ts';
import { GroupCounter, matchesFilter } from '../query-filter.ts';
import { FileIndex, countSegment, lineIsRef } from './file-index.ts';
import type { AppendedSpan, IndexStats, LineRef, SegmentIndex } from './file-index.ts';
import { parseSealText } from '../seal.ts';
import type {
  AppendOutcome,
  AuditStore,
  CommitItem,
  IdempotencyClaim,
  IdempotencyEntry,
  LogHead,
  ReadBuffersOptions,
  StoreDeps,
} from './store.ts';
import { IdempotencyTable, PipelineCommitter, committedAppends, splitOutcomes } from './store.ts';
import { forEachLine, lastLineOf, readLineChunks } from './line-chunks.ts';
import { lockStoreDir } from './dir-lock.ts';
import { writeFully } from './write-fully.ts';

/** Options of {@link openFileStore}. */
export interface FileStoreOptions extends StoreDeps {
  /** Directory of the segment files; created (0700) if missing. */
  readonly dir: string;
  /** Records per segment file before a new one starts (default 100,000). */
  readonly segmentRecords?: number;
  /** Bytes per segment file before a new one starts (default 64 MiB; a single larger record gets a segment of its own). */
  readonly segmentBytes?: number;
  /** Open without recovery or lock and refuse appends: what `verify` uses, so it sees the files as they are. */
  readonly readOnly?: boolean;
  /** fdatasync each batch (default true). Only benchmarks turn it off, to measure its cost. */
  readonly fsync?: boolean;
  /** Told about a torn or junk tail (bytes that are not whole records) refused on open. */
  readonly onRecover?: (info: { segment: string; droppedBytes: number; keptIn: string }) => void;
}

const SEGMENT = /^(\d{16})\.jsonl$/;
const segmentName = (first: number) => `${String(first).padStart(16, '0')}.jsonl`;
/** Where refused bytes are kept: never deleted by the store. */
const QUARANTINE = 'quarantine';
const COMMIT_PREFIX = Buffer.from('{"commit":');

/** The inline line written after each group commit's records (docs/decisions/0025). */
interface CommitLine {
  /** ms since the epoch. */
  readonly at: number;
  /** `[source, key, bodyHash, firstSeq, lastSeq]` of each keyed request in the batch. */
  readonly keys: [string, string, string, number, number][];
  /** The seal over the log through the batch's last record, when the store has a sealer. */
  readonly seal?: string;
}

/** Reads a commit line's fields; undefined when it is not one. */
function parseCommitLine(line: string): CommitLine | undefined {
  try {
    const v = (JSON.parse(line) as { commit?: unknown }).commit as CommitLine | undefined;
    if (!v || typeof v !== 'object' || typeof v.at !== 'number' || !Array.isArray(v.keys)) return undefined;
    if (v.seal !== undefined && typeof v.seal !== 'string') return undefined;
    for (const k of v.keys)
      if (
        !Array.isArray(k) ||
        k.length !== 5 ||
        typeof k[0] !== 'string' ||
        typeof k[1] !== 'string' ||
        typeof k[2] !== 'string' ||
        !Number.isSafeInteger(k[3]) ||
        !Number.isSafeInteger(k[4])
      )
        return undefined;
    return v;
  } catch {
    return undefined;
  }
}

/** True for a line that starts like a commit line (cheap, on bytes). */
export function isCommitLine(line: Buffer | string): boolean {
  return typeof line === 'string'
    ? line.startsWith('{"commit":')
    : line.length >= COMMIT_PREFIX.length &&
        line.compare(COMMIT_PREFIX, 0, COMMIT_PREFIX.length, 0, COMMIT_PREFIX.length) === 0;
}

interface Prepared {
  readonly first: number;
  /** The batch's records (for the query index: the writer indexes them without a parse). */
  readonly records: readonly AuditRecord[];
  /** Their append time, ms. */
  readonly time: number;
  readonly lines: readonly string[];
  readonly bytes: readonly number[];
  readonly commit: string | undefined;
  readonly head: string;
  readonly entries: readonly IdempotencyEntry[];
}

interface Segment {
  readonly first: number;
  readonly name: string;
}

/** Where a segment scan found the log trusted up to. */
interface Cover {
  /** Records of the segment covered. */
  readonly count: number;
  /** Byte length of the segment up to and including the covering line. */
  readonly bytes: number;
  readonly head: string;
}

interface SegmentScan {
  /** Well-chained records read, until the first bad line. */
  readonly count: number;
  /** The last cover found in the segment (seal, adopted note, or — without a sealer — each record). */
  readonly cover: Cover | undefined;
  readonly fileBytes: number;
  /** The first line that broke the chain, if any. */
  readonly bad: { seq: number; why: string } | undefined;
  /** Keys of the commit lines inside the cover. */
  readonly entries: IdempotencyEntry[];
}

/**
 * The embedded store: append-only segment files of canonical JSON lines (one record per line),
 * group-committed with one fdatasync per batch. Each batch ends with a commit line that holds
 * the batch's idempotency keys and, with a sealer, a signed seal over the log up to it: a
 * record counts only once a seal covers it. Opening for writing takes the directory's lock
 * and refuses (moves to `quarantine/`) whatever no trusted seal covers: a torn or junk tail,
 * records appended by someone without the key.
 */
export class FileStore implements AuditStore {
  readonly kind = 'file';
  readonly dir: string;
  #segments: Segment[] = [];
  #fh: FileHandle | undefined;
  #segCount = 0;
  #segBytes = 0;
  #size = 0;
  #head = GENESIS_PREV;
  #closed = false;
  #broken: StoreError | undefined;
  #release: (() => void) | undefined;
  /** Size and head including batches built but not yet durable. */
  #prepSize = 0;
  #prepHead = GENESIS_PREV;
  readonly #idem: IdempotencyTable;
  /** Keys of batches built but not yet durable. */
  readonly #prepKeys = new Map<string, IdempotencyEntry>();
  readonly #committer: PipelineCommitter<Prepared>;
  readonly #options: FileStoreOptions & { segmentRecords: number; segmentBytes: number };
  readonly #clock: () => Date;
  /** The query index beside the segments (decision 0073). */
  readonly #index: FileIndex;

  private constructor(options: FileStoreOptions & { segmentRecords: number; segmentBytes: number }) {
    this.#options = options;
    this.dir = options.dir;
    this.#clock = options.clock ?? (() => new Date());
    this.#idem = new IdempotencyTable(options.idempotency, () => this.#clock().getTime());
    this.#index = new FileIndex(options.dir, !options.readOnly);
    this.#committer = new PipelineCommitter(
      (items) => this.#prepare(items),
      (batch) => this.#persist(batch),
    );
  }

  /** Opens (and, unless read-only, locks and recovers) the store in `options.dir`. */
  static async open(options: FileStoreOptions): Promise<FileStore> {
    const segmentRecords = options.segmentRecords ?? 100_000;
    const segmentBytes = options.segmentBytes ?? 64 * 1_048_576;
    if (!Number.isSafeInteger(segmentRecords) || segmentRecords < 1)
      throw new TypeError('"segmentRecords" must be a positive integer');
    if (!Number.isSafeInteger(segmentBytes) || segmentBytes < 1024)
      throw new TypeError('"segmentBytes" must be an integer of at least 1024');
    const store = new FileStore({ ...options, segmentRecords, segmentBytes });
    try {
      await store.#load();
    } catch (err) {
      store.#release?.();
      throw err;
    }
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
    if (!readOnly) this.#release = lockStoreDir(dir, this.#clock);
    this.#segments = names
      .map((name) => SEGMENT.exec(name))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => ({ first: Number(m[1]), name: m[0] }))
      .sort((a, b) => a.first - b.first);
    if (readOnly) {
      // Size as stored (for `size()` of a read-only store): count the last segment's records.
      const last = this.#segments.at(-1);
      if (last) {
        let n = 0;
        for await (const c of readLineChunks(join(dir, last.name)))
          forEachLine(c, (l) => {
            if (!isCommitLine(l)) n++;
          });
        this.#size = last.first + n;
      }
      return;
    }
    await this.#recover();
    await this.#loadKeys();
    // The live segment's index as saved at the last close (when still exact): the writer adds to it.
    const last = this.#segments.at(-1);
    if (last) await this.#index.openLive(last, this.#segBytes);
  }

  /** Hash of the last record of the segment before `index` (GENESIS for the first). */
  async #prevOf(index: number): Promise<string> {
    const before = this.#segments[index - 1];
    if (!before) return GENESIS_PREV;
    const line = await lastLineOf(join(this.dir, before.name), (l) => !isCommitLine(l) && l.length > 0);
    if (!line) return this.#prevOf(index - 1);
    try {
      return scanRecordLine(line.toString()).hash;
    } catch (err) {
      throw new StoreError(
        'ERR_AUDIT_STORE_CORRUPT',
        `${join(this.dir, before.name)}: its last record is not a canonical record line`,
        { cause: err },
      );
    }
  }

  /**
   * Streams one segment, checking the chain from `prev`, and finds the last point a trusted seal
   * (or, without a sealer, every good record) covers. Never holds more than a chunk of lines.
   */
  async #scanSegment(segment: Segment, prev: string): Promise<SegmentScan> {
    const { sealer } = this.#options;
    const file = join(this.dir, segment.name);
    const adopt = this.#adopted();
    let expected = segment.first;
    let head = prev;
    let count = 0;
    let bad: { seq: number; why: string } | undefined;
    let cover: Cover | undefined = sealer ? undefined : { count: 0, bytes: 0, head: prev };
    if (adopt && adopt.size === segment.first && adopt.chainHead === prev)
      cover = { count: 0, bytes: 0, head };
    let fileBytes = 0;
    // Commit lines whose seal matches the chain where they stand: signatures are checked at the
    // end, newest first, so that a long segment costs one verification, not one per batch.
    const candidates: { cover: Cover; note: string; keys: CommitLine['keys']; at: number }[] = [];
    let pendingKeys: { keys: CommitLine['keys']; at: number }[] = [];
    let sealedAfterBad: string | undefined;
    const { out: scanned, scratch } = newByteScan();
    const onLine = (line: Buffer, offset: number) => {
      const end = offset + line.length + 1;
      fileBytes = end;
      if (isCommitLine(line)) {
        const commit = parseCommitLine(line.toString());
        if (!commit) return;
        if (bad) {
          if (commit.seal && sealer?.open(commit.seal)) sealedAfterBad ??= commit.seal;
          return;
        }
        if (!sealer) {
          pendingKeys.push({ keys: commit.keys, at: commit.at });
          cover = { count, bytes: end, head };
          return;
        }
        if (!commit.seal) return;
        let body;
        try {
          const text = commit.seal.slice(0, commit.seal.lastIndexOf('\n\n') + 1);
          body = parseSealText(text);
        } catch {
          return;
        }
        if (body.size === expected && body.chainHead === head)
          candidates.push({
            cover: { count, bytes: end, head },
            note: commit.seal,
            keys: commit.keys,
            at: commit.at,
          });
        else if (sealer.open(commit.seal))
          throw new StoreError(
            'ERR_AUDIT_STORE_CORRUPT',
            `${file}: a trusted seal at size ${body.size} disagrees with the records before it; run portcullis audit verify`,
          );
        return;
      }
      if (bad) return;
      // On bytes, without building a string of the record: segments of large events stay cheap.
      if (!scanRecordBytes(line, 0, line.length, scanned, scratch)) {
        bad = { seq: expected, why: 'not a canonical record line' };
        return;
      }
      const s = scanned;
      if (s.seq !== expected) bad = { seq: expected, why: `holds seq ${s.seq}` };
      else if (s.digest.toString('hex') !== s.hash)
        bad = { seq: expected, why: 'hash does not match the record content' };
      else if (s.prev !== head) bad = { seq: expected, why: 'prev does not match the previous record' };
      if (bad) return;
      head = s.hash;
      expected++;
      count++;
      if (!sealer) cover = { count, bytes: end, head };
      else if (adopt && adopt.size === expected && adopt.chainHead === head)
        cover = { count, bytes: end, head };
    };
    for await (const chunk of readLineChunks(file)) forEachLine(chunk, onLine);
    if (sealedAfterBad)
      throw new StoreError(
        'ERR_AUDIT_STORE_CORRUPT',
        `${file}: record ${bad!.seq}: ${bad!.why}, inside what a trusted seal covers; run portcullis audit verify`,
      );
    const entries: IdempotencyEntry[] = [];
    if (sealer) {
      // The newest candidate that a trusted key signed, unless the adopted note reaches further.
      let chosen = -1;
      for (let i = candidates.length - 1; i >= 0; i--)
        if (sealer.open(candidates[i]!.note)) {
          chosen = i;
          break;
        }
      if (chosen >= 0 && (!cover || candidates[chosen]!.cover.count >= (cover as Cover).count))
        cover = candidates[chosen]!.cover;
      pendingKeys = candidates
        .filter((c, i) => i <= chosen && c.cover.bytes <= (cover?.bytes ?? 0))
        .map((c) => ({ keys: c.keys, at: c.at }));
    } else if (bad) {
      throw new StoreError('ERR_AUDIT_STORE_CORRUPT', `${file}: record ${bad.seq}: ${bad.why}`);
    }
    for (const { keys, at } of pendingKeys)
      for (const [source, key, bodyHash, firstSeq, lastSeq] of keys)
        if (lastSeq < segment.first + (cover?.count ?? 0))
          entries.push({ source, key, bodyHash, firstSeq, lastSeq, at });
    return { count, cover, fileBytes, bad, entries };
  }

  #adoptedCache: { size: number; chainHead: string } | null | undefined;
  #adopted(): { size: number; chainHead: string } | undefined {
    if (this.#adoptedCache === undefined) {
      const note = this.#options.adopt;
      this.#adoptedCache = (note && this.#options.sealer?.open(note)) || null;
    }
    return this.#adoptedCache ?? undefined;
  }

  /**
   * Finds the newest covered point, walking back from the last segment, and moves everything
   * after it to `quarantine/`: torn or junk bytes (told to `onRecover`) and records no trusted
   * seal covers (told to `onUncovered` with their seq range).
   */
  async #recover(): Promise<void> {
    // First find the cover without changing anything: if no trusted seal covers any record
    // at all, the likeliest cause is a changed key or a missing trustedKeys entry, not a
    // forged tail, and moving the whole log aside would start a new one at seq 0.
    const uncovered: { index: number; count: number }[] = [];
    let found: { index: number; scan: SegmentScan; prev: string } | undefined;
    for (let index = this.#segments.length - 1; index >= 0; index--) {
      const prev = await this.#prevOf(index);
      const scan = await this.#scanSegment(this.#segments[index]!, prev);
      if (scan.cover || index === 0) {
        found = { index, scan, prev };
        break;
      }
      uncovered.push({ index, count: scan.count });
    }
    if (!found) {
      this.#segments = [];
      return;
    }
    const records = found.scan.count + uncovered.reduce((n, u) => n + u.count, 0);
    if (!found.scan.cover && records > 0)
      throw new StoreError(
        'ERR_AUDIT_STORE_CORRUPT',
        `${this.dir}: none of its ${records} newest records is covered by a seal of a trusted key (${this.#options.sealer?.trusted.join(', ')}) or by the collector's last checkpoint; ` +
          "refusing to move the log aside. If the collector's key changed, add the old verifier key to trustedKeys; run portcullis audit verify --public-key to see who sealed it",
      );
    const quarantined: { from: number; to: number; keptIn: string }[] = [];
    for (const u of uncovered) {
      // Nothing in these segments is covered: moved aside whole, newest first.
      const segment = this.#segments[u.index]!;
      const file = join(this.dir, segment.name);
      const fileSize = (await stat(file)).size;
      const keptIn = await this.#quarantine(file, 0, fileSize);
      await unlink(file);
      if (u.count || fileSize)
        quarantined.push({ from: segment.first, to: segment.first + u.count - 1, keptIn });
    }
    const { index, scan, prev } = found;
    const segment = this.#segments[index]!;
    const file = join(this.dir, segment.name);
    const fileSize = (await stat(file)).size;
    const cover = scan.cover ?? { count: 0, bytes: 0, head: prev };
    if (fileSize > cover.bytes) {
      const keptIn = await this.#quarantine(file, cover.bytes, fileSize);
      const fh = await open(file, 'r+');
      try {
        await fh.truncate(cover.bytes);
        await fh.datasync();
      } finally {
        await fh.close();
      }
      const uncoveredRecords = scan.count - cover.count;
      if (uncoveredRecords > 0)
        quarantined.push({
          from: segment.first + cover.count,
          to: segment.first + scan.count - 1,
          keptIn,
        });
      // Bytes after the last whole record line the scan accepted: torn or junk.
      if (scan.bad || scan.fileBytes < fileSize || uncoveredRecords === 0)
        this.#options.onRecover?.({ segment: file, droppedBytes: fileSize - cover.bytes, keptIn });
    }
    this.#segments = this.#segments.slice(0, index + 1);
    this.#segCount = cover.count;
    this.#segBytes = cover.bytes;
    this.#size = segment.first + cover.count;
    this.#head = cover.head;
    this.#recovered = scan.entries;
    if (quarantined.length) {
      await this.#syncDir();
      // One report per contiguous refused range, oldest first.
      quarantined.reverse();
      for (const q of quarantined) this.#options.onUncovered?.(q);
    }
    this.#prepSize = this.#size;
    this.#prepHead = this.#head;
  }

  /** Copies bytes [from, to) of a file into `quarantine/` (fsynced) and returns where. */
  async #quarantine(file: string, from: number, to: number): Promise<string> {
    const qdir = join(this.dir, QUARANTINE);
    await mkdir(qdir, { recursive: true, mode: 0o700 });
    const base = file.slice(this.dir.length + 1).replace(/\.jsonl$/, '');
    const stamp = this.#clock().toISOString().replace(/[:.]/g, '');
    const target = join(qdir, `${base}-at-${from}-${stamp}-${process.pid}-${++this.#quarantined}.jsonl`);
    if (from === 0) {
      await copyFile(file, target);
    } else {
      const src = await open(file, 'r');
      const dst = await open(target, 'wx', 0o600);
      try {
        const buf = Buffer.allocUnsafe(1_048_576);
        for (let pos = from; pos < to;) {
          const { bytesRead } = await src.read(buf, 0, Math.min(buf.length, to - pos), pos);
          if (!bytesRead) break;
          await dst.write(buf.subarray(0, bytesRead));
          pos += bytesRead;
        }
        await dst.datasync();
      } finally {
        await src.close();
        await dst.close();
      }
    }
    return target;
  }

  /** Keys of commit lines in segments written within the retention (the last one was read by #recover). */
  async #loadKeys(): Promise<void> {
    const retention = this.#options.idempotency?.retentionMs ?? 24 * 3_600_000;
    const cutoff = this.#clock().getTime() - retention;
    const older: IdempotencyEntry[][] = [];
    for (let i = this.#segments.length - 2; i >= 0; i--) {
      const file = join(this.dir, this.#segments[i]!.name);
      if ((await stat(file)).mtimeMs < cutoff) break;
      const found: IdempotencyEntry[] = [];
      for await (const chunk of readLineChunks(file))
        forEachLine(chunk, (line) => {
          if (!isCommitLine(line)) return;
          const c = parseCommitLine(line.toString());
          if (!c || c.at < cutoff) return;
          for (const [source, key, bodyHash, firstSeq, lastSeq] of c.keys)
            found.push({ source, key, bodyHash, firstSeq, lastSeq, at: c.at });
        });
      older.push(found);
    }
    // Oldest first, so that the table evicts the oldest.
    for (const list of older.reverse()) for (const e of list) this.#idem.set(e);
    for (const e of this.#recovered) this.#idem.set(e);
    this.#recovered = [];
  }

  /** Quarantine files made by this process (part of their names). */
  #quarantined = 0;

  /** Keys found in the last segment by #recover, set after the older ones. */
  #recovered: IdempotencyEntry[] = [];

  /** Refused while closed or broken, then group-committed (shared with the other stores). */
  readonly #appends = committedAppends(
    { submit: (events, claim) => this.#committer.submit(events, claim) },
    () => this.#refuse(),
  );

  append(events: readonly AuditEvent[]): Promise<AuditRecord[]> {
    return this.#appends.append(events);
  }

  appendOnce(events: readonly AuditEvent[], claim: IdempotencyClaim): Promise<AppendOutcome> {
    return this.#appends.appendOnce(events, claim);
  }

  async idempotencyEntry(source: string, key: string): Promise<IdempotencyEntry | undefined> {
    this.#check();
    return this.#idem.get(source, key);
  }

  async seals(): Promise<string[]> {
    return [];
  }

  #refuse(): StoreError | undefined {
    if (this.#closed) return new StoreError('ERR_AUDIT_STORE_CLOSED', 'the store is closed');
    if (this.#options.readOnly)
      return new StoreError('ERR_AUDIT_STORE_UNAVAILABLE', `${this.dir}: opened read-only`);
    return undefined;
  }

  /** Builds a batch's records after the last prepared one (CPU only; runs while the previous batch syncs). */
  #prepare(items: readonly CommitItem[]): { outcomes: AppendOutcome[]; prepared: Prepared } {
    if (this.#broken) throw this.#broken;
    const now = this.#clock();
    const time = now.toISOString();
    const records: AuditRecord[] = [];
    const lines: string[] = [];
    const bytes: number[] = [];
    const replays = new Map<number, IdempotencyEntry>();
    const entries: IdempotencyEntry[] = [];
    let prev = this.#prepHead;
    let seq = this.#prepSize;
    for (let i = 0; i < items.length; i++) {
      const { events, claim } = items[i]!;
      if (claim) {
        const id = IdempotencyTable.id(claim.source, claim.key);
        const known = this.#prepKeys.get(id) ?? this.#idem.get(claim.source, claim.key);
        if (known) {
          replays.set(i, known);
          continue;
        }
      }
      const firstSeq = seq;
      for (const event of events) {
        const { record, line } = buildRecord(seq, time, event, prev);
        records.push(record);
        lines.push(line);
        bytes.push(Buffer.byteLength(line) + 1);
        prev = record.hash;
        seq++;
      }
      if (claim) {
        const entry = { ...claim, firstSeq, lastSeq: seq - 1, at: now.getTime() };
        entries.push(entry);
        this.#prepKeys.set(IdempotencyTable.id(claim.source, claim.key), entry);
      }
    }
    const first = this.#prepSize;
    this.#prepSize = seq;
    this.#prepHead = prev;
    let commit: string | undefined;
    if (lines.length && (this.#options.sealer || entries.length)) {
      const c: CommitLine = {
        at: now.getTime(),
        keys: entries.map((e) => [e.source, e.key, e.bodyHash, e.firstSeq, e.lastSeq]),
        ...(this.#options.sealer ? { seal: this.#options.sealer.seal(seq, prev) } : {}),
      };
      // ASCII only (the signature line's em dash escaped): joined with the batch's record lines,
      // one non-Latin-1 character would turn the whole batch into a two-byte string to encode.
      commit = JSON.stringify({ commit: c }).replace(
        /[\u0080-\uffff]/g,
        (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`,
      );
    }
    return {
      outcomes: splitOutcomes(items, records, replays),
      prepared: { first, records, time: now.getTime(), lines, bytes, commit, head: prev, entries },
    };
  }

  /** Writes a prepared batch (rolling segments as needed) and fdatasyncs it. Batches come in order. */
  async #persist(batch: Prepared): Promise<void> {
    if (this.#broken) throw this.#broken;
    if (!batch.lines.length) return;
    const { segmentRecords, segmentBytes } = this.#options;
    let inSegment = this.#segCount;
    let inBytes = this.#segBytes;
    let parts: string[] = [];
    let partBytes = 0;
    // Where each record went, for the query index once the batch is durable (decision 0095).
    const spans: { seg: Segment; from: number; offsets: number[]; lengths: number[]; end: number }[] = [];
    const completed: { seg: Segment; bytes: number }[] = [];
    try {
      if (this.#fh) await this.#checkForeignBytes();
      for (let i = 0; i < batch.lines.length; i++) {
        const size = batch.bytes[i]!;
        if (!this.#fh || (inSegment > 0 && (inSegment >= segmentRecords || inBytes + size > segmentBytes))) {
          await this.#flush(parts);
          parts = [];
          partBytes = 0;
          const before = this.#segments.at(-1);
          const full = inBytes;
          [inSegment, inBytes] = await this.#roll(batch.first + i);
          if (before && before !== this.#segments.at(-1)) {
            completed.push({ seg: before, bytes: full });
            if (spans.length) spans.at(-1)!.end = full;
          }
        }
        const seg = this.#segments.at(-1)!;
        if (spans.at(-1)?.seg !== seg) spans.push({ seg, from: i, offsets: [], lengths: [], end: 0 });
        spans.at(-1)!.offsets.push(inBytes);
        spans.at(-1)!.lengths.push(size - 1);
        parts.push(batch.lines[i]!);
        inSegment++;
        inBytes += size;
        partBytes += size;
        // Flush in pieces of about 4 MiB so that a batch of large events is never one huge string.
        if (partBytes > 4_194_304) {
          await this.#flush(parts);
          parts = [];
          partBytes = 0;
        }
      }
      let commit: Buffer | undefined;
      if (batch.commit) {
        // Encoded apart: the record lines stay one cheap one-byte string to encode.
        commit = Buffer.from(`${batch.commit}\n`);
        inBytes += commit.length;
      }
      await this.#flush(parts, true, commit);
    } catch (err) {
      // The files may now end in part of a batch nobody was told about. Refuse further appends;
      // reopening runs the recovery, which moves an uncovered tail aside.
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
    this.#segBytes = inBytes;
    spans.at(-1)!.end = inBytes;
    // A segment that was full before this batch and got none of its records, then the others.
    for (const c of completed) if (!spans.some((s) => s.seg === c.seg)) this.#index.completed(c.seg, c.bytes);
    for (const span of spans) {
      this.#index.appended({
        seg: span.seg,
        records: batch.records.slice(span.from, span.from + span.offsets.length),
        offsets: span.offsets,
        lengths: span.lengths,
        time: batch.time,
        end: span.end,
      } satisfies AppendedSpan);
      const done = completed.find((c) => c.seg === span.seg);
      if (done) this.#index.completed(done.seg, done.bytes);
    }
    for (const e of batch.entries) {
      this.#idem.set(e);
      this.#prepKeys.delete(IdempotencyTable.id(e.source, e.key));
    }
  }

  /**
   * Bytes someone else appended to the open segment (a second writer, a forger) since our last
   * write would sit inside our chain: move them to quarantine and cut them off first.
   */
  async #checkForeignBytes(): Promise<void> {
    const { size } = await this.#fh!.stat();
    if (size === this.#segBytes) return;
    const file = join(this.dir, this.#segments.at(-1)!.name);
    const keptIn = await this.#quarantine(file, this.#segBytes, size);
    await this.#fh!.truncate(this.#segBytes);
    this.#options.onUncovered?.({ from: this.#size, to: this.#size - 1, keptIn });
  }

  async #flush(parts: string[], sync = false, tail?: Buffer): Promise<void> {
    const buffers: Buffer[] = [];
    if (parts.length) {
      parts.push('');
      buffers.push(Buffer.from(parts.join('\n')));
    }
    if (tail) buffers.push(tail);
    // A short write (disk full) is finished or fails: a batch is never acknowledged half-written.
    await writeFully(this.#fh!, buffers);
    if (sync && this.#options.fsync !== false) await this.#fh!.datasync();
  }

  /** Opens the segment the next record goes to; returns its record and byte counts. */
  async #roll(first: number): Promise<[number, number]> {
    const last = this.#segments.at(-1);
    if (
      !this.#fh &&
      last &&
      last.first + this.#segCount === first &&
      this.#segCount < this.#options.segmentRecords &&
      this.#segBytes < this.#options.segmentBytes
    ) {
      // Reopening after a restart: the bounds count what the segment already holds, and bytes
      // someone appended since the recovery are cut before ours follow them.
      this.#fh = await open(join(this.dir, last.name), 'a', 0o600);
      await this.#checkForeignBytes();
      return [this.#segCount, this.#segBytes];
    }
    if (this.#fh) await this.#fh.close();
    const segment = { first, name: segmentName(first) };
    this.#fh = await open(join(this.dir, segment.name), 'a', 0o600);
    this.#segments.push(segment);
    this.#segCount = 0;
    this.#segBytes = 0;
    // The new file's directory entry must be durable too, or a crash could lose the whole segment.
    await this.#syncDir();
    return [0, 0];
  }

  async #syncDir(): Promise<void> {
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
      let seq = seg.first;
      for await (const chunk of readLineChunks(join(this.dir, seg.name))) {
        const lines: string[] = [];
        forEachLine(chunk, (line) => {
          if (isCommitLine(line)) return;
          if (seq >= fromSeq && seq < limit) lines.push(line.toString());
          seq++;
        });
        for (const l of lines) yield l;
        if (seq >= limit) return;
      }
    }
  }

  async *readBuffers(options: ReadBuffersOptions = {}): AsyncIterable<Buffer> {
    this.#check();
    const fromSeq = options.fromSeq ?? 0;
    // A live store may be mid-append: only committed records count. Read-only: all, as stored.
    const limit = this.#options.readOnly ? Infinity : this.#size;
    for (let i = 0; i < this.#segments.length; i++) {
      const seg = this.#segments[i]!;
      const next = this.#segments[i + 1];
      if (next && next.first <= fromSeq) continue;
      if (seg.first >= limit) return;
      const where = join(this.dir, seg.name);
      const onTail = (_offset: number, bytes: number) => options.onTail?.({ where, bytes });
      let seq = seg.first;
      for await (const chunk of readLineChunks(where, { onTail })) {
        // Cut the chunk to the lines in [fromSeq, limit); commit lines go with the records before them.
        const { buf } = chunk;
        let from = seq >= fromSeq ? 0 : -1;
        let to = buf.length;
        let at = 0;
        while (at < buf.length) {
          const end = buf.indexOf(0x0a, at);
          const commit = buf[at + 2] === 0x63; // {"c…: a commit line
          if (!commit) {
            if (seq === fromSeq && from < 0) from = at;
            if (seq >= limit) {
              to = at;
              break;
            }
            seq++;
          }
          at = end + 1;
        }
        if (from >= 0 && to > from) yield buf.subarray(from, to);
        if (seq >= limit && to < buf.length) return;
      }
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

  /**
   * The segments a query may read, newest last, each with its index up to what is committed
   * (a live store) or whole lines as stored (read-only).
   */
  async *#indexes(
    desc: boolean,
    from = 0,
    below = Infinity,
  ): AsyncIterable<{ seg: Segment; idx: SegmentIndex }> {
    this.#check();
    const segments = [...this.#segments];
    const order = desc ? segments.map((_, i) => segments.length - 1 - i) : segments.map((_, i) => i);
    for (const i of order) {
      const seg = segments[i]!;
      const last = i === segments.length - 1;
      if (!this.#options.readOnly && seg.first >= this.#size) continue;
      // Segments wholly outside [from, below) are not even opened.
      if (seg.first >= below || (segments[i + 1] && segments[i + 1]!.first <= from)) continue;
      yield { seg, idx: await this.#index.segment(seg, await this.#limit(seg, last), !last) };
    }
  }

  /**
   * How far `seg` is indexed: the writer's durable end for the live segment (the last, when
   * writable), the file's size for the others (and for every segment of a read-only store).
   */
  async #limit(seg: Segment, last: boolean): Promise<number> {
    if (last && !this.#options.readOnly) return this.#segBytes;
    try {
      return (await stat(join(this.dir, seg.name))).size;
    } catch (err) {
      throw new StoreError(
        'ERR_AUDIT_STORE_UNAVAILABLE',
        `${join(this.dir, seg.name)}: cannot be read (${(err as NodeJS.ErrnoException).code})`,
        { cause: err },
      );
    }
  }

  async query(filter: RecordFilter): Promise<AuditRecord[]> {
    return (await this.#lines(filter, true)).map((l) => l.record!);
  }

  /**
   * The stored lines of the matching records: each checked to be the record the index located
   * (seq and hash, off the line's tail) but not parsed — what the collector sends as it is.
   */
  async queryLines(filter: RecordFilter): Promise<{ seq: number; line: string }[]> {
    return this.#lines(filter, false);
  }

  async #lines(filter: RecordFilter, parse: boolean): Promise<FetchedLine[]> {
    for (let attempt = 0; ; attempt++) {
      const refs = await this.#find(filter);
      const lines = await this.#fetch(refs, filter, attempt > 0, parse);
      if (lines) return lines;
    }
  }

  /** Where the records matching `filter` are, in the order asked, from the index. */
  async #find(filter: RecordFilter): Promise<LineRef[]> {
    const desc = filter.order === 'desc';
    const refs: LineRef[] = [];
    if (filter.limit <= 0) return refs;
    const bound = this.#options.readOnly ? Infinity : this.#size;
    const from = desc ? 0 : (filter.fromSeq ?? 0);
    const below = Math.min(bound, desc ? (filter.beforeSeq ?? Infinity) : Infinity);
    for await (const { seg, idx } of this.#indexes(desc, from, below)) {
      if (seg.first >= below || seg.first + idx.count <= from) continue;
      const match = idx.compile(filter);
      if (!match) continue;
      const lo = Math.max(0, from - seg.first);
      const hi = Math.min(idx.count, below - seg.first);
      const take = (i: number) => {
        refs.push({
          seq: seg.first + i,
          segment: seg.name,
          offset: idx.offsets[i]!,
          length: idx.lengths[i]!,
          hash: idx.hashes[i]!,
        });
        return refs.length >= filter.limit;
      };
      if (desc) {
        for (let i = hi - 1; i >= lo; i--) if (match(i) && take(i)) return refs;
      } else {
        for (let i = lo; i < hi; i++) if (match(i) && take(i)) return refs;
      }
    }
    return refs;
  }

  /**
   * Reads and parses the lines the index pointed at, checking that each holds the expected seq
   * and passes the filter: the index is never trusted. On a mismatch the segment's index is
   * dropped and undefined returned (the caller asks again); a second mismatch is corruption.
   */
  async #fetch(
    refs: LineRef[],
    filter: RecordFilter,
    retried: boolean,
    parse: boolean,
  ): Promise<FetchedLine[] | undefined> {
    const out: FetchedLine[] = [];
    let at = 0;
    while (at < refs.length) {
      // One read per run of refs in one segment that lie close together (gaps under 64 KiB, at
      // most 8 MiB in all); scattered records are read one by one.
      const segment = refs[at]!.segment;
      let end = at + 1;
      let lo = refs[at]!.offset;
      let hi = lo + refs[at]!.length;
      while (end < refs.length && refs[end]!.segment === segment) {
        const r = refs[end]!;
        const gap = r.offset >= hi ? r.offset - hi : lo - (r.offset + r.length);
        const nlo = Math.min(lo, r.offset);
        const nhi = Math.max(hi, r.offset + r.length);
        if (gap > 65_536 || nhi - nlo > 8 * 1_048_576) break;
        [lo, hi] = [nlo, nhi];
        end++;
      }
      const file = join(this.dir, segment);
      const buf = Buffer.allocUnsafe(hi - lo);
      let fh: FileHandle | undefined;
      try {
        fh = await open(file, 'r');
        const { bytesRead } = await fh.read(buf, 0, buf.length, lo);
        if (bytesRead !== buf.length) throw Object.assign(new Error('short read'), { code: 'ESHORT' });
      } catch (err) {
        throw new StoreError(
          'ERR_AUDIT_STORE_UNAVAILABLE',
          `${file}: cannot be read (${(err as NodeJS.ErrnoException).code})`,
          { cause: err },
        );
      } finally {
        await fh?.close();
      }
      for (let k = at; k < end; k++) {
        const r = refs[k]!;
        const line = buf.toString('utf8', r.offset - lo, r.offset - lo + r.length);
        let record: AuditRecord | undefined;
        let ok: boolean;
        if (parse) {
          try {
            record = parseRecordLine(line);
          } catch {
            record = undefined;
          }
          ok = record !== undefined && record.seq === r.seq && matchesFilter(record, filter);
        } else ok = lineIsRef(line, r);
        if (!ok) {
          const first = this.#segments.find((s) => s.name === segment)!.first;
          this.#index.forget(first);
          if (retried)
            throw new StoreError(
              'ERR_AUDIT_STORE_CORRUPT',
              `${file}: record ${r.seq} is not where the segment's own lines put it; run portcullis audit verify`,
            );
          return undefined;
        }
        out.push({ seq: r.seq, line, record });
      }
      at = end;
    }
    return out;
  }

  /**
   * Makes sure every segment has its index, newest first, so that the first query after a start
   * does not pay for it: index files are read back (the newest 16 kept in memory, older ones only
   * checked), what none covers is built from the segment's bytes and saved. Memory stays within
   * the index cache's bound. The collector runs it in the background once it listens.
   */
  async prepareQueries(): Promise<void> {
    this.#check();
    const segments = [...this.#segments].reverse();
    const list: { seg: Segment; limit: number; complete: boolean }[] = [];
    for (const [k, seg] of segments.entries()) {
      if (!this.#options.readOnly && seg.first >= this.#size) continue;
      const last = k === 0;
      // A segment that cannot be read now is left to the query that needs it (and reports it).
      const limit = await this.#limit(seg, last).catch(() => -1);
      if (limit >= 0) list.push({ seg, limit, complete: !last });
    }
    await this.#index.prepare(list);
  }

  /** What the query index did so far (records parsed from segment bytes, index files read): for tests and benches. */
  indexStats(): IndexStats {
    return { ...this.#index.stats };
  }

  async aggregate(query: AggregateQuery): Promise<AggregateGroup[]> {
    const counter = new GroupCounter(query);
    const below = this.#options.readOnly ? Infinity : this.#size;
    for await (const { idx } of this.#indexes(false)) countSegment(idx, query, counter, below);
    return counter.groups();
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
    await this.#index.keep(this.#options.readOnly ? undefined : this.#segments.at(-1));
    this.#release?.();
  }

  #check(): void {
    if (this.#closed) throw new StoreError('ERR_AUDIT_STORE_CLOSED', 'the store is closed');
  }
}

/** A line a query found, and its record when parsed. */
interface FetchedLine {
  readonly seq: number;
  readonly line: string;
  readonly record?: AuditRecord;
}

/** Opens the file store in a directory; see {@link FileStore}. */
export function openFileStore(options: FileStoreOptions): Promise<FileStore> {
  return FileStore.open(options);
}
