import { constants } from 'node:http2';
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { PassThrough } from 'node:stream';
import type { Readable, Writable } from 'node:stream';
import type { TLSSocket } from 'node:tls';

/**
 * One inbound HTTP/2 stream's request, read straight off node:http2's core stream API (decision
 * 0101): what the inbound layers read of a request — method, target, headers, raw headers, the
 * connection's socket — without node:http2's compatibility `Http2ServerRequest`, a second
 * readable stream that copies every body chunk. The body is the stream itself ({@link bodyOf}).
 */
export class H2Request {
  readonly httpVersionMajor = 2;
  readonly method: string;
  /** `:path`; for CONNECT, which has none, `:authority` (refused by the request-target check). */
  readonly url: string;
  readonly stream: ServerHttp2Stream;
  readonly headers: IncomingHttpHeaders;
  /** Names and values in the order received, pseudo-headers included (as `Http2ServerRequest.rawHeaders`). */
  readonly rawHeaders: string[];

  constructor(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, rawHeaders: string[]) {
    this.stream = stream;
    this.headers = headers;
    this.rawHeaders = rawHeaders;
    this.method = headers[':method'] ?? '';
    this.url = (this.method === 'CONNECT' ? headers[':authority'] : headers[':path']) ?? '';
  }

  /** Whether the listener answered 408 because the request body stopped ({@link markBodyTimedOut}). */
  get bodyTimedOut(): boolean {
    return timedOut.has(this.stream);
  }

  /** The connection's TLS socket (one per session); undefined once the session is gone. */
  get socket(): TLSSocket | undefined {
    return this.stream.session?.socket as TLSSocket | undefined;
  }
}

/**
 * The answer to an {@link H2Request}: the subset of `ServerResponse` the inbound handler and the
 * relays use, written straight to the stream. The head goes out with `waitForTrailers`, so
 * trailers given by {@link addTrailers} before the end follow the body (none: node:http2 ends the
 * stream with an empty DATA frame). Writes to a stream already gone ({@link isGone}) are dropped,
 * as the compatibility API drops them.
 */
export class H2Response {
  statusCode = 200;
  readonly stream: ServerHttp2Stream;
  #trailers: OutgoingHttpHeaders | undefined;

  constructor(stream: ServerHttp2Stream) {
    this.stream = stream;
  }

  get headersSent(): boolean {
    return this.stream.headersSent;
  }

  get destroyed(): boolean {
    return this.stream.destroyed;
  }

  /** The client reset the stream, or it is destroyed: nothing more can be sent. */
  get gone(): boolean {
    return isGone(this.stream);
  }

  get writableEnded(): boolean {
    return this.stream.writableEnded;
  }

