import { createHash, randomUUID } from 'node:crypto';
import { link, mkdir, open, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAuditEvent } from '../../core/index.ts';
import { AuditSpoolError } from '../errors.ts';
import { grownBuffer } from './pending.ts';

const FILE = /^spool-(\d{16})\.jsonl$/;
/** The cursor lives in two fixed-size slots written in turn, in place: the valid one with the higher `seq` counts. */
const CURSOR_SLOTS = ['cursor-a.json', 'cursor-b.json'] as const;
const CURSOR_BYTES = 512;
const OWNER = 'owner.json';
/** Held by the process using the spool: `{pid, start}`, created atomically, removed by close(). */
const LOCK = 'lock.json';
const fileName = (first: number) => `spool-${String(first).padStart(16, '0')}.jsonl`;

interface SpoolFile {
  readonly first: number;
  readonly name: string;
  count: number;
  bytes: number;
}

/**
 * One request's worth of spooled events. Its boundaries are written to the cursor file before it
 * is first sent, so every retry — by this process or the next — carries the same `key` and the
 * same `body` bytes (the collector's idempotency contract).
 */
export interface SpoolBatch {
  /** `Idempotency-Key`: the spool's id and the index of the batch's first event. */
  readonly key: string;
  readonly first: number;
  readonly count: number;
  /** `{"events":[…]}`, built from the spooled lines as written. */
  readonly body: string;
  /** Epoch ms of the first event's `time` (the oldest event not yet delivered); undefined for a junk line. */
  readonly firstTime?: number;
}

/** What the previous process using this directory left behind (see {@link Spool.begin}). */
export interface SpoolPreviousRun {
  /** False when the previous owner stopped without {@link Spool.close} (a crash, a SIGKILL). */
  readonly clean: boolean;
  /** What the previous owner wrote about itself when it began. */
  readonly owner?: Record<string, unknown>;
  /** Bytes of a torn last line dropped on open (an append the crash interrupted, never reported as kept). */
  readonly tornBytes: number;
}

/**
 * The audit client's write-ahead spool: every event goes here before it goes to the collector.
 * JSON lines in files of at most `fileBytes`, appended and `fdatasync`ed by {@link append} (the
 * caller groups concurrent events into one append: one fsync for many), under `maxBytes` in
 * total; a cursor file (atomically replaced, fsynced) holds the spool's id, the index of the next
 * event to send and the batch being sent. Delivered files are deleted. Survives restarts and
 * crashes: a batch sent but not acknowledged is sent again with the same key and bytes.
 */
export class Spool {
  readonly dir: string;
  readonly maxBytes: number;
  readonly #fileBytes: number;
  #id = '';
  #files: SpoolFile[] = [];
  /** Absolute index of the next event to send. */
  #cursor = 0;
  /** Absolute index the next appended event gets. */
  #end = 0;
  /** Index up to which appended events are fsynced; only those are sent. */
  #durable = 0;
  /** The batch being sent, as persisted in the cursor file. */
  #batch: { first: number; count: number } | undefined;
  /**
   * The lines of one file as bytes (outside the JS heap), for building batches without re-reading
   * it. As strings, a file's worth of lines outlived many collections and was promoted to the old
   * generation one by one (decision 0104).
   */
  #cache: { name: string; lines: LineBytes } | undefined;
  #tail: { name: string; fh: FileHandle } | undefined;
  /** Handles of files that filled during an append without sync: {@link sync} fsyncs and closes them. */
  #leftUnsynced: FileHandle[] = [];
  /** A spool file was created since the directory was last fsynced. */
  #dirDirty = false;
  /** Whether the next file switch keeps the old handle for {@link sync} instead of fsyncing it. */
  #deferSync = false;
  #previous: SpoolPreviousRun = { clean: true, tornBytes: 0 };
  /** Sequence number of the last cursor write; slot `seq % 2` holds it. */
  #seq = 0;
  #slots: FileHandle[] = [];
  /** Events skipped because no spool file held them (removed from the directory by hand). */
  #missing = 0;
  /** True while {@link append} writes: the last file is then never deleted under it. */
  #appending = false;
  /**
   * Indexes of lines found on open that are not audit events (junk from a disk fault or a hand
   * edit; this process only appends serialized events). Each goes in a batch of its own, so the
   * collector's refusal of it sets aside that line only, not the events around it.
   */
  #suspect = new Set<number>();

