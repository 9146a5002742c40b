import type { IncomingHttpHeaders } from 'node:http';
import { errors } from 'undici';
import type { Dispatcher } from 'undici';
import type { Readable } from 'node:stream';
import { SpanKind, SpanStatusCode, formatTraceparent, startSpan } from '../../../core/index.ts';
import type { Tracer } from '../../../core/index.ts';
import { SidecarError } from '../../errors.ts';
import { responseHeaderList } from '../headers.ts';
import { parseGrpcTimeout, isGrpcRequest } from '../../h2/grpc.ts';
import { h2RequestHeaders, relayH2 } from '../../h2/relay.ts';
import { H2Request, uploadOf } from '../../h2/exchange.ts';
import type { InboundResponse } from '../../h2/exchange.ts';
import type { H2Client } from '../../h2/relay.ts';
import type { InboundContext } from '../context.ts';

/** Where and how the inbound side forwards to the local app. */
export interface UpstreamOptions {
  /** Keep-alive pool to the app (undici Pool on `http://127.0.0.1:<port>`), made without headers or body timeouts. */
  readonly pool: Dispatcher;
  /** Enforces the app's headers and body timeouts on the pool's exchanges. */
  readonly deadlines: UpstreamDeadlines;
  /** With `app: h2c://…`: the one multiplexed HTTP/2 connection to the app, used instead of the pool. */
  readonly h2?: H2Client;
  /** For the h2c app: how long a non-gRPC request waits for the answer's head (the pool has its own). */
  readonly h2HeadersTimeoutMs?: number;
  /** Host header the app receives (the sidecar sets it; the client's is never forwarded). */
  readonly host: string;
  /** Records the exchange's duration in seconds (the upstream latency histogram). */
  readonly observe?: (seconds: number) => void;
  /** Makes a `sidecar.upstream` span under the request's `sidecar.inbound` span. */
  readonly tracer?: Tracer;
  /** Monotonic ms. */
  readonly now?: () => number;
}

/**
 * Layer 6, forward: sends the authorized request to the app with the same target string, the
 * scanned (stripped) headers plus `host`, `x-portcullis-peer` and `traceparent`, streaming both
 * bodies through the keep-alive pool — or, for an h2c app, over its HTTP/2 connection (trailers
 * relayed, `grpc-timeout` honoured, the gRPC status recorded as the `grpcStatus` audit attribute).
 * Resolves with the status the client got; an upstream that fails before answering becomes
 * `ERR_SIDECAR_UPSTREAM_UNAVAILABLE` (502) or `…_TIMEOUT` (504).
 */
