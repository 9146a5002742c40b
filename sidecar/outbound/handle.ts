import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import {
  SpanKind,
  SpanStatusCode,
  describeClientError,
  endWithHttpError,
  formatTraceparent,
  parseTraceparent,
  startSpan,
} from '../../core/index.ts';
import type { AccessLine, Logger, Span, SpanContext, Tracer } from '../../core/index.ts';
import { SidecarError, statusForCode } from '../errors.ts';
import { scanH2RequestHeaders, scanRequestHeaders, responseHeaderList } from '../inbound/headers.ts';
import { grpcStatusFor, isGrpcRequest } from '../h2/grpc.ts';
import { answerGrpc, h2RequestHeaders, isH2, relayH2 } from '../h2/relay.ts';
import type { H2Client } from '../h2/relay.ts';
import type { IdSource } from '../inbound/trace.ts';
import type { ResolvedRoute, Route } from './route.ts';
import { resolveRoute } from './route.ts';
import type { TokenSource } from './token-source.ts';

/** Dependencies of {@link createOutboundHandler}. */
export interface OutboundHandlerDeps {
  readonly routes: ReadonlyMap<string, Route>;
  readonly tokens: TokenSource;
  /** The mTLS dispatcher to a route's peer sidecar (checks its SPIFFE ID on connect). */
  readonly dispatcher: (route: Route) => Dispatcher;
  readonly ids: IdSource;
  readonly headersTimeoutMs: number;
  readonly logger: Logger;
  /** With a tracer, each call is a `sidecar.outbound` span, child of the app's `traceparent`. */
  readonly tracer?: Tracer;
  /** The observer of a route's exchange durations in seconds (the upstream latency histogram). */
  readonly observe?: (route: string) => (seconds: number) => void;
  /** Monotonic ms, for the histogram. */
  readonly now?: () => number;
  /** Opt-in access log (core/access-log.ts); one line per request, refused or forwarded. */
  readonly accessLog?: (line: AccessLine) => void;
  /** The multiplexed HTTP/2 connection to a route's peer sidecar, for the app's HTTP/2 (h2c) calls. */
  readonly h2Peer?: (route: Route) => H2Client;
}

const LOOPBACK = /^(?:127\.\d+\.\d+\.\d+|::1|::ffff:127\.\d+\.\d+\.\d+)$/;

/**
 * The outbound request handler (route → token source → mTLS dispatcher): loopback callers only,
 * target mapped to a route, a token for the route's audience attached, the request forwarded
 * over mTLS to the peer sidecar with its headers cleaned (the app cannot set identity headers or
 * its own Authorization). Refusals answer with the status of their code and a short JSON body
 * (a gRPC caller: HTTP 200 with `grpc-status` and `grpc-message`). The app may speak HTTP/1.1 or
 * h2c (prior knowledge); its HTTP/2 calls are streams on one multiplexed mTLS HTTP/2 connection
 * per peer (`h2Peer`), with trailers relayed, the same token and peer checks.
 */
