import { startSpan } from '../../../core/index.ts';
import type { Tracer } from '../../../core/index.ts';
import { SidecarError } from '../../errors.ts';
import type { Authorizer } from '../../policy/compile.ts';
import type { InboundLayer } from '../context.ts';

/**
 * Layer 5, authorize: the compiled policy decides on (peer SPIFFE ID, method, raw path). A deny
 * refuses with `ERR_SIDECAR_POLICY_DENIED` — unless the policy is in `mode: audit`, where the
 * request goes on and the event records `enforced: false`. With a tracer, the decision is a
 * `sidecar.authorize` span (rule, decision) under the request's `sidecar.inbound` span.
 */
export function authorizeLayer(policy: () => Authorizer, tracer?: Tracer): InboundLayer {
  return (ctx) => {
    // An unsampled request gets no child spans: nothing would be exported.
    const span =
      tracer && ctx.span?.isRecording() ? startSpan(tracer, 'sidecar.authorize', ctx.span) : undefined;
    const d = policy().decide(ctx.peer!.spiffeId.uri, ctx.req.method!, ctx.target!.path);
    ctx.decision = d;
    span
      ?.setAttributes({
        'portcullis.rule': d.rule,
        'portcullis.decision': d.allow ? 'allow' : 'deny',
        'portcullis.policy_mode': d.mode,
        'portcullis.policy_hash': d.policyHash,
      })
      .end();
    if (d.allow) return;
    if (d.mode === 'audit') {
      ctx.enforced = false;
      return;
    }
    throw new SidecarError('ERR_SIDECAR_POLICY_DENIED', `denied by rule ${d.rule}`);
  };
}