export function forward(ctx: InboundContext, up: UpstreamOptions): Promise<number> {
  const { req, res } = ctx;
  // The scanned list belongs to this request: extend it in place.
  const headers = ctx.headers!.forward;
  // An unsampled request gets no upstream span: the app's parent is then the inbound span.
  const span =
    up.tracer && ctx.span?.isRecording()
      ? startSpan(up.tracer, 'sidecar.upstream', ctx.span, SpanKind.CLIENT, {
          'http.request.method': req.method!,
          'server.address': up.host,
        })
      : undefined;
  headers.push(
    'host',
    up.host,
    'x-portcullis-peer',
    ctx.peer!.spiffeId.uri,
    'traceparent',
    span
      ? formatTraceparent(span.spanContext())
      : ctx.span
        ? formatTraceparent(ctx.span.spanContext())
        : `00-${ctx.traceId}-${ctx.spanId}-01`,
  );
  const sentAt = up.observe && up.now ? up.now() : 0;
  const done = (status: number, failed: boolean) => {
    if (up.observe && up.now) up.observe((up.now() - sentAt) / 1000);
    if (span) {
      if (status !== 0) span.setAttribute('http.response.status_code', status);
      if (failed) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    }
  };
  if (up.h2) return forwardH2(ctx, up.h2, up.host, headers, done, up.h2HeadersTimeoutMs);
  const hasBody =
    req instanceof H2Request
      ? !req.stream.endAfterHeaders
      : req.headers['transfer-encoding'] !== undefined ||
        (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
  return new Promise<number>((resolve, reject) => {
    const body = hasBody ? uploadOf(req) : null;
    const handler = new ForwardHandler(res, done, resolve, reject, up.deadlines, body);
    up.pool.dispatch(
      {
        method: req.method as Dispatcher.HttpMethod,
        path: ctx.target!.target,
        headers,
        body,
        // The pool has no timers of its own: up.deadlines enforces both timeouts.
      },
      handler,
    );
  });
}

/** The h2c leg of {@link forward}: one stream on the app's HTTP/2 connection, relayed by relayH2. */
async function forwardH2(
  ctx: InboundContext,
  client: H2Client,
  authority: string,
  headers: readonly string[],
  done: (status: number, failed: boolean) => void,
  headersTimeoutMs: number | undefined,
): Promise<number> {
  const { req, res } = ctx;
  const grpc = isGrpcRequest(req.headers);
  const deadline = grpc ? parseGrpcTimeout(req.headers['grpc-timeout']) : undefined;
  let outcome;
  try {
    if (deadline === null)
      throw new SidecarError('ERR_SIDECAR_REQUEST_MALFORMED', 'malformed request: grpc-timeout');
    const stream = await client.request(
      h2RequestHeaders(req.method!, ctx.target!.target, authority, 'http', headers, grpc),
    );
    // A gRPC call is bounded by its own grpc-timeout: a stream may rightly wait long for its head.
    outcome = await relayH2(req, res, stream, deadline, grpc ? undefined : headersTimeoutMs);
  } catch (err) {
    done(0, true);
    throw err;
  }
  if (outcome.grpcStatus !== undefined)
    ctx.attributes = { ...ctx.attributes, grpcStatus: outcome.grpcStatus.slice(0, 8) };
  done(outcome.status, outcome.status >= 500);
  return outcome.status;
}

/**
 * Relays one upstream response to the client through undici's dispatch handler interface: no
 * stream wrapper, no `finished()` listeners, one `close` listener per request (a client gone
 * mid-exchange aborts the upstream request) and a `drain` listener only while the client is slow.
 */
class ForwardHandler implements Dispatcher.DispatchHandler {
  status = 0;
  /** While in flight: monotonic ms past which {@link UpstreamDeadlines} aborts the exchange. */
  deadline = 0;
  /** Whether the answer's head has come (the body timeout applies) or not (the headers timeout). */
  answering = false;
  /** Its place in {@link UpstreamDeadlines}' table while watched, else -1. */
  slot = -1;
  readonly deadlines: UpstreamDeadlines;
  /** The request body being uploaded, if any. */
  readonly body: Readable | null;
  controller: Dispatcher.DispatchController | undefined;
  settled = false;
  readonly res: InboundResponse;
  readonly done: (status: number, failed: boolean) => void;
  readonly resolve: (status: number) => void;
  readonly reject: (err: unknown) => void;

  constructor(
    res: InboundResponse,
    done: (status: number, failed: boolean) => void,
    resolve: (status: number) => void,
    reject: (err: unknown) => void,
    deadlines: UpstreamDeadlines,
    body: Readable | null,
  ) {
    this.deadlines = deadlines;
    this.body = body;
    this.res = res;
    this.done = done;
    this.resolve = resolve;
    this.reject = reject;
    res.once('close', () => {
      if (!this.settled) this.controller?.abort(new Error('client closed the connection'));
    });
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    // The client went away while the request waited for a pooled connection.
    if (this.res.destroyed) return controller.abort(new Error('client closed the connection'));
    this.deadlines.watch(this);
    // While the body goes up, the wait for the head restarts at each chunk the pool takes, as
    // undici's own headers timer did on each write it had to wait for: an app that stops reading
    // the upload still times out, a long upload it keeps reading does not. Attached here, in the
    // same turn as the pool's own reader, so that no chunk flows before the pool listens.
    this.body?.on('data', () => this.deadlines.refresh(this));
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
  ): void {
    // 1xx informational answers are not relayed (the listener answered Expect: 100-continue itself);
    // like undici's own timer, one restarts the wait for the final head.
    if (statusCode < 200) return this.deadlines.refresh(this);
    this.answering = true;
    this.deadlines.refresh(this);
    this.res.writeHead(statusCode, responseHeaderList(headers));
    this.status = statusCode;
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.deadlines.refresh(this);
    if (this.res.write(chunk)) return;
    controller.pause();
    this.res.once('drain', () => {
      this.deadlines.refresh(this);
      controller.resume();
    });
  }

  onResponseEnd(): void {
    this.settled = true;
    this.deadlines.forget(this);
    this.res.end();
    this.done(this.status, this.status >= 500);
    this.resolve(this.status);
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.settled) return;
    this.settled = true;
    this.deadlines.forget(this);
    this.done(this.status, true);
    if (this.status !== 0) {
      // Headers are gone already: the only honest signal left is a cut connection.
      this.res.destroy();
      return this.resolve(this.status);
    }
    this.reject(upstreamError(err));
  }
}

