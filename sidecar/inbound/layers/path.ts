import { scanH2RequestHeaders, scanRequestHeaders } from '../headers.ts';
import { checkRequestTarget } from '../target.ts';
import type { InboundLayer } from '../context.ts';

/**
 * Layer 4, path (and framing): the request target is unambiguous origin-form
 * (`ERR_SIDECAR_PATH_AMBIGUOUS`) and the headers carry no smuggling shape
 * (`ERR_SIDECAR_REQUEST_MALFORMED`); the headers the app may see are computed here once. An
 * HTTP/2 stream is checked the same way on `:path`, with the HTTP/2 header rules
 * (`scanH2RequestHeaders`: `:authority`/`host` consistency, no connection-specific fields).
 */
export function pathLayer(): InboundLayer {
  return (ctx) => {
    ctx.target = checkRequestTarget(ctx.req.method!, ctx.req.url!);
    ctx.headers =
      ctx.req.httpVersionMajor === 2
        ? scanH2RequestHeaders(ctx.req.rawHeaders)
        : scanRequestHeaders(ctx.req.rawHeaders);
  };
}
