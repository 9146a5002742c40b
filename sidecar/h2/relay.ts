import { connect as h2connect, constants } from 'node:http2';
import type {
  ClientHttp2Session,
  ClientHttp2Stream,
  Http2ServerResponse,
  IncomingHttpHeaders as H2Headers,
  OutgoingHttpHeaders,
  ServerHttp2Stream,
} from 'node:http2';
import { connect as netConnect } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { SidecarError } from '../errors.ts';
import { responseHeaderList } from '../inbound/headers.ts';
import { GRPC, encodeGrpcMessage, isGrpcRequest } from './grpc.ts';
import { http2InUse } from '../heap.ts';
import { H2Response, bodyOf, foldHeaderList, isGone, sinkOf } from './exchange.ts';
import type { InboundRequest, InboundResponse } from './exchange.ts';

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR, NGHTTP2_FLAG_END_STREAM } = constants;

/** Whether a request arrived over HTTP/2 (an H2Request, or an `Http2ServerRequest` in `IncomingMessage` clothes). */
export function isH2(req: InboundRequest): boolean {
  return req.httpVersionMajor === 2;
}

/** The HTTP/2 stream an answer to an HTTP/2 request goes on. */
function clientStream(res: InboundResponse): ServerHttp2Stream {
  return res instanceof H2Response ? res.stream : (res as unknown as Http2ServerResponse).stream;
}

/**
 * Answers a gRPC call with a trailers-only response (RFC-less but normative gRPC over HTTP/2:
 * one HEADERS frame with END_STREAM): HTTP 200, `grpc-status`, `grpc-message`. Over HTTP/1.1
 * (gRPC-Web) the same fields go in the response head.
 */
export function answerGrpc(
  req: InboundRequest,
  res: InboundResponse,
  grpcStatus: number,
  message: string,
): void {
  const fields = {
    'content-type': 'application/grpc',
    'grpc-status': String(grpcStatus),
    'grpc-message': encodeGrpcMessage(message.slice(0, 1024)),
  };
  if (isH2(req)) {
    const stream = clientStream(res);
    if (!isGone(stream) && !stream.headersSent)
      stream.respond({ ':status': 200, ...fields }, { endStream: true });
    return;
  }
  res.writeHead(200, { ...fields, 'content-length': 0, 'cache-control': 'no-store' }).end();
}

/** One HTTP/2 connection to a peer (the app over h2c, or a peer sidecar over mTLS), re-opened when it goes away. */
export interface H2Client {
  /** Opens a stream; rejects with a SidecarError when no connection can be had. */
  request(headers: OutgoingHttpHeaders): Promise<ClientHttp2Stream>;
  /** Closes the connection (in-flight streams finish); the next request opens a new one. */
  close(): Promise<void>;
  /** Whether a connection is open now (tests, metrics). */
  readonly connected: boolean;
}

/** Session limits of every HTTP/2 connection the sidecar opens. */
const CLIENT_SESSION = {
  maxSessionMemory: 32,
  maxHeaderListPairs: 256,
  settings: { enablePush: false, maxHeaderListSize: 65_536 },
} as const;

/**
 * An {@link H2Client} over `open()`: one multiplexed session at a time, shared by every request,
 * opened on first use and again after it closes, errs or receives GOAWAY. A failed open is
 * `ERR_SIDECAR_UPSTREAM_UNAVAILABLE` (or the SidecarError the opener threw, e.g. a peer identity
 * mismatch).
 */
export function createH2Client(open: () => Promise<ClientHttp2Session>): H2Client {
  let session: Promise<ClientHttp2Session> | undefined;
  let live: ClientHttp2Session | undefined;
  const get = (): Promise<ClientHttp2Session> => {
    if (session) return session;
    const p = open().then((s) => {
      const drop = () => {
        if (session === p) session = undefined;
        if (live === s) live = undefined;
      };
      s.once('close', drop);
      s.once('goaway', drop);
      s.on('error', drop);
      live = s;
      return s;
    });
    session = p;
    p.catch(() => {
      if (session === p) session = undefined;
    });
    return p;
  };
  return {
    async request(headers) {
      // A session that started closing (GOAWAY on its way) takes no new stream: one fresh try.
      for (let attempt = 0; ; attempt++) {
        let s: ClientHttp2Session;
        try {
          s = await get();
        } catch (err) {
          throw err instanceof SidecarError
            ? err
            : new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 'the service is unavailable', {
                cause: err,
              });
        }
        try {
          return s.request(headers);
        } catch (err) {
          if (live === s) {
            session = undefined;
            live = undefined;
          }
          if (attempt === 0 && (s.closed || s.destroyed)) continue;
          throw new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 'the service is unavailable', {
            cause: err,
          });
        }
      }
    },
    async close() {
      const p = session;
      session = undefined;
      const s = await p?.catch(() => undefined);
      if (!s || s.closed || s.destroyed) return;
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => s.destroy(), 5_000);
        s.close(() => {
          clearTimeout(t);
          resolve();
        });
      });
    },
    get connected() {
      return live !== undefined && !live.closed && !live.destroyed;
    },
  };
}

