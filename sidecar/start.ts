import { randomBytes } from 'node:crypto';
import { createServer as createHttpServer } from 'node:http';
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { Pool } from 'undici';
import { createAuditSink } from '../audit/index.ts';
import { createPeerVerifier, followTrustBundle, leafValidityProblem, watchTlsFiles } from '../ca/index.ts';
import type { TlsWatcher } from '../ca/index.ts';
import {
  activeTracer,
  applyConnectionBudgets,
  connectionServerOptions,
  createAccessLog,
  createLogger,
  registerConnectionMetrics,
  serveHealth,
} from '../core/index.ts';
import type { AuditSink, ConnectionGuard, Logger, ReadinessCheck, Tracer } from '../core/index.ts';
import { perCallerLimit } from './config.ts';
import type { SidecarConfig } from './config.ts';
import { createInboundHandler } from './inbound/handle.ts';
import { authorizeLayer } from './inbound/layers/authorize.ts';
import { bindingLayer } from './inbound/layers/binding.ts';
import { fairShareLayer } from './inbound/layers/fair-share.ts';
import { UpstreamDeadlines } from './inbound/layers/forward.ts';
import { pathLayer } from './inbound/layers/path.ts';
import { peerLayer } from './inbound/layers/peer.ts';
import { tokenLayer } from './inbound/layers/token.ts';
import { createInboundServer, updateServerTls } from './inbound/server.ts';
import { inboundUpgradeListener, relayUpgradeToApp } from './inbound/upgrade.ts';
import { connectWith, outboundUpgradeListener } from './outbound/upgrade.ts';
import { createTunnels } from './websocket/tunnels.ts';
import { registerTunnelMetrics } from './websocket/metrics.ts';
import { createH2Side, routeByPreface } from './inbound/h2.ts';
import { createH2Client, openH2c } from './h2/relay.ts';
import type { H2Client } from './h2/relay.ts';
import { h2PeerClient } from './outbound/h2-peer.ts';
import { createIdSource } from './inbound/trace.ts';
import { createJwksCache } from './jwks/cache.ts';
import type { JwksCache } from './jwks/cache.ts';
import { createOutboundHandler, refuseClientError, refuseConnect } from './outbound/handle.ts';
import type { Route } from './outbound/route.ts';
import { createTokenSource } from './outbound/token-source.ts';
import type { TokenSource } from './outbound/token-source.ts';
import { watchPolicy } from './policy/watch.ts';
import type { PolicyWatcher } from './policy/watch.ts';
import { createRevocationList } from './revocations.ts';
import type { RevocationList } from './revocations.ts';
import { createStsClient } from './sts-client.ts';
import { createClaimsCache } from './token/claims-cache.ts';
import { createMtlsConnector } from './tls/connector.ts';
import { tuneSidecarHeap } from './heap.ts';
import { createSidecarMetrics } from './metrics.ts';
import type { SidecarMetrics } from './metrics.ts';
import { startIdentity } from '../ca/index.ts';

/** What {@link startSidecar} lets a caller replace; everything else comes from the config. */
export interface StartSidecarOverrides {
  /** Audit sink; by default the one the config's `audit:` section names (`createAuditSink`). */
  readonly sink?: AuditSink;
  readonly logger?: Logger;
  /** Wall clock in ms. */
  readonly clock?: () => number;
  readonly random?: (n: number) => Uint8Array;
  /** Include Node process metrics (default true; tests running several sidecars in one process turn it off). */
  readonly defaultMetrics?: boolean;
  /** Tracer of the sidecar's spans; the process's telemetry (`startTelemetry`) by default, none when it is off. */
  readonly tracer?: Tracer;
}

/** A running sidecar. */
export interface RunningSidecar {
  /** `https://host:port` of the inbound mTLS listener. */
  readonly inbound: { readonly url: string; readonly port: number };
  /** `http://127.0.0.1:port` of the outbound proxy, when configured. */
  readonly outbound: { readonly url: string; readonly port: number } | undefined;
  readonly sink: AuditSink;
  readonly policy: PolicyWatcher;
  readonly tls: TlsWatcher;
  readonly jwks: JwksCache;
  readonly revocations: RevocationList;
  readonly tokens: TokenSource | undefined;
  readonly metrics: SidecarMetrics;
  /** `http://host:port/metrics`, when `metrics` is configured. */
  readonly metricsUrl: string | undefined;
  /**
   * Stops accepting, drains in-flight requests for up to `connections.drainTimeout` (then destroys
   * every connection left), stops timers, flushes audit events.
   */
  close(): Promise<void>;
}

