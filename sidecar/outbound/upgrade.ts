import { request as httpRequest } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { buildConnector } from 'undici';
import { parseTraceparent } from '../../core/index.ts';
import type { Logger } from '../../core/index.ts';
import { SidecarError, statusForCode } from '../errors.ts';
import { scanRequestHeaders } from '../inbound/headers.ts';
import type { IdSource } from '../inbound/trace.ts';
import { answerJson, relayHandshake, responseOn } from '../websocket/answer.ts';
import { checkUpgradeRequest, isRefusal } from '../websocket/handshake.ts';
import type { WebSocketOffer } from '../websocket/handshake.ts';
import type { TunnelFacts, Tunnels } from '../websocket/tunnels.ts';
import { resolveRoute } from './route.ts';
import type { ResolvedRoute, Route } from './route.ts';
import type { TokenSource } from './token-source.ts';

/** Dependencies of {@link outboundUpgradeListener}. */
export interface OutboundUpgradeDeps {
  readonly routes: ReadonlyMap<string, Route>;
  readonly tokens: TokenSource;
  /** An mTLS connection to a route's peer sidecar whose SPIFFE ID was checked (tls/connector.ts). */
  readonly connect: (route: Route) => Promise<Duplex>;
  readonly ids: IdSource;
  /** How long the peer sidecar may take to answer the handshake: then 504. */
  readonly headersTimeoutMs: number;
  readonly tunnels: Tunnels;
  readonly logger: Logger;
}

const LOOPBACK = /^(?:127\.\d+\.\d+\.\d+|::1|::ffff:127\.\d+\.\d+\.\d+)$/;

/**
 * The outbound listener's `upgrade` listener: the app's WebSocket handshake to a route
 * (`ws://orders/feed` through the proxy, absolute-form or by Host) is checked like the inbound
 * side checks it (RFC 6455 §4.2.1; every other upgrade, `h2c` included, is 400
 * `ERR_SIDECAR_UPGRADE_REFUSED`), its headers cleaned as on any outbound request, a token for the
 * route attached, and sent over a new mTLS connection to the peer sidecar (its SPIFFE ID checked
 * before a byte is written), where it passes the peer's layers. The peer's 101 is checked and passed
 * on, then bytes flow both ways under the same limits as inbound; any other answer (the peer's 403
 * for a denied path) is relayed as it is. Refusals answer like the outbound handler's.
 */
export function outboundUpgradeListener(
  deps: OutboundUpgradeDeps,
): (req: IncomingMessage, socket: Duplex, head: Buffer) => void {
  return (req, socket, head) => {
    socket.on('error', () => {});
    const res = responseOn(req, socket);
    const refuse = (err: unknown) => {
      const e =
        err instanceof SidecarError
          ? err
          : new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 'peer unavailable', { cause: err });
      if (res.headersSent || socket.destroyed) return void socket.destroy();
      answerJson(res, statusForCode(e.code), e.code, e.message);
    };
    let resolved: ResolvedRoute;
    let forward: string[];
    let traceparent: string;
    if (!LOOPBACK.test(req.socket.remoteAddress ?? ''))
      return refuse(
        new SidecarError(
          'ERR_SIDECAR_OUTBOUND_NOT_LOOPBACK',
          'the outbound proxy serves loopback callers only',
        ),
      );
    const offer = checkUpgradeRequest(req);
    if (isRefusal(offer))
      return answerJson(res, offer.status, 'ERR_SIDECAR_UPGRADE_REFUSED', offer.message, offer.headers);
    try {
      const scanned = scanRequestHeaders(req.rawHeaders);
      resolved = resolveRoute(req.method!, req.url!, req.headers.host, deps.routes);
      forward = scanned.forward;
      // The caller's trace goes on, with a span id of the sidecar's (as on any outbound request).
      const traceId = parseTraceparent(scanned.traceparent)?.traceId ?? deps.ids.traceId();
      traceparent = `00-${traceId}-${deps.ids.spanId()}-01`;
    } catch (err) {
      return refuse(err);
    }
    const route = resolved.route;
    // The token first: a connection opened for a call that then has no token would be left over.
    deps.tokens
      .get(route.spiffeId)
      .then((token) => deps.connect(route).then((peer) => [token, peer] as const))
      .then(([token, peer]) => {
        if (socket.destroyed) return void peer.destroy();
        forward.push(
          'host',
          route.name,
          'authorization',
          `Bearer ${token}`,
          'traceparent',
          traceparent,
          'connection',
          'Upgrade',
          'upgrade',
          'websocket',
        );
        handshake(peer, resolved.target, forward, offer, deps, socket, head, res, refuse, route);
      }, refuse);
  };
}

function handshake(
  peer: Duplex,
  target: string,
  headers: string[],
  offer: WebSocketOffer,
  deps: OutboundUpgradeDeps,
  app: Duplex,
  head: Buffer,
  res: ServerResponse,
  refuse: (err: unknown) => void,
  route: Route,
): void {
  const upReq = httpRequest({
    method: 'GET',
    path: target,
    headers,
    setHost: false,
    createConnection: () => peer as Socket,
  });
  upReq.on('error', (err) =>
    deps.logger.warn({ route: route.name, err: err.message }, 'outbound WebSocket handshake failed'),
  );
  relayHandshake(upReq, {
    offer,
    res,
    client: app,
    head,
    tunnels: deps.tunnels,
    closed: (facts: TunnelFacts) =>
      deps.logger.debug({ route: route.name, ...facts }, 'outbound WebSocket closed'),
    timeoutMs: deps.headersTimeoutMs,
    who: 'peer',
    fail: (err) => {
      peer.destroy();
      refuse(err);
    },
  });
}

/** Opens one connection with an undici-style connector (tls/connector.ts) to `host:port`. */
export function connectWith(connector: buildConnector.connector, address: string): Promise<Duplex> {
  const url = new URL(`https://${address}`);
  const hostname = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return new Promise((resolve, reject) =>
    connector(
      { hostname, host: hostname, protocol: 'https:', port: url.port } as buildConnector.Options,
      (err, socket) => (err ? reject(err) : resolve(socket!)),
    ),
  );
}