/**
 * Opens an h2c (prior knowledge) session to `http://host:port`, resolved once the connection is up.
 * Its socket has Nagle's algorithm off, as every other sidecar connection: a call's frames go out
 * in several writes (HEADERS, DATA, trailers), and with Nagle on, a write waits for the ACK of
 * the one before, which the app's kernel delays up to 40 ms.
 */
export function openH2c(origin: string, timeoutMs: number): Promise<ClientHttp2Session> {
  const { hostname, port } = new URL(origin);
  return settleSession(
    h2connect(origin, {
      ...CLIENT_SESSION,
      createConnection: () =>
        netConnect({ host: hostname.replace(/^\[|\]$/g, ''), port: Number(port) || 80, noDelay: true }),
    }),
    timeoutMs,
  );
}

/** HTTP/2 over a socket already connected and verified (the peer sidecar's mTLS connection). */
export function openH2OverSocket(
  origin: string,
  socket: TLSSocket,
  timeoutMs: number,
): Promise<ClientHttp2Session> {
  return settleSession(h2connect(origin, { ...CLIENT_SESSION, createConnection: () => socket }), timeoutMs);
}

function settleSession(s: ClientHttp2Session, timeoutMs: number): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      s.destroy();
      reject(new SidecarError('ERR_SIDECAR_UPSTREAM_TIMEOUT', 'HTTP/2 connection timed out'));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      http2InUse();
      s.off('error', fail);
      // A session error after this point drops the session (createH2Client); streams see their own.
      s.on('error', () => {});
      resolve(s);
    });
    const fail = (err: Error) => {
      clearTimeout(t);
      reject(err);
    };
    s.once('error', fail);
  });
}

/**
 * The request headers of an HTTP/2 upstream stream: pseudo-headers, then the scanned (stripped)
 * flat list folded into an object (names lower-cased, repeats as arrays). `te: trailers` is kept
 * for gRPC, which requires it.
 */
export function h2RequestHeaders(
  method: string,
  path: string,
  authority: string,
  scheme: 'http' | 'https',
  list: readonly string[],
  grpc: boolean,
): OutgoingHttpHeaders {
  const h: Record<string, string | string[]> = {
    ':method': method,
    ':path': path,
    ':authority': authority,
    ':scheme': scheme,
  };
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i]!.toLowerCase();
    // The authority travels as :authority; HTTP/2 needs no Host beside it.
    if (name === 'host') continue;
    const value = list[i + 1]!;
    const prev = h[name];
    if (prev === undefined) h[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else h[name] = [prev, value];
  }
  if (grpc) h.te = 'trailers';
  return h;
}

/** How an exchange relayed by {@link relayH2} ended. */
export interface RelayOutcome {
  /** The HTTP status the client got. */
  readonly status: number;
  /** The gRPC status the client got (trailers, or the head of a trailers-only answer). */
  readonly grpcStatus?: string;
}

/**
 * Relays one exchange over an HTTP/2 upstream stream: the request body streams in (`pipe`:
 * back-pressure both ways, the client's flow-control window follows the upstream's), the
 * response head, body and trailers stream out (hop-by-hop fields dropped). A gRPC trailers-only
 * answer stays trailers-only for an HTTP/2 client. `deadlineMs` (from `grpc-timeout`) cancels the
 * upstream stream when it runs out: before the answer, the call is refused with
 * `ERR_SIDECAR_UPSTREAM_TIMEOUT` (gRPC DEADLINE_EXCEEDED); after, the client gets
 * `grpc-status: 4` trailers. A client gone cancels the upstream stream (RST_STREAM CANCEL); an
 * upstream reset before the answer is `ERR_SIDECAR_UPSTREAM_UNAVAILABLE`, after it a reset (or
 * cut) of the client's stream. Without a deadline, `headersTimeoutMs` bounds the wait for the
 * answer's head (`ERR_SIDECAR_UPSTREAM_TIMEOUT`).
 */
