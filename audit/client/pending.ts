/** Someone waiting to hear whether an event reached the spool (`record()` in failMode closed). */
export interface PendingWaiter {
  /** The event's place among those taken together. */
  readonly at: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

/** What {@link PendingLines.take} hands over: give it back with {@link PendingLines.release}. */
export interface TakenLines {
  /** `count` serialized events, each ended by a newline. */
  readonly bytes: Buffer;
  readonly count: number;
  readonly waiters: readonly PendingWaiter[];
  /** The whole buffer `bytes` is a view of. */
  readonly buffer: Buffer;
}

const INITIAL_BYTES = 65_536;
const NO_WAITERS: readonly PendingWaiter[] = Object.freeze([]);
/** A buffer grown past this by a burst is let go after use rather than kept for the next one. */
const KEPT_BYTES = 8 * 1_048_576;

/**
 * A buffer outside the JS heap with `buf`'s first `used` bytes and room for `need` bytes in all:
 * twice `buf`'s size or more, at least 64 KiB. How the pending events' buffer and the spool's
 * copy of a file grow.
 */
export function grownBuffer(buf: Buffer, used: number, need: number): Buffer {
  const grown = Buffer.allocUnsafeSlow(Math.max(2 * buf.length, need, INITIAL_BYTES));
  buf.copy(grown, 0, 0, used);
  return grown;
}

/**
 * The audit client's events waiting for the spool, serialized as UTF-8 lines into a buffer
 * outside the JS heap. Held as strings, each event waited out the loss window (up to 200 ms) and
 * was promoted to the old generation on the way; as bytes, nothing per event outlives the emit
 * (decision 0104). Two buffers take turns: one fills while the other is written to the spool.
 */
export class PendingLines {
  #buf: Buffer;
  #spare: Buffer | undefined;
  #used = 0;
  #count = 0;
  #waiters: PendingWaiter[] = [];

  constructor() {
    this.#buf = Buffer.allocUnsafeSlow(INITIAL_BYTES);
  }

  get length(): number {
    return this.#count;
  }

  /** Adds one serialized event (JSON: it holds no newline). */
  push(line: string, waiter?: { resolve: () => void; reject: (err: Error) => void }): void {
    // At most 3 UTF-8 bytes per UTF-16 code unit, and the newline.
    const most = 3 * line.length + 1;
    if (this.#used + most > this.#buf.length)
      this.#buf = grownBuffer(this.#buf, this.#used, this.#used + most);
    this.#used += this.#buf.write(line, this.#used);
    this.#buf[this.#used++] = 0x0a;
    if (waiter) this.#waiters.push({ at: this.#count, resolve: waiter.resolve, reject: waiter.reject });
    this.#count++;
  }

  /** Takes every pending event. Until released, the bytes are the caller's: new events go elsewhere. */
  take(): TakenLines {
    // The waiters go with their events. Without any, the taken list is a frozen empty one and the
    // pending list stays: never one array for both, or a waiter of an event emitted during the
    // write would be told its event was kept when the write of the others ends.
    let waiters = NO_WAITERS;
    if (this.#waiters.length) {
      waiters = this.#waiters;
      this.#waiters = [];
    }
    const taken = {
      bytes: this.#buf.subarray(0, this.#used),
      count: this.#count,
      waiters,
      buffer: this.#buf,
    };
    this.#buf = this.#spare ?? Buffer.allocUnsafeSlow(INITIAL_BYTES);
    this.#spare = undefined;
    this.#used = 0;
    this.#count = 0;
    return taken;
  }

  /** Gives taken bytes back once they are written: their buffer holds the events after next. */
  release(taken: TakenLines): void {
    if (taken.buffer !== this.#buf && taken.buffer.length <= KEPT_BYTES) this.#spare = taken.buffer;
  }
}
