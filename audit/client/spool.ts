import { mkdir, open, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AuditEvent } from '../../core/index.ts';

const FILE = /^spool-(\d{16})\.jsonl$/;
const CURSOR = 'cursor.json';
const fileName = (first: number) => `spool-${String(first).padStart(16, '0')}.jsonl`;

interface SpoolFile {
  readonly first: number;
  readonly name: string;
  count: number;
  bytes: number;
}

/**
 * A bounded on-disk FIFO of events, for when the collector is unreachable: JSON lines in files
 * of at most `fileBytes`, and a cursor (index of the next event to send) written atomically after
 * each acknowledged batch. It survives a restart; a crash between a delivery and the cursor
 * write makes that one batch be sent again (at-least-once across crashes, exactly-once otherwise).
 */
export class Spool {
  readonly dir: string;
  readonly maxBytes: number;
  readonly #fileBytes: number;
  #files: SpoolFile[] = [];
  /** Absolute index of the next event to send. */
  #cursor = 0;
  /** Absolute index the next appended event gets. */
  #end = 0;
  #head: { name: string; events: AuditEvent[] } | undefined;

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
  ) {
    const spool = new Spool(dir, maxBytes, fileBytes);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const names = (await readdir(dir)).filter((n) => FILE.test(n)).sort();
    for (const name of names) {
      const text = await readFile(join(dir, name), 'utf8');
      const complete = text.slice(0, text.lastIndexOf('\n') + 1);
      // A torn last line is an event that was never reported as spooled; drop it.
      if (complete.length !== text.length) await writeFile(join(dir, name), complete);
      const count = complete ? complete.split('\n').length - 1 : 0;
      spool.#files.push({
        first: Number(FILE.exec(name)![1]),
        name,
        count,
        bytes: Buffer.byteLength(complete),
      });
    }
    const first = spool.#files[0]?.first ?? 0;
    const last = spool.#files.at(-1);
    spool.#end = last ? last.first + last.count : 0;
    try {
      const saved = JSON.parse(await readFile(join(dir, CURSOR), 'utf8')) as { next?: unknown };
      spool.#cursor = typeof saved.next === 'number' ? saved.next : first;
    } catch {
      spool.#cursor = first;
    }
    spool.#cursor = Math.min(Math.max(spool.#cursor, first), spool.#end);
    await spool.#dropConsumed();
    return spool;
  }

  /** Events waiting to be sent. */
  get depth(): number {
    return this.#end - this.#cursor;
  }

  /** Bytes on disk. */
  get bytes(): number {
    return this.#files.reduce((n, f) => n + f.bytes, 0);
  }

  /**
   * Appends events in order, durably (fdatasync), as many as fit under `maxBytes`; returns how
   * many were kept. The rest are the caller's to count as lost.
   */
  async append(events: readonly AuditEvent[]): Promise<number> {
    let used = this.bytes;
    let kept = 0;
    let file = this.#files.at(-1);
    let chunk = '';
    const flush = async () => {
      if (!chunk || !file) return;
      const fh = await open(join(this.dir, file.name), 'a', 0o600);
      try {
        await fh.write(chunk);
        await fh.datasync();
      } finally {
        await fh.close();
      }
      chunk = '';
    };
    for (const event of events) {
      const line = `${JSON.stringify(event)}\n`;
      const size = Buffer.byteLength(line);
      if (used + size > this.maxBytes) break;
      if (!file || file.bytes + size > this.#fileBytes) {
        await flush();
        file = { first: this.#end, name: fileName(this.#end), count: 0, bytes: 0 };
        this.#files.push(file);
      }
      chunk += line;
      file.count++;
      file.bytes += size;
      used += size;
      this.#end++;
      kept++;
    }
    await flush();
    return kept;
  }

  /** Up to `n` events from the front, in order, without removing them. */
  async peek(n: number): Promise<AuditEvent[]> {
    const file = this.#files.find((f) => f.first + f.count > this.#cursor);
    if (!file) return [];
    if (this.#head?.name !== file.name || this.#head.events.length < file.count) {
      const text = await readFile(join(this.dir, file.name), 'utf8');
      const lines = text.split('\n');
      lines.pop();
      this.#head = { name: file.name, events: lines.map((l) => JSON.parse(l) as AuditEvent) };
    }
    const from = this.#cursor - file.first;
    return this.#head.events.slice(from, from + n);
  }

  /** Marks the first `n` events as delivered; deletes files that are fully delivered. */
  async ack(n: number): Promise<void> {
    this.#cursor = Math.min(this.#cursor + n, this.#end);
    const tmp = join(this.dir, `${CURSOR}.tmp`);
    await writeFile(tmp, JSON.stringify({ next: this.#cursor }));
    await rename(tmp, join(this.dir, CURSOR));
    await this.#dropConsumed();
  }

  async #dropConsumed(): Promise<void> {
    while (this.#files.length && this.#files[0]!.first + this.#files[0]!.count <= this.#cursor) {
      const f = this.#files[0]!;
      // Keep the file being appended to unless everything is delivered.
      if (this.#files.length === 1 && this.#cursor < this.#end) break;
      await rm(join(this.dir, f.name), { force: true });
      this.#files.shift();
      if (this.#head?.name === f.name) this.#head = undefined;
    }
  }

  /** Size of the spool directory's files as the OS sees them (tests). */
  async diskBytes(): Promise<number> {
    let n = 0;
    for (const f of this.#files) n += (await stat(join(this.dir, f.name))).size;
    return n;
  }
}
