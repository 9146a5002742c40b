import { createServer as createH2Server, constants } from 'node:http2';
import type {
  Http2Server,
  Http2Session,
  Http2Stream,
  IncomingHttpHeaders,
  ServerHttp2Session,
  ServerHttp2Stream,
} from 'node:http2';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Server as NetServer, Socket } from 'node:net';
import type { ConnectionBudgets } from '../../core/index.ts';
import { H2Request, H2Response, markBodyTimedOut } from '../h2/exchange.ts';
import { isGrpcRequest } from '../h2/grpc.ts';
import { http2InUse } from '../heap.ts';
import { auditAction } from './layers/audit.ts';

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR, NGHTTP2_STREAM_STATE_OPEN } = constants;

/**
 * The HTTP/2 limits of every sidecar listener (decision 0081). Each bounds one abuse:
 * - `maxConcurrentStreams` 100: streams open at once per connection (more are refused with
 *   RST_STREAM REFUSED_STREAM; `maxSessionRejectedStreams` of those close the connection);
 * - `streamResetBurst`/`streamResetRate` 200/50 per s: RST_STREAM from the client (rapid reset,
 *   CVE-2023-44487) past this rate is answered with GOAWAY and the connection closes;
 * - `maxHeaderListSize` 16 KiB and `maxHeaderListPairs` 128: a header list (HEADERS plus its
 *   CONTINUATION frames, CVE-2024-27316) past either is refused; nghttp2 also stops a header block
 *   spread over too many CONTINUATION frames;
 * - `headerTableSize` 4096: the HPACK dynamic table the client may make the server keep;
 * - `maxSettings` 32, `maxOutstandingSettings` 10, `maxOutstandingPings` 10: SETTINGS and PING
 *   floods; `maxSessionInvalidFrames` 100: a stream of bad frames;
 * - `maxSessionMemory` 10 MB: everything a session buffers (a client that never opens its
 *   flow-control window cannot make the sidecar hold more).
 */
export const H2_LIMITS = Object.freeze({
  maxSessionMemory: 10,
  maxHeaderListPairs: 128,
  maxSettings: 32,
  maxOutstandingSettings: 10,
  maxOutstandingPings: 10,
  maxSessionInvalidFrames: 100,
  maxSessionRejectedStreams: 100,
  streamResetBurst: 200,
  streamResetRate: 50,
  settings: Object.freeze({
    maxConcurrentStreams: 100,
    maxHeaderListSize: 16_384,
    headerTableSize: 4096,
    enablePush: false,
    enableConnectProtocol: false,
  }),
});

/** The HTTP/2 side of a listener, for its owner. */
export interface H2Side {
  readonly server: Http2Server;
  /** Streams open now, over every open session. */
  readonly streams: number;
  /** Takes over a connection (TLS after ALPN `h2`, or plain after the h2c preface). */
  accept(socket: Socket): void;
  /** For `applyConnectionBudgets`' drain: asks a busy session to close (GOAWAY) and says whether it was busy. */
  inFlight(socket: Socket): boolean;
}

/**
 * How a listener's HTTP/2 streams reach its handler: as node:http2's compatibility request and
 * response (`compat`: the outbound side, whose handler also drives undici's `stream()`), or as an
 * {@link H2Request} and {@link H2Response} over the core stream API (`streams`: the inbound side,
 * decision 0101), with `onRefused` told of what the listener answers itself.
 */
export type H2Serve =
  | { readonly compat: (req: IncomingMessage, res: ServerResponse) => void }
  | {
      readonly streams: (req: H2Request, res: H2Response) => void;
      readonly onRefused?: (what: string, status: number, reason?: string, action?: string) => void;
    };

const BODY_TIMED_OUT = JSON.stringify({
  error: 'ERR_SIDECAR_BODY_TIMEOUT',
  message: 'request body timed out',
});

/** The body of the 417 both listeners answer to an expectation other than `100-continue`. */
export const EXPECTATION_FAILED = JSON.stringify({
  error: 'ERR_SIDECAR_REQUEST_MALFORMED',
  message: 'only Expect: 100-continue is supported',
});

