import type { Socket } from 'node:net';

/** A chunk as `Writable#_writev` receives it. */
interface Chunk {
  readonly chunk: Buffer | string;
  readonly encoding: BufferEncoding | 'buffer';
}

/** A held chunk and, when it was not acknowledged at once, the callback to run once it is written. */
interface Held extends Chunk {
  readonly callback: ((err?: Error | null) => void) | undefined;
}

type WritableInternals = Socket & {
  _write(chunk: Buffer | string, encoding: BufferEncoding | 'buffer', cb: (err?: Error | null) => void): void;
  _writev(chunks: Chunk[], cb: (err?: Error | null) => void): void;
  _final(cb: (err?: Error | null) => void): void;
  _destroy(err: Error | null, cb: (err?: Error | null) => void): void;
};

/** Bytes held before writes stop being acknowledged at once (and back-pressure applies). */
const DEFAULT_MAX_HELD_BYTES = 64 * 1024;

/**
 * Makes everything written to `socket` within one turn of the event loop leave in one write, one
 * TLS record run and one system call, instead of one each per `write()`.
 *
 * Why: node:http answers pipelined requests one at a time — the next response goes to the socket
 * only once the previous one's write has called back — so eight pipelined answers cost eight TLS
 * writes, and on loopback each write is also the receiver's TCP processing (half of a bare
 * fastify mTLS route's CPU, profiled). Here a write is acknowledged at once while fewer than
 * `maxHeldBytes` are held and no real write is in flight; the held chunks go out together in
 * `setImmediate`. Past the bound, or while the kernel is still taking the previous write,
 * callbacks wait for the real write as usual, so a client that does not read meets ordinary
 * back-pressure. `end()` and `destroy()` write what is held before the socket shuts down or
 * closes; a write error destroys the socket as it would have without this.
 *
 * Call it once per socket, before anything is written (for a TLS server, in `secureConnection`).
 */
export function coalesceWrites(socket: Socket, maxHeldBytes: number = DEFAULT_MAX_HELD_BYTES): void {
  const s = socket as WritableInternals;
  const realWritev = s._writev.bind(s);
  const realFinal = s._final.bind(s);
  const realDestroy = s._destroy.bind(s);
  let held: Held[] = [];
  let heldBytes = 0;
  let inflight = false;
  let scheduled = false;
  let onIdle: (() => void) | undefined;

  const flush = () => {
    scheduled = false;
    if (inflight || held.length === 0) return;
    const batch = held;
    held = [];
    heldBytes = 0;
    inflight = true;
    realWritev(batch, (err) => {
      inflight = false;
      for (const h of batch) h.callback?.(err);
      if (err) {
        for (const h of held) h.callback?.(err);
        held = [];
        heldBytes = 0;
        if (!s.destroyed) s.destroy(err);
        return;
      }
      if (held.length > 0) flush();
      else if (onIdle) {
        const idle = onIdle;
        onIdle = undefined;
        idle();
      }
    });
  };
  const hold = (chunks: readonly Chunk[], cb: (err?: Error | null) => void) => {
    let bytes = 0;
    for (const c of chunks)
      bytes +=
        typeof c.chunk === 'string'
          ? Buffer.byteLength(c.chunk, c.encoding === 'buffer' ? 'utf8' : c.encoding)
          : c.chunk.length;
    const ackNow = !inflight && heldBytes + bytes <= maxHeldBytes;
    chunks.forEach((c, i) =>
      held.push({
        chunk: c.chunk,
        encoding: c.encoding,
        callback: !ackNow && i === chunks.length - 1 ? cb : undefined,
      }),
    );
    heldBytes += bytes;
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
    if (ackNow) cb();
  };

  s._write = (chunk, encoding, cb) => hold([{ chunk, encoding }], cb);
  s._writev = (chunks, cb) => hold(chunks, cb);
  s._final = (cb) => {
    if (!inflight && held.length === 0) return realFinal(cb);
    // Something is held (so a flush is scheduled) or in flight: shut down once it is written.
    onIdle = () => realFinal(cb);
  };
  // What was acknowledged is written before the handle closes, as it would have been without this:
  // node:http destroys an idle keep-alive socket right after its answer finished (server.close()).
  // A real write still in flight means the rest would have been queued behind it and lost anyway.
  s._destroy = (err, cb) => {
    if (!inflight) flush();
    realDestroy(err, cb);
  };
}