  private constructor(dir: string, maxBytes: number, fileBytes: number) {
    this.dir = dir;
    this.maxBytes = maxBytes;
    this.#fileBytes = fileBytes;
  }

  /** Opens (creating 0700) the spool directory and picks up what a previous process left. */
  static async open(
    dir: string,
    maxBytes: number,
    fileBytes = Math.min(1_048_576, Math.max(4096, maxBytes / 8)),
  ): Promise<Spool> {
    const spool = new Spool(dir, maxBytes, fileBytes);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // One process per spool directory: two would append under the same indexes and keys.
    await acquireLock(dir);
    const names = (await readdir(dir)).filter((n) => FILE.test(n)).sort();
    let tornBytes = 0;
    for (const name of names) {
      const raw = await readFile(join(dir, name));
      const size = raw.lastIndexOf(0x0a) + 1;
      const complete = raw.subarray(0, size).toString('utf8');
      // A torn last line is an append a crash interrupted: it was never reported as kept. It is
      // cut off in place: rewriting the file would put the durable lines before it at risk.
      if (size !== raw.length) {
        tornBytes += raw.length - size;
        await cutTo(join(dir, name), size);
      }
      const lines = complete ? complete.split('\n').slice(0, -1) : [];
      const count = lines.length;
      lines.forEach((line, i) => {
        if (!isEvent(line)) spool.#suspect.add(Number(FILE.exec(name)![1]) + i);
      });
      spool.#files.push({
        first: Number(FILE.exec(name)![1]),
        name,
        count,
        bytes: size,
      });
    }
    const first = spool.#files[0]?.first ?? 0;
    const last = spool.#files.at(-1);
    const filesEnd = last ? last.first + last.count : 0;
    // No valid cursor yet: a new id, so that no key of another spool is reused.
    const saved = (await readCursor(dir)) ?? {};
    spool.#seq = typeof saved.seq === 'number' ? saved.seq : 0;
    const next = Number.isSafeInteger(saved.next) ? (saved.next as number) : first;
    spool.#id =
      typeof saved.id === 'string' && /^[A-Za-z0-9-]{1,64}$/.test(saved.id) ? saved.id : randomUUID();
    // Indexes never go back, even once every file is delivered and deleted: keys stay unique.
    spool.#end = Math.max(filesEnd, next);
    spool.#durable = spool.#end;
    spool.#cursor = Math.min(Math.max(next, first), spool.#end);
    // Undelivered events before the first file: their files were removed by hand.
    if (spool.#files.length && next < first) spool.#missing = first - next;
    const b = saved.batch as { first?: unknown; count?: unknown } | null | undefined;
    if (b && b.first === spool.#cursor && Number.isSafeInteger(b.count) && (b.count as number) > 0)
      spool.#batch = { first: spool.#cursor, count: Math.min(b.count as number, spool.#end - spool.#cursor) };
    if (spool.#batch?.count === 0) spool.#batch = undefined;
    let owner: Record<string, unknown> | undefined;
    try {
      owner = JSON.parse(await readFile(join(dir, OWNER), 'utf8')) as Record<string, unknown>;
    } catch {
      owner = undefined;
    }
    spool.#previous = { clean: owner === undefined, ...(owner ? { owner } : {}), tornBytes };
    await spool.#saveCursor(true);
    await spool.#dropConsumed();
    return spool;
  }

  /** The spool's random id, the prefix of every idempotency key it makes. */
  get id(): string {
    return this.#id;
  }

  /** What the previous process left: whether it closed the spool, and what it said about itself. */
  get previousRun(): SpoolPreviousRun {
    return this.#previous;
  }

  /** Events the spool lost track of: their files were gone from the directory when they were due. */
  get missing(): number {
    return this.#missing;
  }

  /** Events waiting to be sent. */
  get depth(): number {
    return this.#end - this.#cursor;
  }

  /** Bytes of the spool files on disk. */
  get bytes(): number {
    let n = 0;
    for (const f of this.#files) n += f.bytes;
    return n;
  }

  /**
   * Marks the spool as owned by a running process (`owner.json`, fsynced): until {@link close}
   * removes it, a later {@link open} knows that the owner stopped without closing.
   */
  async begin(owner: Record<string, unknown>): Promise<void> {
    await writeDurably(join(this.dir, OWNER), JSON.stringify({ ...owner, pid: process.pid }));
  }

  /**
   * Appends JSON lines (one event each, no newline) in order, as many as fit under `maxBytes`,
   * with one write per file touched; returns how many were kept. With `sync` (the default) they
   * are fsynced before it returns; without, they are in the OS's page cache (they survive a crash
   * of this process, not of the machine) until {@link sync}. A full file is fsynced when the next
   * one starts.
   */
  async append(lines: readonly string[], sync = true): Promise<number> {
    return this.appendBytes(Buffer.from(lines.map((l) => `${l}\n`).join('')), lines.length, sync);
  }

  /**
   * {@link append} for lines already serialized as UTF-8: `count` lines in `bytes`, each ended by
   * a newline and holding none. The audit client's pending events come this way, kept as bytes
   * outside the JS heap from the moment they are emitted (decision 0104). `bytes` is not kept.
   * Bytes that do not hold exactly `count` lines are refused: a last line without its newline
   * before anything is written, fewer or more lines than `count` before the last of them are.
   */
  async appendBytes(bytes: Buffer, count: number, sync = true): Promise<number> {
    if (this.#appending) throw new Error('Spool.append is not reentrant');
    if (count > 0 && bytes[bytes.length - 1] !== 0x0a)
      throw new Error('Spool.appendBytes: the last line has no newline');
    this.#appending = true;
    try {
      const kept = await this.#append(bytes, count, sync);
      if (sync) await this.sync();
      return kept;
    } finally {
      this.#appending = false;
    }
  }

  /** Fsyncs what was appended so far: files left unsynced when they filled, then the current one. */
  async sync(): Promise<void> {
    const target = this.#end;
    if (this.#durable >= target && !this.#dirDirty) return;
    const left = this.#leftUnsynced.splice(0);
    for (const fh of left) {
      await fh.datasync();
      await fh.close();
    }
    await this.#tail?.fh.datasync();
    if (this.#dirDirty) {
      this.#dirDirty = false;
      await syncDir(this.dir);
    }
    if (target > this.#durable) this.#durable = target;
  }

  /** Events appended but not yet fsynced. */
  get unsynced(): number {
    return this.#end - this.#durable;
  }

  async #append(bytes: Buffer, count: number, sync: boolean): Promise<number> {
    this.#deferSync = !sync;
    let used = this.bytes;
    let kept = 0;
    let file = this.#files.at(-1);
    // The lines to write next to `file`: bytes[chunkStart, chunkStart + chunkBytes), chunkLines of them.
    let chunkStart = 0;
    let chunkBytes = 0;
    let chunkLines = 0;
    const flush = async (full: boolean) => {
      if (!chunkLines || !file) return;
      const fh = await this.#tailHandle(file.name);
      const chunk = bytes.subarray(chunkStart, chunkStart + chunkBytes);
      try {
        // A short write (the disk filled mid-way) reports no error: the rest is written until it
        // is all there or the OS refuses, and only then are these events counted as kept.
        let written = 0;
        while (written < chunk.length) {
          const n = (await fh.write(chunk, written, chunk.length - written)).bytesWritten;
          if (n === 0) throw new Error('the spool file takes no more bytes');
          written += n;
        }
      } catch (err) {
        // A partial write (disk full, I/O error) is cut off, so that the next append does not
        // glue a line onto a torn one; what was kept before stays.
        await fh.truncate(file.bytes).catch(() => {});
        throw err;
      }
      if (full && sync) await fh.datasync();
      file.count += chunkLines;
      file.bytes += chunkBytes;
      this.#end += chunkLines;
      if (this.#cache?.name === file.name) this.#cache.lines.append(chunk, chunkLines);
      // A full file is fsynced above: everything up to its end is durable.
      if (full && sync) this.#durable = this.#end;
      chunkStart += chunkBytes;
      chunkBytes = 0;
      chunkLines = 0;
    };
    let at = 0;
    for (let i = 0; i < count; i++) {
      const nl = bytes.indexOf(0x0a, at);
      if (nl < 0) throw new Error(`Spool.appendBytes: ${count} lines announced, ${i} found`);
      const size = nl + 1 - at;
      at = nl + 1;
      if (used + size > this.maxBytes) break;
      if (!file || file.bytes + chunkBytes + size > this.#fileBytes) {
        // With sync, the file being left is fsynced now; without, sync() does it later.
        if (sync && file && !chunkLines && this.#durable < this.#end) {
          await (await this.#tailHandle(file.name)).datasync();
          this.#durable = this.#end;
        }
        await flush(true);
        file = { first: this.#end, name: fileName(this.#end), count: 0, bytes: 0 };
        this.#files.push(file);
      }
      chunkBytes += size;
      chunkLines++;
      used += size;
      kept++;
    }
    // Every announced line walked, and bytes left over: the count is short (checked before the
    // last chunk is written; lines before a file switch in this walk may already be).
    if (kept === count && at !== bytes.length)
      throw new Error(`Spool.appendBytes: ${count} lines announced, more found`);
    await flush(false);
    return kept;
  }

  /**
   * The batch to send next: the one already begun (same key, same bytes), or a new one of up to
   * `maxCount` events and `maxBytes` of body (at least one event) whose boundaries are made
   * durable before this returns. Undefined when nothing waits.
   */
  async nextBatch(maxCount: number, maxBytes: number): Promise<SpoolBatch | undefined> {
    if (this.#durable <= this.#cursor) return undefined;
    if (this.#batch) {
      const { lines, at, n } = await this.#lines(this.#batch.first, this.#batch.count);
      return this.#make(this.#batch.first, lines, at, n);
    }
    const candidates = await this.#lines(this.#cursor, Math.min(maxCount, this.#durable - this.#cursor));
    if (!candidates.n) {
      // No file holds the cursor (files removed by hand): skip to the next one, counting the gap.
      const next = Math.min(
        this.#files.find((f) => f.first > this.#cursor && f.count > 0)?.first ?? this.#end,
        this.#durable,
      );
      this.#missing += next - this.#cursor;
      this.#cursor = next;
      await this.#saveCursor(true);
      return this.nextBatch(maxCount, maxBytes);
    }
    let bytes = 12; // {"events":[]}
    let count = 0;
    for (let i = candidates.at; i < candidates.at + candidates.n; i++) {
      if (this.#suspect.size && this.#suspect.has(this.#cursor + count)) {
        if (count === 0) count = 1;
        break;
      }
      bytes += candidates.lines.byteLength(i) + 1;
      if (bytes > maxBytes && count > 0) break;
      count++;
    }
    this.#batch = { first: this.#cursor, count };
    await this.#saveCursor(true);
    return this.#make(this.#cursor, candidates.lines, candidates.at, count);
  }

  /** Marks a batch as delivered; deletes files that are fully delivered. */
  async ack(batch: SpoolBatch): Promise<void> {
    if (batch.first !== this.#cursor)
      throw new Error(`ack of batch ${batch.first} at cursor ${this.#cursor}`);
    this.#cursor = Math.min(this.#cursor + batch.count, this.#end);
    this.#batch = undefined;
    for (let i = batch.first; i < batch.first + batch.count; i++) this.#suspect.delete(i);
    // Without fsync: the ack survives a process crash; a machine crash losing it only makes that
    // batch be sent again, under the same key, which the collector answers as a replay.
    await this.#saveCursor(false);
    await this.#dropConsumed();
  }

  /**
   * Sets a batch the collector will never take aside (`rejected-<first>.json` beside the spool,
   * kept for an operator) and moves on.
   */
  async reject(batch: SpoolBatch, why: string): Promise<string> {
    const file = join(this.dir, `rejected-${String(batch.first).padStart(16, '0')}.json`);
    // A batch holding a junk line is not JSON: its bytes are kept as they are.
    let body: unknown;
    try {
      body = JSON.parse(batch.body);
    } catch {
      body = batch.body;
    }
    await writeDurably(file, JSON.stringify({ key: batch.key, why, body }));
    await this.ack(batch);
    return file;
  }

  /** Records the cursor and releases the spool: the next {@link open} sees a clean stop. */
  async close(): Promise<void> {
    await this.#saveCursor(true);
    await this.#tail?.fh.close();
    this.#tail = undefined;
    for (const fh of this.#slots.splice(0)) await fh.close();
    for (const fh of this.#leftUnsynced.splice(0)) await fh.close();
    await rm(join(this.dir, OWNER), { force: true });
    await rm(join(this.dir, LOCK), { force: true });
  }

  /** Size of the spool directory's files as the OS sees them (tests). */
  async diskBytes(): Promise<number> {
    let n = 0;
    for (const f of this.#files) n += (await stat(join(this.dir, f.name))).size;
    return n;
  }

  /** The batch of `count` lines from `lines`' line `at`, whose absolute index is `first`. */
  #make(first: number, lines: LineBytes, at: number, count: number): SpoolBatch {
    const firstTime = count ? eventTime(lines.line(at)) : undefined;
    return {
      key: `${this.#id}:${first}`,
      first,
      count,
      body: `{"events":[${lines.joined(at, count)}]}`,
      ...(firstTime !== undefined ? { firstTime } : {}),
    };
  }

  /**
   * Up to `n` lines from absolute index `from`, within the one file holding `from`. A file removed
   * or cut short outside this process yields fewer lines (none past the cut): {@link nextBatch}
   * then counts what is gone as missing and moves on, instead of failing on every attempt.
   */
  async #lines(from: number, n: number): Promise<{ lines: LineBytes; at: number; n: number }> {
    const none = { lines: LineBytes.EMPTY, at: 0, n: 0 };
    const file = this.#files.find((f) => f.first <= from && from < f.first + f.count);
    if (!file) return none;
    const at = from - file.first;
    // A load that races an append is retried, so the cache never misses a line appended meanwhile.
    while (this.#cache?.name !== file.name) {
      const count = file.count;
      let raw: Buffer;
      try {
        raw = await readFile(join(this.dir, file.name));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        this.#files = this.#files.filter((f) => f !== file);
        return none;
      }
      if (file.count !== count) continue;
      // Whole lines only: a line being appended right now is not counted yet.
      const lines = LineBytes.of(raw, count);
      // Cut short outside this process: not cached (appends would extend it at the wrong indexes).
      if (lines.count < count) return { lines, at, n: lines.available(at, n) };
      this.#cache = { name: file.name, lines };
    }
    return { lines: this.#cache.lines, at, n: this.#cache.lines.available(at, n) };
  }

  async #tailHandle(name: string): Promise<FileHandle> {
    if (this.#tail?.name === name) return this.#tail.fh;
    if (this.#tail && this.#deferSync && this.#durable < this.#end) this.#leftUnsynced.push(this.#tail.fh);
    else await this.#tail?.fh.close();
    this.#tail = undefined;
    const fh = await open(join(this.dir, name), 'a', 0o600);
    this.#tail = { name, fh };
    // The new name is made durable by the next sync(), with the data (append with sync does it at once).
    this.#dirDirty = true;
    return fh;
  }

  /**
   * Writes the cursor into the older of its two slots, in place (one write, and one fdatasync
   * with `sync`): a torn write can only spoil the slot being written, and the other still holds
   * the previous cursor. Without `sync` it survives a crash of this process, not of the machine.
   */
  async #saveCursor(sync: boolean): Promise<void> {
    if (!this.#slots.length) {
      for (const name of CURSOR_SLOTS) {
        const path = join(this.dir, name);
        await (await open(path, 'a', 0o600)).close();
        this.#slots.push(await open(path, 'r+'));
      }
      await syncDir(this.dir);
    }
    this.#seq++;
    const body = JSON.stringify({
      seq: this.#seq,
      id: this.#id,
      next: this.#cursor,
      batch: this.#batch ?? null,
    });
    const text = `${body} ${createHash('sha256').update(body).digest('hex').slice(0, 16)}`;
    const buf = Buffer.alloc(CURSOR_BYTES, 0x20);
    buf.write(text);
    const fh = this.#slots[this.#seq % 2]!;
    await fh.write(buf, 0, CURSOR_BYTES, 0);
    if (sync) await fh.datasync();
  }

  async #dropConsumed(): Promise<void> {
    // Delivered files go, except the one being appended to while it still has room.
    while (this.#files.length && this.#files[0]!.first + this.#files[0]!.count <= this.#cursor) {
      const f = this.#files[0]!;
      if (this.#files.length === 1 && this.#appending) break;
      // An empty last file (a first write that failed) stays: the next append writes into it, and
      // a new file could otherwise take its name (same first index) while its unlink is under way.
      if (this.#files.length === 1 && f.count === 0) break;
      // Kept only while it is small beside the bound too: its delivered bytes count against
      // maxBytes, and a spool that filled must get room back once everything is delivered.
      if (
        this.#files.length === 1 &&
        f.bytes < Math.min(this.#fileBytes, this.maxBytes / 2) / 2 &&
        this.#tail?.name === f.name
      )
        break;
      // Out of the list (and its handle out of reach) before the first await: an append that
      // starts while the file is being closed and unlinked must not write into it, or its lines
      // would go with the file ("spool files removed before delivery").
      this.#files.shift();
      if (this.#cache?.name === f.name) this.#cache = undefined;
      const tail = this.#tail?.name === f.name ? this.#tail : undefined;
      if (tail) this.#tail = undefined;
      if (tail) await tail.fh.close();
      // A new file never takes a removed one's name unless it starts where that one started,
      // which an empty file can: then the name is the new file's, and stays.
      if (!this.#files.some((x) => x.name === f.name)) await rm(join(this.dir, f.name), { force: true });
    }
  }
}

/**
 * Takes the spool directory's lock for this process. A lock left by a process that is gone (its
 * pid no longer runs, or runs a process started at another time: a reused pid) is taken over; one
 * held by a live other process refuses with `ERR_AUDIT_SPOOL_LOCKED` naming it. This process's
 * own lock is taken again (a spool abandoned without close() in this process, as tests do to
 * stand for a crash; a part opens its spool once).
 */
async function acquireLock(dir: string): Promise<void> {
  const path = join(dir, LOCK);
  const me = { pid: process.pid, start: await processStart(process.pid) };
  const tmp = `${path}.${process.pid}.tmp`;
  await writeSynced(tmp, JSON.stringify(me));
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        // link() fails if the lock exists, and the lock appears whole: never half-written.
        await link(tmp, path);
        await syncDir(dir);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      let holder: { pid?: unknown; start?: unknown } | undefined;
      try {
        holder = JSON.parse(await readFile(path, 'utf8')) as { pid?: unknown; start?: unknown };
      } catch {
        holder = undefined;
      }
      if (holder?.pid === me.pid && holder.start === me.start) return;
      if (holder && Number.isSafeInteger(holder.pid) && (await isRunning(holder.pid as number, holder.start)))
        throw new AuditSpoolError(
          'ERR_AUDIT_SPOOL_LOCKED',
          `audit spool directory ${dir} is in use by process ${String(holder.pid)}; each part needs its own spool directory`,
        );
      await rm(path, { force: true });
    }
    throw new AuditSpoolError(
      'ERR_AUDIT_SPOOL_LOCKED',
      `audit spool directory ${dir} is being taken by another process`,
    );
  } finally {
    await rm(tmp, { force: true });
  }
}

/** Whether `pid` runs, and is the process that started at `start` when both starts are known. */
async function isRunning(pid: number, start: unknown): Promise<boolean> {
  if (pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const now = await processStart(pid);
  return typeof start !== 'string' || now === undefined || now === start;
}

/** A process's start time in clock ticks since boot (Linux /proc), undefined where unknown. */
async function processStart(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/**
 * Lines of one spool file as UTF-8 bytes, each without its newline: the batches' source. Bytes
 * live outside the JS heap and the line ends are one small-integer array, so a file's worth of
 * undelivered events costs the collector nothing to keep; strings are made per batch only.
 */
class LineBytes {
  static readonly EMPTY = new LineBytes(Buffer.alloc(0));
  #buf: Buffer;
  /** Offset of each line's newline. */
  readonly #ends: number[] = [];

  private constructor(buf: Buffer) {
    this.#buf = buf;
  }

  /** The first `max` whole (newline-ended) lines of `raw`. */
  static of(raw: Buffer, max: number): LineBytes {
    const lines = new LineBytes(raw);
    lines.#scan(0, raw.length, max);
    return lines;
  }

  get count(): number {
    return this.#ends.length;
  }

  /** How many of lines `at`, `at + 1`, … up to `n` there are. */
  available(at: number, n: number): number {
    return Math.max(0, Math.min(n, this.count - at));
  }

  /** Adds `count` lines, `bytes` holding each followed by a newline (copied: `bytes` is not kept). */
  append(bytes: Buffer, count: number): void {
    const from = this.#end();
    const size = bytes.length;
    if (from + size > this.#buf.length) this.#buf = grownBuffer(this.#buf, from, from + size);
    bytes.copy(this.#buf, from);
    this.#scan(from, from + size, this.count + count);
  }

  /** Bytes of line `i`, its newline not counted. */
  byteLength(i: number): number {
    return this.#ends[i]! - this.#start(i);
  }

  line(i: number): string {
    return this.#buf.toString('utf8', this.#start(i), this.#ends[i]);
  }

  /** Lines `at` to `at + n - 1` joined by commas (as `lines.join(',')` would: no line holds a newline). */
  joined(at: number, n: number): string {
    if (n === 0) return '';
    return this.#buf.toString('utf8', this.#start(at), this.#ends[at + n - 1]).replaceAll('\n', ',');
  }

  #start(i: number): number {
    return i === 0 ? 0 : this.#ends[i - 1]! + 1;
  }

  /** Where the next line starts: past the last counted one (bytes after it are not kept). */
  #end(): number {
    return this.#start(this.count);
  }

  /** Records the line ends in bytes `from` to `to`, up to `max` lines in all. */
  #scan(from: number, to: number, max: number): void {
    // Bounded at `to`: past it lie the bytes of a line not yet counted, or unwritten capacity.
    const bytes = this.#buf.subarray(0, to);
    let at = from;
    while (this.#ends.length < max) {
      const nl = bytes.indexOf(0x0a, at);
      if (nl < 0) break;
      this.#ends.push(nl);
      at = nl + 1;
    }
  }
}

/** Whether a spooled line is an audit event, as the client wrote it. */
function isEvent(line: string): boolean {
  try {
    parseAuditEvent(JSON.parse(line));
    return true;
  } catch {
    return false;
  }
}

/** The valid cursor slot with the highest `seq`, if any (a slot failing its checksum is ignored). */
async function readCursor(
  dir: string,
): Promise<{ seq?: unknown; id?: unknown; next?: unknown; batch?: unknown } | undefined> {
  let best: { seq: number } | undefined;
  for (const name of CURSOR_SLOTS) {
    let text: string;
    try {
      text = (await readFile(join(dir, name), 'utf8')).trimEnd();
    } catch {
      continue;
    }
    const cut = text.lastIndexOf(' ');
    const body = text.slice(0, cut);
    if (cut < 0 || createHash('sha256').update(body).digest('hex').slice(0, 16) !== text.slice(cut + 1))
      continue;
    try {
      const c = JSON.parse(body) as { seq: number };
      if (Number.isSafeInteger(c.seq) && (!best || c.seq > best.seq)) best = c;
    } catch {
      // not JSON despite the checksum: ignored like a torn slot
    }
  }
  return best;
}

/** Writes a small file atomically and durably: temporary file, fdatasync, rename, directory fsync. */
async function writeDurably(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp`;
  await writeSynced(tmp, text);
  await rename(tmp, path);
  await syncDir(join(path, '..'));
}

/** Truncates a file to `size` bytes and fdatasyncs it (shrinking needs no free space). */
async function cutTo(path: string, size: number): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.truncate(size);
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

/** Writes a file and fdatasyncs it. */
async function writeSynced(path: string, text: string): Promise<void> {
  const fh = await open(path, 'w', 0o600);
  try {
    await fh.writeFile(text); // loops over short writes, unlike write()
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Epoch ms of a spooled line's `time`, or undefined when the line is not an event with one. */
function eventTime(line: string | undefined): number | undefined {
  if (line === undefined) return undefined;
  try {
    const time = (JSON.parse(line) as { time?: unknown }).time;
    const ms = typeof time === 'string' ? Date.parse(time) : NaN;
    return Number.isFinite(ms) ? ms : undefined;
  } catch {
    return undefined;
  }
}
