import { SpanKind, SpanStatusCode, isBodyTimedOut, parseTraceparent, startSpan } from '../../core/index.ts';
import type { AccessLine, AuditSink, Logger, Tracer } from '../../core/index.ts';
import { SidecarError, statusForCode } from '../errors.ts';
import type { InboundContext, InboundLayer, PendingUpgrade } from './context.ts';
import type { TunnelFacts } from '../websocket/tunnels.ts';
import { auditRecorder } from './layers/audit.ts';
import { forward } from './layers/forward.ts';
import type { UpstreamOptions } from './layers/forward.ts';
import type { IdSource } from './trace.ts';
import { answerGrpc } from '../h2/relay.ts';
import { grpcStatusFor, isGrpcRequest } from '../h2/grpc.ts';
import { H2Request, H2Response } from '../h2/exchange.ts';
import type { InboundRequest, InboundResponse } from '../h2/exchange.ts';

/** Dependencies of {@link createInboundHandler}. */
export interface InboundHandlerDeps {
  readonly service: string;
  /** The ordered checks: peer → token → binding → path → authorize. */
  readonly layers: readonly InboundLayer[];
  readonly upstream: UpstreamOptions;
  readonly sink: AuditSink;
  readonly ids: IdSource;
  /** Monotonic ms, for latency. */
  readonly now: () => number;
  /** Wall-clock ms, for event times. */
  readonly clock: () => number;
  readonly logger: Logger;
  /** Counts each outcome for metrics. */
  readonly count?: (decision: 'allow' | 'deny', reason: string, rule: string | undefined) => void;
  /** With a tracer, each request is a `sidecar.inbound` span, child of the caller's `traceparent`. */
  readonly tracer?: Tracer;
  /**
   * `failMode: closed`: an allowed request's `authz.decision` event must be durable before the
   * request is forwarded (its status follows in an `authz.response` event; decision 0029).
   */
  readonly recordBeforeForward?: boolean;
  /** Opt-in access log (core/access-log.ts); one line per answered request. */
  readonly accessLog?: (line: AccessLine) => void;
  /**
   * Relays an allowed WebSocket handshake (inbound/upgrade.ts) instead of forwarding it; resolves
   * with the status the client got (101, or the app's answer), and calls `closed` when it ends.
   */
  readonly upgrade?: (ctx: InboundContext, closed: (facts: TunnelFacts) => void) => Promise<number>;
}

/** The inbound handler: node:http's request listener, and the entry of WebSocket handshakes (a third argument). */
export type InboundHandler = (req: InboundRequest, res: InboundResponse, upgrade?: PendingUpgrade) => void;

/**
 * The inbound request handler: runs the layers in order (synchronously while they are), forwards
 * what passes, and records every request — refused or not — with one audit event (two for a
 * forwarded request in `failMode: closed`: the decision, durable before forwarding, and the response). Refusals get
 * the status of their code (errors.ts, the one mapping), a JSON body `{error, message}` and, for
 * 401, `WWW-Authenticate: Bearer error="invalid_token"`; a gRPC caller (`content-type:
 * application/grpc*`) gets HTTP 200 with `grpc-status` and `grpc-message` (code and reason, the
 * rule for a policy deny) instead, recorded with a `grpcStatus` attribute. HTTP/1.1 requests and
 * HTTP/2 streams take the same path. While the audit sink is not accepting,
 * every request is refused with 503 `ERR_SIDECAR_AUDIT_UNAVAILABLE`.
 */