// Errors of a stream (a reset from the client, a protocol error) surface as its `close`; without
// a listener an `error` would be thrown.
const ignore = () => {};

/**
 * An HTTP/2 server for connections a listener hands over (`server.emit('connection', socket)`),
 * with {@link H2_LIMITS} and the connection budgets' HTTP/2 equivalents: a session with no open
 * stream for `keepAliveTimeout` is closed (GOAWAY); a stream whose answer has been stuck in the
 * client's flow-control window for `bodyTimeout` (nothing sent while bytes wait) is reset with
 * CANCEL, freeing what it holds. Each stream goes to `serve`'s handler (see {@link H2Serve}): the
 * same handler, hence the same layers, as HTTP/1.1 requests. On the `streams` side,
 * `Expect: 100-continue` is answered 100 at once (as node:http2's compatibility API does on the
 * `compat` side) and any other expectation 417 with its reason, recorded as over HTTP/1.1.
 */
export function createH2Side(serve: H2Serve, budgets: ConnectionBudgets): H2Side {
  const server = createH2Server({ ...H2_LIMITS, settings: { ...H2_LIMITS.settings } });
  const open = new Map<Http2Session, number>();
  const bySocket = new WeakMap<Socket, Http2Session>();
  // The socket being handed over: node:http2 emits `session` synchronously inside `connection`.
  let handing: Socket | undefined;
  server.on('session', (session: ServerHttp2Session) => {
    http2InUse();
    open.set(session, 0);
    if (handing) bySocket.set(handing, session);
    // Errors of a session (a protocol violation, a reset socket) end it; nothing to report further.
    session.on('error', ignore);
    session.setTimeout(budgets.keepAliveTimeout, () => {
      if ((open.get(session) ?? 0) === 0) session.close();
    });
    session.once('close', () => open.delete(session));
  });
  // Each request starts on the next turn of the event loop: a client's RST_STREAM for it that came
  // in the same read (rapid reset sends HEADERS and RST_STREAM back to back, hundreds per read) is
  // processed first, and a stream the client already cancelled costs no layer, token check or
  // audit event — it was never decided. Without this the sidecar ran the layers for ~700 cancelled
  // streams per 64 KiB read before the reset limit closed the connection, and other callers waited.
  const start =
    'streams' in serve
      ? (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, rawHeaders: string[]) => {
          if (stream.destroyed || stream.closed) return;
          const expect = headers.expect;
          if (expect !== undefined) {
            if (expect.toLowerCase() !== '100-continue') return expectationFailed(stream, headers, serve);
            stream.additionalHeaders({ ':status': 100 });
          }
          serve.streams(new H2Request(stream, headers, rawHeaders), new H2Response(stream));
        }
      : undefined;
  server.on(
    'stream',
    (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, rawHeaders: string[]) => {
      const session = stream.session!;
      open.set(session, (open.get(session) ?? 0) + 1);
      stream.on('error', ignore);
      stream.setTimeout(budgets.bodyTimeout, () => {
        if (stream.destroyed) return;
        // An answer waiting on the client's window.
        if (stream.writableLength > 0) return stream.close(NGHTTP2_CANCEL);
        // A request body that stopped, as over HTTP/1.1: the client's half still open and nothing
        // of it left unread. Not a gRPC stream: one with nothing to say is idle, not stalled, and
        // its grpc-timeout bounds it.
        if (
          start &&
          stream.state.state === NGHTTP2_STREAM_STATE_OPEN &&
          stream.readableLength === 0 &&
          !isGrpcRequest(headers)
        )
          bodyTimedOut(stream);
      });
      stream.once('close', () => {
        if (open.has(session)) open.set(session, (open.get(session) ?? 1) - 1);
      });
      if (start) setImmediate(start, stream, headers, rawHeaders);
    },
  );
  if ('compat' in serve)
    server.on('request', (req: IncomingMessage & { stream?: Http2Stream }, res: ServerResponse) => {
      setImmediate(() => {
        if (req.stream?.destroyed || req.stream?.closed) return;
        serve.compat(req, res);
      });
    });
  return {
    server,
    get streams() {
      let n = 0;
      for (const count of open.values()) n += count;
      return n;
    },
    accept(socket) {
      handing = socket;
      try {
        server.emit('connection', socket);
      } finally {
        handing = undefined;
      }
    },
    inFlight(socket) {
      const session = bySocket.get(socket);
      if (!session || session.closed || session.destroyed) return false;
      if ((open.get(session) ?? 0) === 0) return false;
      session.close();
      return true;
    },
  };
}