export function relayH2(
  req: InboundRequest,
  res: InboundResponse,
  upstream: ClientHttp2Stream,
  deadlineMs: number | undefined,
  headersTimeoutMs?: number,
): Promise<RelayOutcome> {
  const grpc = isGrpcRequest(req.headers);
  const h2 = isH2(req);
  const body = bodyOf(req);
  // The client went away while the layers ran or the upstream stream was being opened: its
  // `close` has passed, and the app's stream is cancelled here rather than left open.
  if (h2 && isGone(clientStream(res))) {
    if (!upstream.destroyed) upstream.close(NGHTTP2_CANCEL);
    return Promise.reject(new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 'the client went away'));
  }
  return new Promise<RelayOutcome>((resolve, reject) => {
    let status = 0;
    let grpcStatus: string | undefined;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const settle = (err?: unknown) => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      if (headersTimer) clearTimeout(headersTimer);
      if (err) reject(err);
      else resolve(grpcStatus === undefined ? { status } : { status, grpcStatus });
    };
    const cutClient = (code: number) => {
      if (h2) {
        const stream = clientStream(res);
        if (!stream.destroyed) stream.close(code === NGHTTP2_NO_ERROR ? NGHTTP2_CANCEL : code);
      } else res.destroy();
    };
    // Without a deadline of its own (not gRPC), an answer that does not start in time is a 504.
    const headersTimer =
      headersTimeoutMs === undefined || deadlineMs !== undefined
        ? undefined
        : setTimeout(() => {
            if (settled || status !== 0) return;
            if (!upstream.destroyed) upstream.close(NGHTTP2_CANCEL);
            settle(new SidecarError('ERR_SIDECAR_UPSTREAM_TIMEOUT', 'the service did not answer in time'));
          }, headersTimeoutMs);
    if (deadlineMs !== undefined)
      timer = setTimeout(() => {
        if (settled) return;
        if (!upstream.destroyed) upstream.close(NGHTTP2_CANCEL);
        if (status === 0)
          return settle(
            new SidecarError('ERR_SIDECAR_UPSTREAM_TIMEOUT', 'grpc-timeout expired before an answer'),
          );
        upstream.unpipe(sinkOf(res));
        if (!grpc) return cutClient(NGHTTP2_CANCEL);
        grpcStatus = String(GRPC.DEADLINE_EXCEEDED);
        res.addTrailers({ 'grpc-status': grpcStatus, 'grpc-message': 'deadline exceeded at the sidecar' });
        res.end();
      }, deadlineMs);
    res.once('close', () => {
      if (!upstream.destroyed && !upstream.closed) upstream.close(NGHTTP2_CANCEL);
      settle(
        status === 0
          ? new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 'the client went away')
          : undefined,
      );
    });
    // A client's RST_STREAM ends the writable side too: a `finish` before any answer is the client gone.
    res.once('finish', () =>
      settle(
        status === 0
          ? new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 'the client went away')
          : undefined,
      ),
    );
    body.once('error', () => {
      if (!upstream.destroyed) upstream.close(NGHTTP2_CANCEL);
    });
    upstream.on('error', () => {
      // Reported through `close` (rstCode) below.
    });
    upstream.once('response', (headers: H2Headers, flags: number) => {
      if (headersTimer) clearTimeout(headersTimer);
      status = Number(headers[':status']) || 502;
      const list = responseHeaderList(headers as Record<string, string | string[] | undefined>);
      if (headers['grpc-status'] !== undefined) grpcStatus = String(headers['grpc-status']);
      if (flags & NGHTTP2_FLAG_END_STREAM) {
        // Trailers-only: one HEADERS frame with END_STREAM for an HTTP/2 client.
        if (h2) {
          const stream = clientStream(res);
          const fields: Record<string, string | string[]> = { ':status': String(status) };
          foldHeaderList(list, fields);
          if (!isGone(stream)) stream.respond(fields, { endStream: true });
          return;
        }
        res.writeHead(status, list).end();
        return;
      }
      res.writeHead(status, list);
      upstream.pipe(sinkOf(res));
    });
    upstream.once('trailers', (trailers: H2Headers) => {
      if (trailers['grpc-status'] !== undefined) grpcStatus = String(trailers['grpc-status']);
      const list = responseHeaderList(trailers as Record<string, string | string[] | undefined>);
      const t: Record<string, string> = {};
      for (let i = 0; i < list.length; i += 2) t[list[i]!] = list[i + 1]!;
      res.addTrailers(t);
    });
    upstream.once('close', () => {
      const code = upstream.rstCode ?? NGHTTP2_NO_ERROR;
      if (status === 0)
        return settle(
          new SidecarError(
            'ERR_SIDECAR_UPSTREAM_UNAVAILABLE',
            code === NGHTTP2_NO_ERROR ? 'the service closed the stream' : 'the service reset the stream',
          ),
        );
      if (code !== NGHTTP2_NO_ERROR && !res.writableEnded) cutClient(code);
    });
    body.pipe(upstream);
  });
}