export function createInboundHandler(deps: InboundHandlerDeps): InboundHandler {
  const audit = auditRecorder(deps.sink, deps.service, deps.now, deps.clock, deps.count);
  const { layers, tracer } = deps;
  const record = (ctx: InboundContext, status: number) => {
    // Answered, refused or cut: the request no longer holds its caller's share of the app.
    if (ctx.releaseSlot) {
      ctx.releaseSlot();
      ctx.releaseSlot = undefined;
    }
    const event = audit.done(ctx, status);
    // The access line says what the audit event says: one decision, computed once.
    deps.accessLog?.({
      side: 'inbound',
      method: ctx.req.method ?? '',
      target: ctx.req.url ?? '',
      status,
      decision: event.decision!,
      reason: event.reason!,
      ...(event.rule ? { rule: event.rule } : {}),
      ...(event.subject ? { caller: event.subject } : {}),
      latencyMs: event.latencyMs ?? 0,
      traceId: ctx.traceId,
    });
    const span = ctx.span;
    if (span?.isRecording()) {
      const d = ctx.decision;
      span.setAttributes({
        'http.response.status_code': status,
        'portcullis.decision': d?.allow ? 'allow' : 'deny',
        'portcullis.reason': ctx.error?.code ?? d?.reason ?? 'allowed',
      });
      if (ctx.peer) span.setAttribute('portcullis.caller', ctx.peer.spiffeId.uri);
      if (d) span.setAttribute('portcullis.rule', d.rule);
      if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR, message: ctx.error?.code ?? '' });
      span.end();
    } else span?.end();
  };

  const refuse = (ctx: InboundContext, err: unknown) => {
    // A body that stopped was answered 408 by the listener's budgets; the upstream failure that
    // followed (its body cut) is that, not an unavailable app.
    const e = (ctx.req instanceof H2Request ? ctx.req.bodyTimedOut : isBodyTimedOut(ctx.req))
      ? new SidecarError('ERR_SIDECAR_BODY_TIMEOUT', 'request body timed out', { cause: err })
      : err instanceof SidecarError
        ? err
        : new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 'internal error', { cause: err });
    if (!(err instanceof SidecarError) && e.code !== 'ERR_SIDECAR_BODY_TIMEOUT')
      deps.logger.error({ err: (err as Error)?.message, traceId: ctx.traceId }, 'unexpected inbound failure');
    ctx.error = e;
    // What the client got: an answer already under way keeps its status.
    const status = ctx.res.headersSent ? ctx.res.statusCode : statusForCode(e.code);
    // A client gone gets no answer; it is recorded with the refusal's own status.
    const gone = ctx.res instanceof H2Response && ctx.res.gone;
    if (!ctx.res.headersSent && !gone && isGrpcRequest(ctx.req.headers)) {
      // A gRPC client reads errors from grpc-status, not from an HTTP status or a JSON body.
      const grpcStatus = grpcStatusFor(e.code, status);
      answerGrpc(ctx.req, ctx.res, grpcStatus, `${e.code}: ${e.message}`);
      ctx.attributes = { ...ctx.attributes, grpcStatus: String(grpcStatus) };
      return record(ctx, 200);
    }
    if (!ctx.res.headersSent) {
      const body = JSON.stringify({ error: e.code, message: e.message });
      const headers: Record<string, string | number> = {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        'cache-control': 'no-store',
      };
      if (status === 401) headers['www-authenticate'] = 'Bearer error="invalid_token"';
      if (ctx.retryAfterSeconds !== undefined) headers['retry-after'] = ctx.retryAfterSeconds;
      // HTTP/2 has no Connection header; a malformed stream does not end its connection.
      if (e.code === 'ERR_SIDECAR_REQUEST_MALFORMED' && ctx.req.httpVersionMajor !== 2)
        headers.connection = 'close';
      ctx.res.writeHead(status, headers).end(body);
    }
    record(ctx, status);
  };

  const forwardNow = (ctx: InboundContext) => {
    (ctx.upgrade && deps.upgrade
      ? deps.upgrade(ctx, (facts) => audit.tunnelClosed(ctx, facts))
      : forward(ctx, deps.upstream)
    ).then(
      (status) => record(ctx, status),
      (err) => refuse(ctx, err),
    );
  };
  const unrecorded = (err: unknown) =>
    new SidecarError(
      'ERR_SIDECAR_AUDIT_UNAVAILABLE',
      'audit log cannot record the request; not forwarding it',
      {
        cause: err,
      },
    );
  // In failMode closed nothing reaches the app before its decision is on disk (one group-committed
  // fsync shared by the requests of the moment); a crash after the app answers still leaves it.
  const pass = deps.recordBeforeForward
    ? (ctx: InboundContext) => {
        audit.beforeForward(ctx).then(
          () => forwardNow(ctx),
          (err) => refuse(ctx, unrecorded(err)),
        );
      }
    : forwardNow;

  const run = (ctx: InboundContext, from: number): void => {
    for (let i = from; i < layers.length; i++) {
      let r: void | Promise<void>;
      try {
        r = layers[i]!(ctx);
      } catch (err) {
        return refuse(ctx, err);
      }
      if (r) {
        r.then(
          () => run(ctx, i + 1),
          (err) => refuse(ctx, err),
        );
        return;
      }
    }
    pass(ctx);
  };

  const traced = (req: InboundRequest, res: InboundResponse): InboundContext => {
    const span = startSpan(
      tracer!,
      'sidecar.inbound',
      parseTraceparent(req.headers.traceparent),
      SpanKind.SERVER,
      { 'portcullis.service': deps.service, 'http.request.method': req.method ?? '' },
    );
    const sc = span.spanContext();
    return { req, res, startedAt: deps.now(), traceId: sc.traceId, spanId: sc.spanId, span, enforced: true };
  };

  return (req, res, upgrade) => {
    if (tracer) return start(traced(req, res), upgrade);
    const parent = parseTraceparent(req.headers.traceparent);
    const ctx: InboundContext = {
      req,
      res,
      startedAt: deps.now(),
      traceId: parent?.traceId ?? deps.ids.traceId(),
      spanId: deps.ids.spanId(),
      enforced: true,
    };
    start(ctx, upgrade);
  };

  function start(ctx: InboundContext, upgrade: PendingUpgrade | undefined): void {
    if (upgrade) ctx.upgrade = upgrade;
    if (!deps.sink.accepting()) {
      return refuse(
        ctx,
        new SidecarError(
          'ERR_SIDECAR_AUDIT_UNAVAILABLE',
          'audit log unavailable; refusing unrecorded requests',
        ),
      );
    }
    run(ctx, 0);
  }
}
