import type { AuditEvent, AuditSink } from '../../../core/index.ts';
import type { InboundContext } from '../context.ts';

const MAX_ACTION = 4096;

/**
 * Layer 7, audit: one `authz.decision` event per inbound request, refused or forwarded, with the
 * decision, reason code, matched rule, policy hash, final status, latency, jti and trace id.
 */
export function auditRecorder(
  sink: AuditSink,
  service: string,
  now: () => number,
  time: () => number,
  count: (decision: 'allow' | 'deny', reason: string, rule: string | undefined) => void = () => {},
) {
  // Requests finishing in the same millisecond share one ISO string (one Date and format less each).
  let lastMs = NaN;
  let lastIso = '';
  const isoTime = (ms: number) =>
    ms === lastMs ? lastIso : ((lastMs = ms), (lastIso = new Date(ms).toISOString()));
  return (ctx: InboundContext, status: number): void => {
    const d = ctx.decision;
    const target = ctx.req.url ?? '';
    const event: AuditEvent = {
      type: 'authz.decision',
      time: isoTime(time()),
      source: service,
      target: service,
      action: `${ctx.req.method} ${target.length > MAX_ACTION - 16 ? `${target.slice(0, MAX_ACTION - 17)}…` : target}`,
      // A request the sidecar itself refused after the policy allowed it (over its caller's
      // share, a body that stopped) is a deny; an upstream failure (5xx) stays the policy's allow.
      decision: d && d.allow && !(ctx.error && status < 500) ? 'allow' : 'deny',
      enforced: d && !d.allow ? ctx.enforced : true,
      reason: ctx.error?.code ?? d?.reason ?? 'allowed',
      status,
      latencyMs: Math.max(0, Math.round((now() - ctx.startedAt) * 1000) / 1000),
      traceId: ctx.traceId,
    };
    if (ctx.peer) event.subject = ctx.peer.spiffeId.uri;
    if (d) {
      event.rule = d.rule;
      event.policyHash = d.policyHash;
    }
    if (ctx.verified) event.jti = ctx.verified.claims.jti.slice(0, 256);
    if (ctx.attributes) event.attributes = ctx.attributes;
    sink.emit(event);
    count(event.decision!, event.reason!, event.rule);
  };
}