/**
 * The composition root of the sidecar: loads TLS material and the policy (refusing to start on
 * bad files), starts the JWKS cache and revocation poller (an unreachable STS at start is not
 * fatal: requests get 503 until keys arrive), listens inbound (mTLS) and, when configured,
 * outbound (loopback HTTP proxy). Ports may be 0; the chosen ones are returned. Turns off V8's
 * allocation-site pretenuring for the process (see `heap.ts`).
 */
export async function startSidecar(
  config: SidecarConfig,
  overrides: StartSidecarOverrides = {},
): Promise<RunningSidecar> {
  tuneSidecarHeap();
  const logger = overrides.logger ?? createLogger({ name: 'sidecar' });
  const clock = overrides.clock ?? Date.now;
  const ids = createIdSource(overrides.random ?? ((n) => randomBytes(n)));
  const tracer = 'tracer' in overrides ? overrides.tracer : activeTracer('portcullis-sidecar');

  // With an identity: section the certificate is enrolled (join token) and renewed over EST.
  const identity = await startIdentity({
    identity: config.identity,
    tls: config.tls,
    defaultEst: config.sts.url,
    logger,
  });
  const tls = (() => {
    try {
      return watchTlsFiles(config.tls, logger);
    } catch (err) {
      identity?.stop();
      throw err;
    }
  })();
  // The ops listener (health, metrics) comes up first: a readiness probe sees 503 while keys,
  // policy and audit sink are still being set up, and 200 once every check passes.
  const ops: { metrics?: SidecarMetrics; checks?: Record<string, ReadinessCheck> } = {};
  const sidecarError = (error: string) => (message: string) => JSON.stringify({ error, message });
  const guards: Record<string, ConnectionGuard> = {};
  let metricsServer: HttpServer | undefined;
  if (config.metrics) {
    metricsServer = createHttpServer(connectionServerOptions(config.connections), (req, res) =>
      serveOps(req, res, ops),
    );
    guards.metrics = applyConnectionBudgets(metricsServer, config.connections, {
      timeoutBody: sidecarError('ERR_SIDECAR_BODY_TIMEOUT'),
    });
    await listen(metricsServer, config.metrics.listen.host, config.metrics.listen.port).catch(
      (err: unknown) => {
        identity?.stop();
        tls.close();
        throw err;
      },
    );
  }
  // What the steps below have opened, released in reverse order when a later one fails (a port
  // taken for the outbound listener must not leave the inbound one listening, nor the audit
  // client's loop, the policy watcher and the key refresh running in the calling process).
  const opened: (() => unknown)[] = [];
  try {
    // The verifier consults the revocation list, which is fetched with a client that uses the verifier.
    const revocationRef: { list?: RevocationList } = {};
    // One policy, two purposes: callers are checked as TLS clients, the STS and peer sidecars as servers.
    const makeVerifier = (purpose: 'clientAuth' | 'serverAuth') =>
      followTrustBundle(tls, (trustAnchorsPem, intermediatesPem) =>
        createPeerVerifier({
          trustAnchorsPem,
          intermediatesPem,
          trustDomain: config.trustDomain,
          isRevoked: (serial) => revocationRef.list?.isSerialRevoked(serial) ?? false,
          purpose,
          clockSkewMs: config.tls.clockSkew,
          clock,
        }),
      );
    const clientVerifier = makeVerifier('clientAuth');
    const serverVerifier = makeVerifier('serverAuth');
    const policy = watchPolicy({
      file: config.inbound.policy,
      service: config.service,
      intervalMs: config.inbound.policyReloadInterval,
      logger,
    });
    opened.push(() => policy.close());

    const sts = createStsClient({
      url: config.sts.url,
      spiffeId: config.sts.spiffeId,
      material: () => tls.current(),
      verifier: () => serverVerifier,
      timeoutMs: config.sts.timeout,
      clock,
    });
    const jwks = createJwksCache({
      fetchJwks: () => sts.fetchJwks(),
      clock,
      logger,
      refreshMs: config.sts.jwksRefresh,
      retryMs: Math.min(5_000, config.sts.jwksRefresh),
      maxStaleMs: config.sts.jwksMaxStale,
      kidCooldownMs: config.sts.kidRefetchCooldown,
    });
    const revoked = createRevocationList({
      fetchRevocations: (etag) => sts.fetchRevocations(etag),
      clock,
      logger,
      intervalMs: config.sts.revocationsPoll,
    });
    revocationRef.list = revoked;
    opened.push(
      () => sts.close(),
      () => jwks.close(),
      () => revoked.close(),
    );
    await Promise.all([jwks.start(), revoked.start()]);

    // `app: h2c://…`: one multiplexed HTTP/2 connection to the app (prior knowledge) carries
    // every request; the HTTP/1.1 pool is then never dialled.
    const appUrl = new URL(config.inbound.app);
    const h2App =
      appUrl.protocol === 'h2c:'
        ? createH2Client(() => openH2c(`http://${appUrl.host}`, config.inbound.upstreamHeadersTimeout))
        : undefined;
    const pool = new Pool(`http://${appUrl.host}`, {
      connections: config.inbound.upstreamConnections,
      keepAliveTimeout: 30_000,
      // Enforced by `deadlines` from one timer: undici's would cost two per request (decision 0104).
      headersTimeout: 0,
      bodyTimeout: 0,
    });
    const deadlines = new UpstreamDeadlines(
      config.inbound.upstreamHeadersTimeout,
      config.inbound.upstreamBodyTimeout,
    );
    // Released in reverse: the pool's close waits for exchanges in flight, still timed meanwhile.
    opened.push(
      () => deadlines.close(),
      () => pool.close(),
      () => h2App?.close(),
    );
    const claims = createClaimsCache(50_000, clock);
    let tokens: TokenSource | undefined;
    const metrics = createSidecarMetrics(
      {
        policy: () => policy.stats,
        tls: () => tls.stats,
        jwks: () => jwks.stats(),
        revocations: () => revoked.stats(),
        tokens: () => tokens?.stats(),
      },
      overrides.defaultMetrics ?? true,
    );
    identity?.attach(() => tls.reload(), metrics.registry);
    const sink =
      overrides.sink ??
      createAuditSink(config.audit, {
        tls,
        logger,
        metricsRegistry: metrics.registry,
        clockSkewMs: config.tls.clockSkew,
      });
    // A sink the caller passed in is the caller's to close.
    if (!overrides.sink) opened.push(() => sink.close());
    const accessLog = createAccessLog(logger, config.accessLog);
    // Relayed WebSockets of each listener: their limits, metrics, and their close on shutdown.
    const tunnels = { inbound: createTunnels(config.websocket), outbound: createTunnels(config.websocket) };
    registerTunnelMetrics(metrics.registry, tunnels);
    const handler = createInboundHandler({
      service: config.service,
      layers: [
        peerLayer(() => clientVerifier),
        tokenLayer(
          {
            jwks,
            issuer: config.sts.issuer,
            audience: config.service,
            maxTokenBytes: config.inbound.maxTokenBytes,
            maxLifetimeSeconds: Math.floor(config.inbound.maxTokenLifetime / 1000),
            skewSeconds: Math.floor(config.inbound.clockSkew / 1000),
            isJtiRevoked: (jti) => revoked.isJtiRevoked(jti),
            clock,
          },
          claims,
        ),
        bindingLayer(),
        pathLayer(),
        authorizeLayer(() => policy.current(), tracer),
        fairShareLayer({ ...config.inbound.fairShare, perCaller: perCallerLimit(config.inbound) }),
      ],
      upstream: {
        pool,
        deadlines,
        ...(h2App ? { h2: h2App, h2HeadersTimeoutMs: config.inbound.upstreamHeadersTimeout } : {}),
        host: appUrl.host,
        observe: metrics.upstream('inbound', 'app'),
        now: () => performance.now(),
        ...(tracer ? { tracer } : {}),
      },
      sink,
      ids,
      now: () => performance.now(),
      clock,
      logger,
      count: (decision, reason, rule) => metrics.record(decision, reason, rule),
      recordBeforeForward: config.audit.failMode === 'closed',
      upgrade: (ctx, closed) =>
        relayUpgradeToApp(
          ctx,
          { app: appUrl, headersTimeoutMs: config.inbound.upstreamHeadersTimeout, tunnels: tunnels.inbound },
          closed,
        ),
      ...(accessLog ? { accessLog } : {}),
      ...(tracer ? { tracer } : {}),
    });
    const refusedRaw = (
      what: string,
      status: number,
      reason: string = 'ERR_SIDECAR_REQUEST_MALFORMED',
      action?: string,
    ) => {
      metrics.record('deny', reason, undefined);
      if (!sink.accepting()) return;
      sink.emit({
        type: 'authz.decision',
        time: new Date(clock()).toISOString(),
        source: config.service,
        target: config.service,
        ...(action === undefined ? {} : { action }),
        decision: 'deny',
        reason,
        status,
        attributes: { parserError: what.slice(0, 64) },
      });
    };
    const inbound = createInboundServer(
      tls.current(),
      handler,
      refusedRaw,
      config.connections,
      inboundUpgradeListener(handler, refusedRaw),
    );
    // The 408 of a stalled body is recorded by the handler, which sees the forward fail.
    guards.inbound = applyConnectionBudgets(inbound, config.connections, {
      timeoutBody: sidecarError('ERR_SIDECAR_BODY_TIMEOUT'),
      inFlight: (socket) => inbound.h2.inFlight(socket),
    });
    // Read at scrape time: the outbound listener joins below.
    registerConnectionMetrics(metrics.registry, 'portcullis_sidecar', guards);
    await listen(inbound, config.inbound.listen.host, config.inbound.listen.port);
    opened.push(() => Promise.all([close(inbound), guards.inbound?.drain()]));

    let outbound: HttpServer | undefined;
    const dispatchers = new Map<string, Pool>();
    const h2Peers = new Map<string, H2Client>();
    if (config.outbound) {
      const out = config.outbound;
      const routes = new Map<string, Route>();
      for (const r of out.routes) for (const h of [r.name, ...r.hosts]) routes.set(h, r);
      tokens = createTokenSource({
        request: (aud, traceparent) => sts.requestToken(aud, traceparent),
        clock,
        logger,
        refreshBeforeMs: out.tokenRefreshBefore,
        retryAfterMs: out.tokenRetryAfter,
      });
      const connectorFor = (route: Route, alpn?: string[]) =>
        createMtlsConnector({
          material: () => tls.current(),
          verifier: () => serverVerifier,
          expectedId: route.spiffeId,
          // The peer sidecar's handshake shares the STS timeout setting; running out is a 504.
          timeoutMs: config.sts.timeout,
          timeoutCode: 'ERR_SIDECAR_UPSTREAM_TIMEOUT',
          ...(alpn ? { alpn } : {}),
        });
      const dispatcherFor = (route: Route): Pool => {
        let d = dispatchers.get(route.name);
        if (!d) {
          d = new Pool(`https://${route.address}`, {
            connect: connectorFor(route),
            connections: 64,
            keepAliveTimeout: 30_000,
          });
          dispatchers.set(route.name, d);
        }
        return d;
      };
      const h2PeerFor = (route: Route): H2Client => {
        let c = h2Peers.get(route.name);
        if (!c)
          h2Peers.set(route.name, (c = h2PeerClient(route, connectorFor(route, ['h2']), config.sts.timeout)));
        return c;
      };
      const outboundHandler = createOutboundHandler({
        routes,
        tokens,
        dispatcher: dispatcherFor,
        ids,
        headersTimeoutMs: out.upstreamHeadersTimeout,
        logger,
        observe: (route) => metrics.upstream('outbound', route),
        now: () => performance.now(),
        ...(accessLog ? { accessLog } : {}),
        ...(tracer ? { tracer } : {}),
        h2Peer: h2PeerFor,
      });
      outbound = createHttpServer(
        // requireHostHeader off: the header scan refuses a request without Host in the sidecar's own shape.
        { ...connectionServerOptions(config.connections), noDelay: true, requireHostHeader: false },
        outboundHandler,
      );
      // The app may speak h2c with prior knowledge on the same port (gRPC clients do).
      const outboundH2 = createH2Side({ compat: outboundHandler }, config.connections);
      routeByPreface(outbound, outboundH2, config.connections.headersTimeout);
      outbound.on('connect', refuseConnect);
      outbound.on(
        'upgrade',
        outboundUpgradeListener({
          routes,
          tokens,
          // A WebSocket gets a connection of its own (it becomes the tunnel), not one of the pool's.
          connect: (route) => connectWith(connectorFor(route), route.address),
          ids,
          headersTimeoutMs: out.upstreamHeadersTimeout,
          tunnels: tunnels.outbound,
          logger,
        }),
      );
      outbound.on('clientError', refuseClientError);
      // The app is the only peer of this loopback listener: the per-peer cap is the listener's.
      guards.outbound = applyConnectionBudgets(
        outbound,
        { ...config.connections, maxConnectionsPerPeer: config.connections.maxConnections },
        {
          timeoutBody: sidecarError('ERR_SIDECAR_BODY_TIMEOUT'),
          inFlight: (socket) => outboundH2.inFlight(socket),
        },
      );
      await listen(outbound, out.listen.host, out.listen.port);
    }

    tls.onChange((m) => {
      updateServerTls(inbound, m);
      claims.clear();
      tokens?.invalidate();
      // Tokens are bound to the old certificate: new connections, new tokens.
      for (const [name, d] of dispatchers) {
        dispatchers.delete(name);
        void d.close().catch(() => {});
      }
      for (const [name, c] of h2Peers) {
        h2Peers.delete(name);
        void c.close();
      }
    });

    ops.metrics = metrics;
    ops.checks = {
      certificate: () => leafValidityProblem(tls.current().cert, clock()),
      jwks: () => {
        const { ageMs, kids } = jwks.stats();
        if (ageMs === undefined || kids.length === 0) return 'no signing keys from the STS yet';
        if (ageMs > config.sts.jwksMaxStale)
          return `signing keys ${Math.round(ageMs / 1000)}s old, past sts.jwksMaxStale`;
        return undefined;
      },
      policy: () => (policy.current().policy.hash ? undefined : 'no policy loaded'),
      audit: () =>
        sink.accepting()
          ? undefined
          : 'the audit sink refuses events (failMode closed, spool full or unwritable)',
    };

    const urlOf = (server: HttpServer | HttpsServer, scheme: string) => {
      const a = server.address() as AddressInfo;
      const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
      return { url: `${scheme}://${host}:${a.port}`, port: a.port };
    };
    const running: RunningSidecar = {
      inbound: urlOf(inbound, 'https'),
      outbound: outbound ? urlOf(outbound, 'http') : undefined,
      sink,
      policy,
      tls,
      jwks,
      revocations: revoked,
      tokens,
      metrics,
      metricsUrl: metricsServer ? `${urlOf(metricsServer, 'http').url}/metrics` : undefined,
      async close() {
        identity?.stop();
        tls.close();
        policy.close();
        jwks.close();
        revoked.close();
        // Relayed WebSockets first: a 1001 close frame each way, then their sockets end (decision 0086).
        await Promise.all([tunnels.inbound.shutdown(), tunnels.outbound.shutdown()]);
        // Stop accepting everywhere; idle, half-open and handshaking connections go now, requests
        // in flight get up to connections.drainTimeout, then whatever is left is destroyed.
        await Promise.all([
          close(inbound),
          ...(outbound ? [close(outbound)] : []),
          ...(metricsServer ? [close(metricsServer)] : []),
          ...Object.values(guards).map((g) => g.drain()),
        ]);
        await Promise.all([
          pool.close(),
          sts.close(),
          ...[...dispatchers.values()].map((d) => d.close()),
          ...[...h2Peers.values(), ...(h2App ? [h2App] : [])].map((c) => c.close()),
        ]);
        // A sink the caller passed in is the caller's to close; the one built here is closed here.
        await (overrides.sink ? sink.flush() : sink.close());
      },
    };
    // Closing twice waits for the first close (a test, or a signal during shutdown).
    let closing: Promise<void> | undefined;
    const closeAll = running.close;
    return { ...running, close: () => (closing ??= closeAll()) };
  } catch (err) {
    // A part that failed to start leaves nothing listening or running behind.
    for (const release of opened.reverse())
      await Promise.resolve()
        .then(release)
        .catch(() => {});
    identity?.stop();
    tls.close();
    if (metricsServer) {
      await close(metricsServer);
      await guards.metrics?.drain();
    }
    throw err;
  }
}

function listen(server: HttpServer | HttpsServer, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function close(server: HttpServer | HttpsServer): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** The sidecar's ops listener: `/healthz`, `/readyz` (core/health.ts) and `/metrics` (once started). */
function serveOps(
  req: IncomingMessage,
  res: ServerResponse,
  ops: { metrics?: SidecarMetrics; checks?: Record<string, ReadinessCheck> },
): void {
  if (serveHealth(req, res, () => ops.checks)) return;
  if (req.method !== 'GET' || req.url !== '/metrics') return void res.writeHead(404).end();
  const metrics = ops.metrics;
  if (!metrics) return void res.writeHead(503, { 'retry-after': '1' }).end();
  metrics.registry.metrics().then(
    (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
    () => res.writeHead(500).end(),
  );
}
