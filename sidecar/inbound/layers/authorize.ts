import { SidecarError } from '../../errors.ts';
import type { Authorizer } from '../../policy/compile.ts';
import type { InboundLayer } from '../context.ts';

/**
 * Layer 5, authorize: the compiled policy decides on (peer SPIFFE ID, method, raw path). A deny
 * refuses with `ERR_SIDECAR_POLICY_DENIED` — unless the policy is in `mode: audit`, where the
 * request goes on and the event records `enforced: false`.
 */
export function authorizeLayer(policy: () => Authorizer): InboundLayer {
  return (ctx) => {
    const d = policy().decide(ctx.peer!.spiffeId.uri, ctx.req.method!, ctx.target!.path);
    ctx.decision = d;
    if (d.allow) return;
    if (d.mode === 'audit') {
      ctx.enforced = false;
      return;
    }
    throw new SidecarError('ERR_SIDECAR_POLICY_DENIED', `denied by rule ${d.rule}`);
  };
}