/**
 * The app pool's headers and body timeouts, enforced from one interval timer over the exchanges in
 * flight instead of undici's two timers per request. Those timers differed in length, so undici made
 * a new one per request and phase, and each lived long enough to be promoted to the old generation:
 * with them gone the sidecar made a quarter fewer mark-compacts under load (decision 0104).
 *
 * A timeout fires between its length and its length plus one period (a quarter of the shorter
 * timeout, 10 to 250 ms), like undici's own timers, which are swept every 500 ms. The headers
 * timeout runs from when the request is written on a connection, again at each chunk of its body
 * the pool takes and after a 1xx answer; the body timeout from the head, again at each chunk and
 * each time a slow client lets the relay go on. An exchange past its deadline is aborted as undici
 * would abort it (`UND_ERR_HEADERS_TIMEOUT` or `UND_ERR_BODY_TIMEOUT`): 504 before the head, a cut
 * connection after it.
 */
export class UpstreamDeadlines {
  readonly #headersMs: number;
  readonly #bodyMs: number;
  readonly #periodMs: number;
  /**
   * The exchanges in flight, each in a slot it gives back when it ends, and the free slots. Not a
   * `Set`: its table, rebuilt as entries come and go, lives in the old generation once promoted,
   * and a discarded table kept every request it had held alive through scavenges until the next
   * mark-compact (in the bench: scavenges twice as long, 5–7× the mark-compacts). A slot is
   * overwritten when it is given back, so nothing ended stays reachable from here.
   */
  readonly #slots: (ForwardHandler | undefined)[] = [];
  readonly #free: number[] = [];
  #live = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(headersTimeoutMs: number, bodyTimeoutMs: number) {
    this.#headersMs = headersTimeoutMs;
    this.#bodyMs = bodyTimeoutMs;
    this.#periodMs = Math.min(250, Math.max(10, Math.floor(Math.min(headersTimeoutMs, bodyTimeoutMs) / 4)));
  }

  /** Exchanges in flight (tests). */
  get size(): number {
    return this.#live;
  }

  watch(h: ForwardHandler): void {
    const slot = this.#free.length ? this.#free.pop()! : this.#slots.push(undefined) - 1;
    this.#slots[slot] = h;
    h.slot = slot;
    this.#live++;
    this.refresh(h);
    this.#timer ??= setInterval(() => this.#sweep(), this.#periodMs).unref();
  }

  refresh(h: ForwardHandler): void {
    h.deadline = performance.now() + (h.answering ? this.#bodyMs : this.#headersMs);
  }

  forget(h: ForwardHandler): void {
    if (h.slot < 0) return;
    this.#slots[h.slot] = undefined;
    this.#free.push(h.slot);
    h.slot = -1;
    this.#live--;
  }

  /** Stops the timer (the sidecar's shutdown); exchanges still in flight are no longer timed. */
  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    for (const h of this.#slots) if (h) this.forget(h);
  }

  #sweep(): void {
    if (this.#live === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      return;
    }
    const now = performance.now();
    for (const h of this.#slots) {
      if (!h || h.deadline > now) continue;
      this.forget(h);
      h.controller?.abort(
        h.answering
          ? new errors.BodyTimeoutError('the service stopped sending its answer')
          : new errors.HeadersTimeoutError('the service did not answer in time'),
      );
    }
  }
}

function upstreamError(err: Error): SidecarError {
  const code = (err as { code?: string }).code;
  if (
    code === 'UND_ERR_HEADERS_TIMEOUT' ||
    code === 'UND_ERR_BODY_TIMEOUT' ||
    code === 'UND_ERR_CONNECT_TIMEOUT'
  )
    return new SidecarError('ERR_SIDECAR_UPSTREAM_TIMEOUT', 'the service did not answer in time', {
      cause: err,
    });
  return new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 'the service is unavailable', { cause: err });
}
