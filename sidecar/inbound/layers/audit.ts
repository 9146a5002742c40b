import type { AuditEvent, AuditSink } from '../../../core/index.ts';
import type { InboundContext } from '../context.ts';
import type { TunnelFacts } from '../../websocket/tunnels.ts';

const MAX_ACTION = 4096;

/** An audit event's `action`: the method and request target, the target cut to fit the event's bound. */
export function auditAction(method: string, target: string): string {
  return `${method} ${target.length > MAX_ACTION - 16 ? `${target.slice(0, MAX_ACTION - 17)}…` : target}`;
}

/** What {@link auditRecorder} gives the handler. */
export interface AuditRecorder {
  /**
   * `failMode: closed`, before forwarding an allowed request: the `authz.decision` event (no
   * status yet), resolved once it is durable; rejects when the sink cannot keep it, and the request
   * must then not be forwarded.
   */
  beforeForward(ctx: InboundContext): Promise<void>;
  /**
   * Once the request is answered: its `authz.decision` event with the final status and latency —
   * or, when the decision was already recorded before forwarding, an `authz.response` event
   * carrying them (decision 0029). Returns the event, for the access log.
   */
  done(ctx: InboundContext, status: number): AuditEvent;
  /**
   * When a relayed WebSocket ends: an `authz.response` event for its request (status 101, latency
   * from the request to the close) with who closed it, the bytes each way and its duration.
   */
  tunnelClosed(ctx: InboundContext, facts: TunnelFacts): void;
}

/**
 * Layer 7, audit: one `authz.decision` event per inbound request, refused or forwarded, with the
 * decision, reason code, matched rule, policy hash, final status, latency, jti and trace id. In
 * `failMode: closed` a forwarded request has its decision on record before the app sees it, and
 * its status and latency in a later `authz.response` event (decision 0029).
 */
export function auditRecorder(
  sink: AuditSink,
  service: string,
  now: () => number,
  time: () => number,
  count: (decision: 'allow' | 'deny', reason: string, rule: string | undefined) => void = () => {},
): AuditRecorder {
  // Requests finishing in the same millisecond share one ISO string (one Date and format less each).
  let lastMs = NaN;
  let lastIso = '';
  const isoTime = (ms: number) =>
    ms === lastMs ? lastIso : ((lastMs = ms), (lastIso = new Date(ms).toISOString()));
  const build = (ctx: InboundContext, type: AuditEvent['type'], status: number | undefined): AuditEvent => {
    const d = ctx.decision;
    const event: AuditEvent = {
      type,
      time: isoTime(time()),
      source: service,
      target: service,
      action: auditAction(ctx.req.method ?? '', ctx.req.url ?? ''),
      // A request the sidecar itself refused after the policy allowed it (over its caller's
      // share, a body that stopped) is a deny; an upstream failure (5xx) stays the policy's allow.
      decision: d && d.allow && !(ctx.error && (status === undefined || status < 500)) ? 'allow' : 'deny',
      enforced: d && !d.allow ? ctx.enforced : true,
      reason: ctx.error?.code ?? d?.reason ?? 'allowed',
    };
    if (status !== undefined) {
      event.status = status;
      event.latencyMs = Math.max(0, Math.round((now() - ctx.startedAt) * 1000) / 1000);
    }
    event.traceId = ctx.traceId;
    if (ctx.peer) event.subject = ctx.peer.spiffeId.uri;
    if (d) {
      event.rule = d.rule;
      event.policyHash = d.policyHash;
    }
    if (ctx.verified) event.jti = ctx.verified.claims.jti.slice(0, 256);
    if (ctx.attributes) event.attributes = ctx.attributes;
    return event;
  };
  return {
    beforeForward(ctx) {
      const event = build(ctx, 'authz.decision', undefined);
      return sink.record(event).then(() => {
        ctx.decisionRecorded = true;
        count(event.decision!, event.reason!, event.rule);
      });
    },
    done(ctx, status) {
      if (ctx.decisionRecorded) {
        const response = build(ctx, 'authz.response', status);
        sink.emit(response);
        return response;
      }
      const event = build(ctx, 'authz.decision', status);
      sink.emit(event);
      count(event.decision!, event.reason!, event.rule);
      return event;
    },
    tunnelClosed(ctx, facts) {
      const event = build(ctx, 'authz.response', 101);
      // A day is the most an event's latency may say (`websocket.maxLifetime` is at most 24h, plus the handshake).
      event.latencyMs = Math.min(event.latencyMs!, 86_400_000);
      event.attributes = {
        ...ctx.attributes,
        upgrade: 'websocket',
        closedBy: facts.closedBy,
        bytesFromClient: facts.bytesFromClient,
        bytesToClient: facts.bytesToClient,
        durationMs: facts.durationMs,
        ...(facts.closeCode !== undefined ? { closeCode: facts.closeCode } : {}),
      };
      // Not while the sink refuses events (failMode closed, spool full): the tunnel is gone either way.
      if (sink.accepting()) sink.emit(event);
    },
  };
}
