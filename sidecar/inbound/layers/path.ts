import { scanRequestHeaders } from '../headers.ts';
import { checkRequestTarget } from '../target.ts';
import type { InboundLayer } from '../context.ts';

/**
 * Layer 4, path (and framing): the request target is unambiguous origin-form
 * (`ERR_SIDECAR_PATH_AMBIGUOUS`) and the headers carry no smuggling shape
 * (`ERR_SIDECAR_REQUEST_MALFORMED`); the headers the app may see are computed here once.
 */
export function pathLayer(): InboundLayer {
  return (ctx) => {
    ctx.target = checkRequestTarget(ctx.req.method!, ctx.req.url!);
    ctx.headers = scanRequestHeaders(ctx.req.rawHeaders);
  };
}