/**
 * Answers a stream whose request body stopped 408 `ERR_SIDECAR_BODY_TIMEOUT` (when no answer has
 * started) and closes it: the exchange in flight sees the stream close, gives up on the app and
 * is recorded as the 408 ({@link H2Request.bodyTimedOut}).
 */
function bodyTimedOut(stream: ServerHttp2Stream): void {
  markBodyTimedOut(stream);
  const close = () => {
    if (!stream.destroyed) stream.close(NGHTTP2_NO_ERROR);
  };
  if (stream.headersSent || stream.closed) return close();
  // RST_STREAM NO_ERROR once the answer is out (RFC 9113 §8.1): the client may stop sending.
  answerJson(stream, 408, BODY_TIMED_OUT, () => setImmediate(close));
}

/** The listener's own JSON answer on a stream; `then` once it is out. A HEAD stream is ended by its head. */
function answerJson(stream: ServerHttp2Stream, status: number, body: string, then?: () => void): void {
  stream.respond({
    ':status': status,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  if (!stream.writableEnded) stream.end(body, then);
  else then?.();
}

function expectationFailed(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, serve: H2Serve): void {
  answerJson(stream, 417, EXPECTATION_FAILED);
  if ('onRefused' in serve)
    serve.onRefused?.(
      'EXPECT',
      417,
      undefined,
      auditAction(headers[':method'] ?? '', headers[':path'] ?? ''),
    );
}

/**
 * Makes a TLS listener (node:https) speak HTTP/2 as well: connections that negotiated ALPN `h2`
 * go to `h2`, every other one to node:https' own HTTP/1.1 handling, unchanged. The listener must
 * offer `h2` in its ALPNProtocols.
 */
export function routeByAlpn(server: NetServer, h2: H2Side): void {
  const [http1] = server.listeners('secureConnection') as ((socket: Socket) => void)[];
  if (!http1) throw new TypeError('routeByAlpn: the listener has no HTTP/1.1 connection handler');
  server.removeListener('secureConnection', http1);
  server.prependListener('secureConnection', (socket: Socket & { alpnProtocol?: string | false }) => {
    if (socket.alpnProtocol === 'h2') h2.accept(socket);
    else http1.call(server, socket);
  });
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/**
 * Makes a plain listener (node:http, the outbound side) accept h2c with prior knowledge too
 * (RFC 9113 §3.3): the first bytes of each connection decide. A connection that starts with the
 * HTTP/2 preface goes to `h2`; any other goes, bytes intact, to node:http's own handling. One
 * that sends nothing decisive within `headersTimeoutMs` is closed.
 */
export function routeByPreface(server: NetServer, h2: H2Side, headersTimeoutMs: number): void {
  const [http1] = server.listeners('connection') as ((socket: Socket) => void)[];
  if (!http1) throw new TypeError('routeByPreface: the listener has no HTTP/1.1 connection handler');
  server.removeListener('connection', http1);
  server.prependListener('connection', (socket: Socket) => {
    let seen: Buffer = Buffer.alloc(0);
    // A connection that never says which protocol it speaks is closed as one that never sends
    // its headers would be.
    const silent = setTimeout(() => socket.destroy(), headersTimeoutMs);
    silent.unref();
    socket.once('close', () => clearTimeout(silent));
    // Until a protocol handler takes the socket, its errors (a reset) are this code's to absorb.
    const onError = () => socket.destroy();
    socket.on('error', onError);
    const onData = (chunk: Buffer) => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, PREFACE.length);
      const h2like = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
      // Undecided until the preface is complete or ruled out.
      if (h2like && seen.length < PREFACE.length) return;
      clearTimeout(silent);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.pause();
      socket.unshift(seen);
      if (h2like) return h2.accept(socket);
      http1.call(server, socket);
      socket.resume();
    };
    socket.on('data', onData);
  });
}
