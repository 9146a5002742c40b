import { open } from 'node:fs/promises';

/** A run of whole `\n`-terminated lines read from a file, and where it starts in the file. */
export interface LineChunk {
  readonly buf: Buffer;
  readonly offset: number;
}

/** Largest line the readers accept (a record line of the largest event is far below it). */
export const MAX_LINE_BYTES = 64 * 1_048_576;

/**
 * Streams a file from byte `from` as chunks of whole lines (about `chunkBytes` each, never one
 * string of the whole file), and tells `onTail` about bytes after the last newline (a torn
 * line) with their offset. A "line" longer than {@link MAX_LINE_BYTES} ends the stream as a
 * tail too. One buffer is reused: a chunk is valid only until the next one is asked for (copy
 * what you keep), so that reading a large log leaves no trail of garbage buffers.
 */
export async function* readLineChunks(
  file: string,
  options: { from?: number; chunkBytes?: number; onTail?: (offset: number, bytes: number) => void } = {},
): AsyncIterable<LineChunk> {
  const fh = await open(file, 'r');
  try {
    let size = options.chunkBytes ?? 1_048_576;
    size = Math.max(size, 1);
    let pos = options.from ?? 0;
    let buf = Buffer.allocUnsafe(size);
    let carry = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, carry, buf.length - carry, pos);
      const filled = carry + bytesRead;
      const start = pos - carry;
      pos += bytesRead;
      if (bytesRead === 0) {
        if (filled) options.onTail?.(start, filled);
        return;
      }
      const cut = buf.lastIndexOf(0x0a, filled - 1) + 1;
      if (cut === 0) {
        if (filled >= MAX_LINE_BYTES) {
          options.onTail?.(start, filled);
          return;
        }
        // A line longer than the buffer: grow it, up to the cap.
        size = Math.min(size * 2, MAX_LINE_BYTES);
        const bigger = Buffer.allocUnsafe(size);
        buf.copy(bigger, 0, 0, filled);
        buf = bigger;
        carry = filled;
        continue;
      }
      yield { buf: buf.subarray(0, cut), offset: start };
      buf.copy(buf, 0, cut, filled);
      carry = filled - cut;
    }
  } finally {
    await fh.close();
  }
}

/** Calls `each(line, offset)` for every whole line of the chunks (without the `\n`). */
export function forEachLine(chunk: LineChunk, each: (line: Buffer, offset: number) => void): void {
  const { buf, offset } = chunk;
  let start = 0;
  while (start < buf.length) {
    const end = buf.indexOf(0x0a, start);
    each(buf.subarray(start, end), offset + start);
    start = end + 1;
  }
}

/**
 * The last line of a file that satisfies `want`, read backwards in chunks (for the hash of the
 * last record of a segment without reading the segment). Undefined when there is none.
 */
export async function lastLineOf(file: string, want: (line: Buffer) => boolean): Promise<Buffer | undefined> {
  const fh = await open(file, 'r');
  try {
    let end = (await fh.stat()).size;
    // Only whole lines count: skip a torn tail.
    let tail = Buffer.alloc(0);
    let step = 65_536;
    while (end > 0 || tail.length) {
      const n = Math.min(step, end);
      const buf = Buffer.allocUnsafe(n + tail.length);
      await fh.read(buf, 0, n, end - n);
      tail.copy(buf, n);
      end -= n;
      // Lines fully inside buf: between newlines.
      let stop = buf.lastIndexOf(0x0a);
      if (stop < 0) {
        if (end === 0) return undefined;
        tail = buf;
        step = Math.min(step * 2, MAX_LINE_BYTES);
        continue;
      }
      for (;;) {
        const startNl = stop > 0 ? buf.lastIndexOf(0x0a, stop - 1) : -1;
        if (startNl < 0 && end > 0) break;
        const line = buf.subarray(startNl + 1, stop);
        if (want(line)) return Buffer.from(line);
        if (startNl < 0) return undefined;
        stop = startNl;
      }
      tail = Buffer.from(buf.subarray(0, stop + 1));
      if (tail.length > MAX_LINE_BYTES) return undefined;
    }
    return undefined;
  } finally {
    await fh.close();
  }
}
