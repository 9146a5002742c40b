import { SidecarError } from '../errors.ts';

/** A peer the app may call through the sidecar. */
export interface Route {
  readonly name: string;
  readonly hosts: readonly string[];
  /** `host:port` of the peer sidecar. */
  readonly address: string;
  /** SPIFFE ID the peer must present; the token audience. */
  readonly spiffeId: string;
}

/** Where an outbound request goes, and the origin-form target to send. */
export interface ResolvedRoute {
  readonly route: Route;
  readonly target: string;
}

/**
 * Maps an app request to a route. Absolute-form (`GET http://orders/orders/1`, as sent by an
 * HTTP_PROXY client) is routed by the URL's host; origin-form by the Host header (route name). A
 * port is allowed and ignored (the route names the peer's address); one outside 1–65535 is refused.
 * Only `http:` is proxied (the sidecar adds TLS itself); unknown names are `ERR_SIDECAR_ROUTE_UNKNOWN`,
 * CONNECT and other target forms `ERR_SIDECAR_PATH_AMBIGUOUS`. Pure.
 */
export function resolveRoute(
  method: string,
  target: string,
  host: string | undefined,
  routes: ReadonlyMap<string, Route>,
): ResolvedRoute {
  if (method === 'CONNECT')
    throw new SidecarError(
      'ERR_SIDECAR_PATH_AMBIGUOUS',
      'CONNECT is not supported: call http://<route>/ through the proxy',
    );
  let name: string;
  let path: string;
  if (target.startsWith('/')) {
    if (!host) throw new SidecarError('ERR_SIDECAR_ROUTE_UNKNOWN', 'no Host header to route by');
    name = host;
    path = target;
  } else {
    const m = /^http:\/\/([^/?#]+)([/?][^#]*)?$/i.exec(target);
    if (!m)
      throw new SidecarError(
        'ERR_SIDECAR_PATH_AMBIGUOUS',
        'only http:// absolute-form or origin-form targets are proxied',
      );
    name = m[1]!;
    path = m[2] ?? '/';
    if (path.startsWith('?')) path = `/${path}`;
  }
  // The port names the app's idea of the peer and is not used for routing, but it must be one.
  const lower = name.toLowerCase();
  const portAt = lower.search(/:\d+$/);
  if (portAt >= 0) {
    const port = Number(lower.slice(portAt + 1));
    if (!(port >= 1 && port <= 65_535))
      throw new SidecarError('ERR_SIDECAR_PATH_AMBIGUOUS', `invalid port in "${name.slice(0, 260)}"`);
  }
  const hostname = portAt < 0 ? lower : lower.slice(0, portAt);
  const route = routes.get(hostname);
  if (!route) throw new SidecarError('ERR_SIDECAR_ROUTE_UNKNOWN', `no route for "${hostname.slice(0, 253)}"`);
  return { route, target: path };
}