  /** Sends the head: `headers` as an object or as a flat `[name, value, …]` list (repeats become one field of several values). */
  writeHead(status: number, headers?: OutgoingHttpHeaders | readonly string[]): this {
    const stream = this.stream;
    // The status of record is the one sent.
    if (stream.headersSent) return this;
    this.statusCode = status;
    if (isGone(stream)) return this;
    const fields: OutgoingHttpHeaders = { ':status': status };
    if (Array.isArray(headers)) foldHeaderList(headers, fields);
    else if (headers) Object.assign(fields, headers);
    stream.respond(fields, { waitForTrailers: true });
    stream.once('wantTrailers', () => {
      if (!isGone(stream)) stream.sendTrailers(this.#trailers ?? {});
    });
    return this;
  }

  /**
   * Writes body bytes. An answer that may carry no body (HEAD, 204, 304: node:http2 ends the stream
   * with its head) drops them, as node:http does, and so does a stream already gone (the writer
   * is not made to wait for a `drain` that will not come).
   */
  write(chunk: Buffer | string): boolean {
    const stream = this.stream;
    if (isGone(stream)) return true;
    if (!stream.headersSent) this.writeHead(this.statusCode);
    if (stream.writableEnded) return true;
    return stream.write(chunk);
  }

  /**
   * Ends the answer. A stream the client reset whose request body was never read stays open in
   * node:http2 until it is; it is destroyed here, so that what it holds is freed.
   */
  end(body?: Buffer | string): this {
    const stream = this.stream;
    if (isGone(stream)) {
      if (!stream.destroyed) stream.destroy();
      return this;
    }
    if (stream.writableEnded) return this;
    if (!stream.headersSent) this.writeHead(this.statusCode);
    if (body === undefined) stream.end();
    else stream.end(body);
    return this;
  }

  /** Trailers sent after the body; only those given before the end are sent. */
  addTrailers(trailers: OutgoingHttpHeaders): void {
    this.#trailers = trailers;
  }

  /** Cuts an answer under way: RST_STREAM INTERNAL_ERROR, so the client cannot take a truncated body for a whole one. */
  destroy(): void {
    if (!this.stream.destroyed) this.stream.close(NGHTTP2_INTERNAL_ERROR);
  }

  /** `close` (the stream is gone, answered or not), `finish` (the whole answer is written) or `drain`. */
  once(event: 'close' | 'finish' | 'drain', listener: () => void): this {
    this.stream.once(event, listener);
    return this;
  }
}

const { NGHTTP2_INTERNAL_ERROR } = constants;

const timedOut = new WeakSet<ServerHttp2Stream>();

/** Marks a stream whose request body stopped (h2.ts answers it 408); its H2Request reports it. */
export function markBodyTimedOut(stream: ServerHttp2Stream): void {
  timedOut.add(stream);
}

/** Whether an HTTP/2 server stream can take no more: destroyed, or closed by the client's RST_STREAM. */
export function isGone(stream: ServerHttp2Stream): boolean {
  return stream.destroyed || stream.closed;
}

/** An inbound request: node:http's (HTTP/1.1, or the outbound side's compatibility HTTP/2) or an {@link H2Request}. */
export type InboundRequest = IncomingMessage | H2Request;
/** An inbound answer, the counterpart of {@link InboundRequest}. */
export type InboundResponse = ServerResponse | H2Response;

/** The request body as a readable stream to pipe from: the HTTP/2 stream itself, or node:http's message. */
export function bodyOf(req: InboundRequest): Readable {
  return req instanceof H2Request ? req.stream : req;
}

/**
 * The request body for a consumer that destroys what it was given once read (undici's dispatch
 * does): for HTTP/2 a stream of its own fed by the request stream, since destroying the
 * `Http2Stream` would end the whole exchange, answer included.
 * - A stream that closes before its body ended (the client reset it) fails the view, so a
 *   consumer still reading stops waiting. The view keeps an `error` listener of its own: undici
 *   removes its listeners once its request is over (an app that refused the connection), and an
 *   error with no listener would be thrown.
 * - Once the consumer is done with the view (it may stop early: the app answered without reading
 *   the body), the rest of the body is read and dropped, so the stream can close and free what it
 *   buffers.
 */
export function uploadOf(req: InboundRequest): Readable {
  if (!(req instanceof H2Request)) return req;
  const stream = req.stream;
  const view = new PassThrough();
  view.on('error', ignore);
  stream.pipe(view);
  stream.once('close', () => {
    if (!stream.readableEnded) view.destroy(new Error('the client reset the stream before its body ended'));
  });
  view.once('close', () => {
    stream.unpipe(view);
    if (!stream.readableEnded && !stream.destroyed) stream.resume();
  });
  return view;
}

const ignore = () => {};

/** Where a relayed body is written: the HTTP/2 stream itself, or node:http's response. */
export function sinkOf(res: InboundResponse): Writable {
  return res instanceof H2Response ? res.stream : res;
}

/** Folds a flat `[name, value, …]` list into `into`: a repeated name becomes one field of several values. */
export function foldHeaderList(
  list: readonly string[],
  into: Record<string, string | string[] | number | undefined>,
): void {
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i]!;
    const prev = into[name];
    into[name] =
      prev === undefined ? list[i + 1]! : ([] as string[]).concat(prev as string | string[], list[i + 1]!);
  }
}