export function createOutboundHandler(
  deps: OutboundHandlerDeps,
): (req: IncomingMessage, res: ServerResponse) => void {
  const { tracer } = deps;
  const observers = new Map<string, (seconds: number) => void>();
  const observerOf = (route: string) => {
    let o = observers.get(route);
    if (!o && deps.observe) observers.set(route, (o = deps.observe(route)));
    return o;
  };
  // The refusal code of a response, for its access line.
  const refused = new WeakMap<ServerResponse, string>();
  const refuse = (res: ServerResponse, err: unknown, span?: Span) => {
    const e =
      err instanceof SidecarError
        ? err
        : new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 'peer unavailable', { cause: err });
    refused.set(res, e.code);
    span
      ?.setAttributes({ 'portcullis.reason': e.code, 'http.response.status_code': statusForCode(e.code) })
      .setStatus({ code: SpanStatusCode.ERROR, message: e.code })
      .end();
    if (res.headersSent) return void res.destroy();
    if (isGrpcRequest(res.req.headers))
      return answerGrpc(
        res.req,
        res,
        grpcStatusFor(e.code, statusForCode(e.code)),
        `${e.code}: ${e.message}`,
      );
    const body = JSON.stringify({ error: e.code, message: e.message });
    res
      .writeHead(statusForCode(e.code), {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
      })
      .end(body);
  };
  const accessLog = deps.accessLog;
  return (req, res) => {
    if (accessLog) {
      const startedAt = performance.now();
      res.once('close', () => {
        const reason = refused.get(res);
        accessLog({
          side: 'outbound',
          method: req.method ?? '',
          target: req.url ?? '',
          // A response cut before its head (client gone) logs as 499, as nginx does.
          status: res.headersSent ? res.statusCode : 499,
          reason: reason ?? (res.statusCode >= 500 ? 'upstream' : 'forwarded'),
          ...(resolved ? { peer: resolved.route.spiffeId } : {}),
          latencyMs: performance.now() - startedAt,
        });
      });
    }
    const h2 = isH2(req);
    let resolved: ResolvedRoute;
    let forwardHeaders: string[];
    let parent: SpanContext | undefined;
    try {
      if (!LOOPBACK.test(req.socket.remoteAddress ?? ''))
        throw new SidecarError(
          'ERR_SIDECAR_OUTBOUND_NOT_LOOPBACK',
          'the outbound proxy serves loopback callers only',
        );
      // Framing first: a request without Host (or with two) is malformed before it is unroutable.
      const scanned = h2 ? scanH2RequestHeaders(req.rawHeaders) : scanRequestHeaders(req.rawHeaders);
      const host = h2 ? (scanned as ReturnType<typeof scanH2RequestHeaders>).authority : req.headers.host;
      resolved = resolveRoute(req.method!, req.url!, host, deps.routes);
      forwardHeaders = scanned.forward;
      parent = parseTraceparent(scanned.traceparent);
    } catch (err) {
      return refuse(res, err);
    }
    const span = tracer
      ? startSpan(tracer, 'sidecar.outbound', parent, SpanKind.CLIENT, {
          'portcullis.route': resolved.route.name,
          'portcullis.audience': resolved.route.spiffeId,
          'http.request.method': req.method!,
        })
      : undefined;
    const traceId = span ? span.spanContext().traceId : (parent?.traceId ?? deps.ids.traceId());
    const outgoing = span ? formatTraceparent(span.spanContext()) : `00-${traceId}-${deps.ids.spanId()}-01`;
    deps.tokens.get(resolved.route.spiffeId, span ? outgoing : undefined).then(
      (token) => {
        if (h2 && deps.h2Peer) {
          const grpc = isGrpcRequest(req.headers);
          const h = h2RequestHeaders(
            req.method!,
            resolved.target,
            resolved.route.name,
            'https',
            forwardHeaders,
            grpc,
          );
          h.authorization = `Bearer ${token}`;
          h.traceparent = outgoing;
          const observe = observerOf(resolved.route.name);
          const sentAt = observe && deps.now ? deps.now() : 0;
          deps
            .h2Peer(resolved.route)
            .request(h)
            .then((stream) => relayH2(req, res, stream, undefined, grpc ? undefined : deps.headersTimeoutMs))
            .then(
              ({ status }) => {
                if (observe && deps.now) observe((deps.now() - sentAt) / 1000);
                span?.setAttribute('http.response.status_code', status);
                if (status >= 500) span?.setStatus({ code: SpanStatusCode.ERROR });
                span?.end();
              },
              (err) => refuse(res, err, span),
            );
          return;
        }
        const headers = forwardHeaders.slice();
        headers.push(
          'host',
          resolved.route.name,
          'authorization',
          `Bearer ${token}`,
          'traceparent',
          outgoing,
        );
        const observe = observerOf(resolved.route.name);
        const sentAt = observe && deps.now ? deps.now() : 0;
        const hasBody =
          req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0';
        let status = 0;
        deps.dispatcher(resolved.route).stream(
          {
            origin: `https://${resolved.route.address}`,
            method: req.method as Dispatcher.HttpMethod,
            path: resolved.target,
            headers,
            body: hasBody ? req : null,
            headersTimeout: deps.headersTimeoutMs,
          },
          ({ statusCode, headers: h }) => {
            status = statusCode;
            res.writeHead(statusCode, responseHeaderList(h as Record<string, string | string[] | undefined>));
            return res;
          },
          (err) => {
            if (observe && deps.now) observe((deps.now() - sentAt) / 1000);
            if (span && (!err || status !== 0)) {
              span.setAttribute('http.response.status_code', status);
              if (err || status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
              span.end();
            }
            if (!err) return;
            if (status !== 0) return void res.destroy();
            const code = (err as { code?: string }).code;
            if (err instanceof SidecarError) return refuse(res, err, span);
            if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT')
              return refuse(
                res,
                new SidecarError('ERR_SIDECAR_UPSTREAM_TIMEOUT', 'peer did not answer in time', {
                  cause: err,
                }),
                span,
              );
            deps.logger.warn(
              { route: resolved.route.name, err: err.message, traceId },
              'outbound call failed',
            );
            refuse(
              res,
              new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 'peer unavailable', { cause: err }),
              span,
            );
          },
        );
      },
      (err) => refuse(res, err, span),
    );
  };
}

/**
 * The outbound listener's `clientError` handler: what the HTTP parser refuses from the app gets
 * the sidecar's JSON error shape (`ERR_SIDECAR_REQUEST_MALFORMED`: 400, 408 or 431) rather than Node's
 * bare answer.
 */
export function refuseClientError(err: Error & { code?: string }, socket: Duplex): void {
  const answer = describeClientError(err);
  if (!answer) return void socket.destroy();
  const body = { error: 'ERR_SIDECAR_REQUEST_MALFORMED', message: answer.message };
  endWithHttpError(socket, answer.status, JSON.stringify(body));
}

/**
 * The outbound listener's `connect` handler: the app speaks plain HTTP to its sidecar, so a CONNECT
 * tunnel is refused with 400 `ERR_SIDECAR_PATH_AMBIGUOUS` (without a handler Node drops the socket
 * unanswered).
 */
export function refuseConnect(_req: IncomingMessage, socket: Duplex): void {
  const body = JSON.stringify({
    error: 'ERR_SIDECAR_PATH_AMBIGUOUS',
    message: 'CONNECT is not proxied: send http:// requests to the sidecar',
  });
  endWithHttpError(socket, statusForCode('ERR_SIDECAR_PATH_AMBIGUOUS'), body);
}
