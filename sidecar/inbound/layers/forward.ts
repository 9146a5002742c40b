import type { Dispatcher } from 'undici';
import { SpanKind, SpanStatusCode, formatTraceparent, startSpan } from '../../../core/index.ts';
import type { Tracer } from '../../../core/index.ts';
import { SidecarError } from '../../errors.ts';
import { responseHeaderList } from '../headers.ts';
import type { InboundContext } from '../context.ts';

/** Where and how the inbound side forwards to the local app. */
export interface UpstreamOptions {
  /** Keep-alive pool to the app (undici Pool on `http://127.0.0.1:<port>`). */
  readonly pool: Dispatcher;
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
 * bodies through the keep-alive pool. Resolves with the status the client got; an upstream that
 * fails before answering becomes `ERR_SIDECAR_UPSTREAM_UNAVAILABLE` (502) or `…_TIMEOUT` (504).
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
  const hasBody =
    req.headers['transfer-encoding'] !== undefined ||
    (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
  return new Promise<number>((resolve, reject) => {
    let status = 0;
    up.pool.stream(
      {
        method: req.method as Dispatcher.HttpMethod,
        path: ctx.target!.target,
        headers,
        body: hasBody ? req : null,
        // Timeouts are the pool's (set once in start.ts): no per-request timer options on the hot path.
      },
      ({ statusCode, headers: h }) => {
        status = statusCode;
        res.writeHead(statusCode, responseHeaderList(h as Record<string, string | string[] | undefined>));
        return res;
      },
      (err) => {
        done(status, !!err || status >= 500);
        if (!err) return resolve(status);
        if (status !== 0) {
          // Headers are gone already: the only honest signal left is a cut connection.
          res.destroy();
          return resolve(status);
        }
        reject(upstreamError(err));
      },
    );
  });
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
