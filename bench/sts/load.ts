// A small load generator over raw TLS sockets: pipelined keep-alive connections, or one new
// connection per request (with TLS session resumption). Cheaper per request than a full HTTP
// client, so that on a 2-core machine the server, not the generator, is what gets measured.
import { connect, createSecureContext } from 'node:tls';
import type { ConnectionOptions, TLSSocket } from 'node:tls';

/** Result of one load run. */
export interface LoadResult {
  readonly completed: number;
  readonly non2xx: number;
  readonly errors: number;
  readonly seconds: number;
  readonly perSecond: number;
  /** One response body, for a sanity check of what was served. */
  readonly sample: string;
}

/** Where and how to connect. */
export interface Target {
  readonly host: string;
  readonly port: number;
  readonly tls: ConnectionOptions;
  /** The full HTTP/1.1 request bytes to send (keep-alive form). */
  readonly request: Buffer;
}

/** Incremental HTTP/1.1 response framing: calls `onResponse(status, body)` per complete response. */
function responseReader(onResponse: (status: number, body: string) => void) {
  let buf: Buffer = Buffer.alloc(0);
  return (chunk: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    for (;;) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.subarray(0, end).toString('latin1');
      const m = /\r\ncontent-length: *(\d+)/i.exec(head);
      const len = m ? Number(m[1]) : 0;
      if (buf.length < end + 4 + len) return;
      const status = Number(head.slice(9, 12));
      const body = buf.subarray(end + 4, end + 4 + len).toString('latin1');
      buf = buf.subarray(end + 4 + len);
      onResponse(status, body);
    }
  };
}

/** Runs `connections` keep-alive connections with `pipelining` requests in flight each, for `durationMs`. */
export async function keepAliveLoad(
  target: Target,
  opts: { connections: number; pipelining: number; durationMs: number },
): Promise<LoadResult> {
  let completed = 0;
  let non2xx = 0;
  let errors = 0;
  let sample = '';
  let running = true;
  const sockets: TLSSocket[] = [];
  // refill[n - 1] is n requests back to back.
  const refill = Array.from({ length: opts.pipelining }, (_, i) =>
    Buffer.concat(Array.from({ length: i + 1 }, () => target.request)),
  );
  const start = performance.now();
  await Promise.all(
    Array.from(
      { length: opts.connections },
      () =>
        new Promise<void>((resolve) => {
          const socket = connect({ host: target.host, port: target.port, ...target.tls }, () => {
            socket.write(Buffer.concat(Array.from({ length: opts.pipelining }, () => target.request)));
            resolve();
          });
          sockets.push(socket);
          // The requests that replace the answers read from one chunk go out in one write: one
          // write per answer cost the generator ~5 µs of CPU a request, taken from the same two
          // cores as the server it measures.
          let owed = 0;
          const read = responseReader((status, body) => {
            if (!running) return;
            if (status >= 200 && status < 300) completed++;
            else non2xx++;
            if (!sample) sample = body;
            owed++;
          });
          socket.on('data', (chunk: Buffer) => {
            read(chunk);
            while (owed > 0) {
              const n = Math.min(owed, refill.length);
              socket.write(refill[n - 1]!);
              owed -= n;
            }
          });
          socket.on('error', () => {
            errors++;
            resolve();
          });
        }),
    ),
  );
  await new Promise((r) => setTimeout(r, opts.durationMs));
  running = false;
  const seconds = (performance.now() - start) / 1000;
  for (const s of sockets) s.destroy();
  return { completed, non2xx, errors, seconds, perSecond: Math.round(completed / seconds), sample };
}

/**
 * Runs `concurrency` loops that each open a new TLS connection per request (resuming the TLS
 * session from the previous connection when `resume`), send one request with `Connection: close`
 * and wait for the response, for `durationMs`.
 */
export async function newConnectionLoad(
  target: Target,
  opts: { concurrency: number; durationMs: number; resume: boolean },
): Promise<LoadResult & { readonly resumed: number }> {
  const request = Buffer.from(
    target.request
      .toString('latin1')
      .replace(/\r\nconnection: keep-alive/i, '')
      .replace('\r\n', '\r\nconnection: close\r\n'),
    'latin1',
  );
  let completed = 0;
  let non2xx = 0;
  let errors = 0;
  let resumed = 0;
  let sample = '';
  // One secure context for all connections: building one per connect (PEM parsing, CA loading)
  // would make the generator, not the server, the bottleneck.
  const { cert, key, ca, servername } = target.tls;
  const tlsOptions = { secureContext: createSecureContext({ cert, key, ca }), servername };
  const deadline = performance.now() + opts.durationMs;
  const start = performance.now();
  const one = (session: Buffer | undefined) =>
    new Promise<Buffer | undefined>((resolve) => {
      let latest = session;
      const socket = connect(
        {
          host: target.host,
          port: target.port,
          ...tlsOptions,
          ...(opts.resume && session ? { session } : {}),
        },
        () => {
          if (socket.isSessionReused()) resumed++;
          socket.write(request);
        },
      );
      socket.on('session', (s: Buffer) => (latest = s));
      let done = false;
      socket.on(
        'data',
        responseReader((status, body) => {
          if (done) return;
          done = true;
          if (status >= 200 && status < 300) completed++;
          else non2xx++;
          if (!sample) sample = body;
          socket.end();
        }),
      );
      socket.on('error', () => {
        if (!done) errors++;
        done = true;
      });
      socket.on('close', () => resolve(latest));
    });
  await Promise.all(
    Array.from({ length: opts.concurrency }, async () => {
      let session: Buffer | undefined;
      while (performance.now() < deadline) session = await one(session);
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  return { completed, non2xx, errors, resumed, seconds, perSecond: Math.round(completed / seconds), sample };
}
