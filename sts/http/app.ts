import { randomUUID } from 'node:crypto';
import type { SecureServerOptions } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { fastifySwagger } from '@fastify/swagger';
import Fastify, { LogController } from 'fastify';
import type { FastifyError, FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import {
  ACCESS_TOKEN_TYPE_URI,
  TOKEN_EXCHANGE_GRANT,
  PortcullisError,
  SpanKind,
  coalesceWrites,
  describeClientError,
  endWithHttpError,
  SpanStatusCode,
  parseTraceparent,
  LIVENESS_BODY,
  readinessReport,
  startSpan,
  OPENAPI_ROUTE_DOC,
  openApiOptions,
} from '../../core/index.ts';
import { stsRouteDocs } from './route-docs.ts';
import { leafValidityProblem } from '../../ca/index.ts';
import type {
  AccessLine,
  AuditEvent,
  AuditSink,
  Logger,
  ReadinessCheck,
  Registry,
  Span,
  Tracer,
  Workload,
} from '../../core/index.ts';
import type { StsConfig } from '../config.ts';
import { HTTP_ERRORS, StsError } from '../errors.ts';
import type { StsErrorCode } from '../errors.ts';
import type { Keyring } from '../keyring/keyring.ts';
import type { StsMetrics } from '../metrics.ts';
import type { RateLimiter } from '../rate-limit.ts';
import type { DenyList } from '../revocations/deny-list.ts';
import { issueAccessToken } from '../token/issue.ts';
import type { SigningPool } from '../token/sign-pool.ts';
import { parseTokenRequest } from '../token/parse-request.ts';
import { verifySubjectToken } from '../token/verify-subject.ts';
import type { StsPeer, StsPeerVerifier } from './peer.ts';
import { MemoryStateStore } from '../state/memory.ts';
import type { StsStateStore } from '../state/store.ts';
import { createRateLimiter } from '../rate-limit.ts';
import { estRoutes } from './routes/est.ts';
import type { EstCa } from './routes/est.ts';
import { joinTokenRoutes } from './routes/join-tokens.ts';

/** Everything {@link buildStsApp} needs; only the composition root (`startSts`) fills defaults. */
export interface StsDeps {
  readonly config: StsConfig;
  readonly registry: Registry;
  readonly keyring: Keyring;
  readonly peerVerifier: StsPeerVerifier;
  readonly audit: AuditSink;
  readonly clock: { now(): number };
  readonly logger: Logger;
  readonly metrics: StsMetrics;
  readonly denyList: DenyList;
  readonly rateLimiter: RateLimiter;
  /** Durable revocations and join tokens; in memory when absent. */
  readonly state?: StsStateStore;
  /** The online CA of the EST routes; without it they answer 404. */
  readonly estCa?: EstCa;
  /** Token ids; `crypto.randomUUID` by default. */
  readonly randomId?: () => string;
  /** HTTPS options (key, cert, requestCert…); without them the app is plain HTTP, for `inject()` tests. */
  readonly tls?: SecureServerOptions;
  /** The STS's own SPIFFE ID, stamped as `source` on audit events. */
  readonly selfId?: string;
  /** With a tracer, each token request is an `sts.token` span, child of the caller's `traceparent`. */
  readonly tracer?: Tracer;
  /** Signs tokens off the event loop (see sign-pool.ts). */
  readonly signingPool: SigningPool;
  /** Opt-in access log (core/access-log.ts): one line per answered request. */
  readonly accessLog?: (line: AccessLine) => void;
  /** The STS's own certificate chain as served now (renewals included), for `/readyz`. */
  readonly ownCertificate?: () => string;
}

/** Which kind of route a request hit: decides authentication and the audit event type. */
type RouteKind = 'public' | 'token' | 'admin' | 'workload' | 'enrol';

interface Caller {
  readonly peer: StsPeer;
  readonly workload: Workload;
}

/**
 * What the hooks learn about one request, kept on the fastify request (`decorateRequest`) rather
 * than in WeakMaps keyed by it: three ephemeron entries per request showed up in GC under load.
 */
interface RequestState {
  readonly startedAt: number;
  caller?: Caller;
  /** Who a request without a verified peer claimed to be (a join token's workload), for its audit event. */
  claimed?: string;
  span?: Span;
  /** The refusal's reason code, for the access line. */
  reason?: string;
}
type StatefulRequest = FastifyRequest & { stsState: RequestState | null };
const stateOf = (req: FastifyRequest): RequestState | null => (req as StatefulRequest).stsState;

const revokeBodySchema = z.strictObject({
  jti: z.string().min(1).max(256).optional(),
  serial: z
    .string()
    .regex(/^(?:[0-9a-fA-F]{2}:?)*[0-9a-fA-F]{1,2}$/, 'must be a hex serial')
    .max(128)
    .optional(),
  expiresAt: z.iso.datetime({ offset: true }).optional(),
  reason: z.string().max(256).optional(),
});

/** Default lifetime of a serial entry sent without `expiresAt`: longer than any leaf the CA issues by default. */
const DEFAULT_SERIAL_ENTRY_MS = 7 * 86_400_000;

/**
 * Builds the STS fastify app (docs/sts.md), not listening. Every route but discovery and
 * health requires a verified, registered peer, checked in `onRequest` before any body is read;
 * admin routes also need role `admin`. All errors become RFC 6749 §5.2 bodies in one handler,
 * and every refusal, issuance and admin call emits an audit event.
 */
export function buildStsApp(deps: StsDeps): FastifyInstance {
  const { config, registry, keyring, peerVerifier, audit, clock, metrics, denyList, rateLimiter } = deps;
  const randomId = deps.randomId ?? randomUUID;
  const state = deps.state ?? new MemoryStateStore();
  const enrolLimiter = createRateLimiter({
    perSecond: config.ca?.perSecond ?? 1,
    burst: config.ca?.burst ?? 10,
    maxTracked: config.rateLimit.maxTracked,
    clock,
  });
  const { tracer } = deps;
  const issuer = config.issuer.replace(/\/+$/, '');
  const skewSeconds = Math.ceil(config.keys.clockSkew / 1000);
  const jwksMaxAge = Math.floor(config.keys.jwksCachePeriod / 1000);
  const source = deps.selfId ? { source: deps.selfId } : {};
  // Labelled children resolved once: prom-client hashes label sets on every unbound inc().
  const issuedClientCredentials = metrics.tokensIssued.labels('client_credentials');
  const issuedTokenExchange = metrics.tokensIssued.labels('token_exchange');

  const app = Fastify({
    ...(deps.tls ? { https: deps.tls } : {}),
    // No per-request child loggers: the hot path logs nothing; failures go to deps.logger below.
    logger: false,
    // Per-request log lines would cost more than issuing a token; audit events record requests.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.bodyLimit,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    return503OnClosing: true,
    requestIdHeader: false,
    // What the HTTP parser refuses (smuggling shapes, bad bytes, oversized headers) gets an
    // RFC 6749 body and an audit event like every other refusal, not fastify's default body.
    clientErrorHandler: (err: Error & { code?: string }, socket: Duplex) => {
      const answer = describeClientError(err);
      if (!answer) return void socket.destroy();
      const body = { error: 'invalid_request', error_description: answer.message };
      // Recorded only when answered: a connection dropped mid-response got no 4xx to record.
      if (endWithHttpError(socket, answer.status, JSON.stringify(body)))
        emit({
          type: 'authz.decision',
          decision: 'deny',
          reason: 'ERR_STS_REQUEST_INVALID',
          status: answer.status,
          attributes: { parserError: String(err.code ?? 'unknown').slice(0, 64) },
        });
    },
  }) as unknown as FastifyInstance;

  // Pipelined answers leave together: see coalesceWrites (one TLS write per turn, not per answer).
  if (deps.tls) app.server.on('secureConnection', (socket: TLSSocket) => coalesceWrites(socket));
  app.decorateRequest('stsState', null);
  // The OpenAPI document of every route below (GET /openapi.json; decision 0058). Set up by a
  // direct call, not app.register(): the plugin's onRoute hook must be in place before the first
  // route, and this builder is synchronous (register would load it after the routes are added).
  fastifySwagger(
    app,
    openApiOptions({
      title: 'Portcullis STS',
      description:
        'Token service: certificate-bound access tokens, discovery, revocations, admin, EST (docs/sts.md)',
    }),
    (err) => {
      if (err) throw err;
    },
  );
  const DOCS = stsRouteDocs({ revokeBody: revokeBodySchema });
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
    done(null, body);
  });
  // Fastify's default text/plain parser also yields a string, which the token route would take for
  // a form: no route reads text, so that media type is refused (415) like any other.
  app.removeContentTypeParser('text/plain');

  const kindOf = (req: FastifyRequest): RouteKind =>
    ((req.routeOptions.config as { kind?: RouteKind } | undefined)?.kind ?? 'workload') as RouteKind;

  const emit = (event: Omit<AuditEvent, 'time'>) => {
    audit.emit({ time: new Date(clock.now()).toISOString(), ...source, ...event } as AuditEvent);
  };
  /** Like `emit`, resolved once the sink has the event on record; an event it cannot keep refuses the request. */
  const record = (event: Omit<AuditEvent, 'time'>): Promise<void> =>
    audit
      .record({ time: new Date(clock.now()).toISOString(), ...source, ...event } as AuditEvent)
      .catch(() => {
        throw new StsError(
          'ERR_STS_AUDIT_UNAVAILABLE',
          'the audit log cannot take events; refusing to act unrecorded',
        );
      });
  /** The request's trace id: its span's, or the caller's `traceparent`'s when tracing is off. */
  const traceOf = (req: FastifyRequest): { traceId?: string } => {
    const traceId =
      stateOf(req)?.span?.spanContext().traceId ?? parseTraceparent(req.headers.traceparent)?.traceId;
    return traceId ? { traceId } : {};
  };

  if (tracer) {
    const end = (req: FastifyRequest, status: number | undefined) => {
      const state = stateOf(req);
      const span = state?.span;
      if (!span) return;
      state.span = undefined;
      if (status !== undefined) span.setAttribute('http.response.status_code', status);
      else span.setStatus({ code: SpanStatusCode.ERROR, message: 'aborted' });
      span.end();
    };
    app.addHook('onResponse', (req, reply, done) => {
      end(req, reply.statusCode);
      done();
    });
    app.addHook('onRequestAbort', (req, done) => {
      end(req, undefined);
      done();
    });
  }

  const accessLog = deps.accessLog;
  if (accessLog) {
    app.addHook('onResponse', (req, reply, done) => {
      const state = stateOf(req);
      const status = reply.statusCode;
      const caller = state?.caller?.peer.spiffeId.uri;
      accessLog({
        side: kindOf(req) === 'token' ? 'token' : 'sts',
        method: req.method,
        // The route pattern, not the raw URL: no query string reaches the log.
        target: req.routeOptions.url ?? req.url.split('?')[0]!,
        status,
        decision: status < 400 ? 'allow' : 'deny',
        reason: state?.reason ?? (status < 400 ? 'allowed' : `http_${status}`),
        ...(caller ? { caller } : {}),
        latencyMs: state ? performance.now() - state.startedAt : 0,
        ...traceOf(req),
      });
      done();
    });
  }

  app.addHook('onRequest', (req, _reply, done) => {
    const state: RequestState = { startedAt: performance.now() };
    (req as StatefulRequest).stsState = state;
    const kind = kindOf(req);
    if (kind === 'token' && tracer)
      state.span = startSpan(tracer, 'sts.token', parseTraceparent(req.headers.traceparent), SpanKind.SERVER);
    // EST bootstrap authenticates with a join token, checked by its route (routes/est.ts).
    if (kind === 'public' || kind === 'enrol') return done();
    let peer: StsPeer;
    try {
      peer = peerVerifier.verifySocket(req.raw.socket as TLSSocket);
    } catch (err) {
      const reason = (err as { code?: string }).code ?? 'ERR_STS_PEER_REFUSED';
      return done(
        new StsError('ERR_STS_PEER_REFUSED', 'the client certificate was refused', { reason, cause: err }),
      );
    }
    const workload = registry.byId(peer.spiffeId.uri);
    if (!workload) {
      return done(
        new StsError('ERR_STS_CLIENT_NOT_REGISTERED', `${peer.spiffeId.uri} is not a registered workload`),
      );
    }
    state.caller = { peer, workload };
    if (kind === 'admin' && !workload.roles.includes('admin')) {
      return done(new StsError('ERR_STS_FORBIDDEN', 'this route needs role admin'));
    }
    const wait = rateLimiter.take(peer.spiffeId.uri);
    if (wait > 0) {
      return done(new StsError('ERR_STS_RATE_LIMITED', 'too many requests', { retryAfterSeconds: wait }));
    }
    if (!audit.accepting()) {
      return done(
        new StsError(
          'ERR_STS_AUDIT_UNAVAILABLE',
          'the audit log cannot take events; refusing to act unrecorded',
        ),
      );
    }
    done();
  });

  app.setErrorHandler((err: FastifyError, req, reply) => {
    const code = toStsCode(err);
    const { status, error } = HTTP_ERRORS[code];
    const reason = err instanceof StsError ? err.reason : code;
    const trace = traceOf(req);
    if (status >= 500 && !(err instanceof StsError)) {
      deps.logger.error(
        { err: { message: err.message, code: err.code }, url: req.url, ...trace },
        'request failed',
      );
    }
    const kind = kindOf(req);
    const state = stateOf(req);
    const caller = state?.caller;
    if (state) state.reason = reason;
    metrics.requestsRefused.inc({ reason });
    if (kind === 'token') metrics.tokensRefused.inc({ reason });
    stateOf(req)
      ?.span?.setAttributes({
        'portcullis.outcome': 'refused',
        'portcullis.reason': reason,
        ...(caller ? { 'portcullis.caller': caller.peer.spiffeId.uri } : {}),
      })
      .setStatus({ code: SpanStatusCode.ERROR, message: reason });
    emit({
      type: kind === 'token' ? 'token.denied' : kind === 'admin' ? adminEventType(req) : 'authz.decision',
      ...subjectOf(req),
      action: `${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]}`.slice(0, 4096),
      decision: 'deny',
      reason,
      status,
      latencyMs: latency(req),
      ...trace,
      ...(caller ? { attributes: { serial: caller.peer.serial } } : {}),
    });
    reply.code(status).header('cache-control', 'no-store');
    if (err instanceof StsError && err.retryAfterSeconds !== undefined)
      reply.header('retry-after', String(err.retryAfterSeconds));
    const description = status < 500 || err instanceof StsError ? err.message : 'internal error';
    return reply.send({ error, error_description: description });
  });

  app.setNotFoundHandler((req, reply) => {
    reply.send(new StsError('ERR_STS_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`));
  });

  /** The verified caller, or who a request without one claimed to be (a join token's workload). */
  const subjectOf = (req: FastifyRequest): { subject?: string } => {
    const subject = stateOf(req)?.caller?.peer.spiffeId.uri ?? stateOf(req)?.claimed;
    return subject ? { subject } : {};
  };
  const latency = (req: FastifyRequest) => {
    const t = stateOf(req)?.startedAt;
    return t === undefined ? 0 : Math.round((performance.now() - t) * 1000) / 1000;
  };
  const callerOf = (req: FastifyRequest): Caller => {
    const c = stateOf(req)?.caller;
    if (!c) throw new StsError('ERR_STS_PEER_REFUSED', 'no verified peer');
    return c;
  };

  // ---- token endpoint --------------------------------------------------------------------
  app.post('/oauth2/token', { config: { kind: 'token', doc: DOCS.token } }, async (req, reply) => {
    if (typeof req.body !== 'string') {
      throw new StsError(
        req.body === undefined ? 'ERR_STS_REQUEST_INVALID' : 'ERR_STS_MEDIA_TYPE_UNSUPPORTED',
        'the body must be application/x-www-form-urlencoded',
      );
    }
    const { peer, workload } = callerOf(req);
    const request = parseTokenRequest(req.body);
    const nowMs = clock.now();
    let delegatedSubject: string | undefined;
    if (request.subjectToken !== undefined) {
      const subject = verifySubjectToken({
        token: request.subjectToken,
        issuer: config.issuer,
        caller: workload.spiffeId.uri,
        nowSeconds: Math.floor(nowMs / 1000),
        skewSeconds,
        publicKey: (kid) => keyring.publicKey(kid),
      });
      if (denyList.isJtiRevoked(subject.jti))
        throw new StsError('ERR_STS_SUBJECT_TOKEN_INVALID', 'subject_token has been revoked');
      delegatedSubject = subject.sub;
    }
    const signer = keyring.signer();
    const issued = issueAccessToken({
      issuer: config.issuer,
      workload,
      thumbprint: peer.thumbprint,
      request,
      ttlCapMs: config.tokens.ttlCap,
      nowMs,
      jti: randomId(),
      encodedHeader: signer.encodedHeader,
      ...(delegatedSubject !== undefined ? { delegatedSubject } : {}),
    });
    const accessToken = `${issued.signingInput}.${await deps.signingPool.sign(issued.signingInput, signer.key)}`;
    stateOf(req)?.span?.setAttributes({
      'portcullis.outcome': 'issued',
      'portcullis.caller': workload.spiffeId.uri,
      'portcullis.audience': issued.claims.aud,
      'portcullis.grant': request.grantType,
    });
    // The token leaves only once its event is on record: durable in the audit client's spool in
    // failMode closed (one group-committed fsync for the requests of the moment), queued in open.
    await record({
      type: 'token.issued',
      subject: issued.claims.sub,
      target: issued.claims.aud,
      action: 'POST /oauth2/token',
      decision: 'allow',
      reason: 'issued',
      status: 200,
      latencyMs: latency(req),
      jti: issued.claims.jti,
      ...traceOf(req),
      attributes: {
        kid: signer.kid,
        grant: request.grantType,
        serial: peer.serial,
        ...(issued.claims.act ? { actor: issued.claims.act.sub } : {}),
      },
    });
    (request.grantType === 'client_credentials' ? issuedClientCredentials : issuedTokenExchange).inc();
    reply.header('cache-control', 'no-store').header('pragma', 'no-cache').type('application/json');
    return reply.send(
      `{"access_token":"${accessToken}","token_type":"Bearer","expires_in":${issued.expiresIn},"issued_token_type":"${ACCESS_TOKEN_TYPE_URI}"}`,
    );
  });

  // ---- discovery ---------------------------------------------------------------------------
  app.get('/.well-known/jwks.json', { config: { kind: 'public', doc: DOCS.jwks } }, (req, reply) => {
    const { body, etag } = keyring.jwks();
    reply.header('cache-control', `public, max-age=${jwksMaxAge}`).header('etag', etag);
    if (req.headers['if-none-match'] === etag) return reply.code(304).send();
    return reply.type('application/jwk-set+json').send(body);
  });

  const metadata = JSON.stringify({
    issuer: config.issuer,
    token_endpoint: `${issuer}/oauth2/token`,
    jwks_uri: `${issuer}/.well-known/jwks.json`,
    grant_types_supported: ['client_credentials', TOKEN_EXCHANGE_GRANT],
    token_endpoint_auth_methods_supported: ['tls_client_auth'],
    response_types_supported: [],
    tls_client_certificate_bound_access_tokens: true,
  });
  app.get(
    '/.well-known/oauth-authorization-server',
    { config: { kind: 'public', doc: DOCS.metadata } },
    (_req, reply) => {
      reply.header('cache-control', `public, max-age=${jwksMaxAge}`).type('application/json');
      return reply.send(metadata);
    },
  );

  // ---- revocations -------------------------------------------------------------------------
  app.get('/v1/revocations', { config: { kind: 'workload', doc: DOCS.revocations } }, (req, reply) => {
    const { body, etag } = denyList.snapshot();
    reply.header('cache-control', 'no-cache').header('etag', etag);
    if (req.headers['if-none-match'] === etag) return reply.code(304).send();
    return reply.type('application/json').send(body);
  });

  // ---- admin -------------------------------------------------------------------------------
  const adminAllowed = (req: FastifyRequest, action: string, extra: Partial<AuditEvent> = {}) => {
    emit({
      type: adminEventType(req),
      subject: callerOf(req).peer.spiffeId.uri,
      action,
      decision: 'allow',
      reason: 'allowed',
      status: 200,
      latencyMs: latency(req),
      ...extra,
    });
  };

  app.get('/v1/admin/keys', { config: { kind: 'admin', doc: DOCS.keys } }, (req, reply) => {
    const keys = keyring.list();
    adminAllowed(req, 'GET /v1/admin/keys');
    return reply.header('cache-control', 'no-store').send({ keys });
  });

  app.post('/v1/admin/keys/rotate', { config: { kind: 'admin', doc: DOCS.rotate } }, async (req, reply) => {
    const result = await keyring.rotate();
    adminAllowed(req, 'POST /v1/admin/keys/rotate', {
      target: result.currentKid,
      attributes: {
        rotated: result.rotated,
        ...(result.activatesAt ? { activatesAt: result.activatesAt } : {}),
      },
    });
    return reply.header('cache-control', 'no-store').send({ ...result, keys: keyring.list() });
  });

  app.post('/v1/admin/revoke', { config: { kind: 'admin', doc: DOCS.revoke } }, async (req, reply) => {
    if (req.body === null || typeof req.body !== 'object')
      throw new StsError('ERR_STS_REQUEST_INVALID', 'the body must be a JSON object');
    const parsed = revokeBodySchema.safeParse(req.body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new StsError('ERR_STS_REQUEST_INVALID', `${issue.path.join('.') || 'body'}: ${issue.message}`);
    }
    const { jti, serial, expiresAt } = parsed.data;
    if ((jti === undefined) === (serial === undefined))
      throw new StsError('ERR_STS_REQUEST_INVALID', 'exactly one of "jti" and "serial" is required');
    const now = clock.now();
    const until = expiresAt
      ? Date.parse(expiresAt)
      : now + (jti !== undefined ? config.tokens.ttlCap + config.keys.clockSkew : DEFAULT_SERIAL_ENTRY_MS);
    if (until <= now) throw new StsError('ERR_STS_REQUEST_INVALID', 'expiresAt must be in the future');
    const canonicalSerial = serial
      ?.replace(/:/g, '')
      .toLowerCase()
      .replace(/^0+(?=.)/, '');
    // Durable first: the revocation is acknowledged only once a restart (or another replica) keeps it.
    await state.revoke({
      kind: jti !== undefined ? 'jti' : 'serial',
      value: jti ?? canonicalSerial!,
      expiresAt: until,
    });
    if (jti !== undefined) denyList.revokeJti(jti, until);
    else denyList.revokeSerial(canonicalSerial!, until);
    const entry =
      jti !== undefined
        ? { jti, expiresAt: new Date(until).toISOString() }
        : { serial: canonicalSerial!, expiresAt: new Date(until).toISOString() };
    adminAllowed(req, 'POST /v1/admin/revoke', {
      target: jti ?? canonicalSerial!,
      ...(jti !== undefined ? { jti } : {}),
      attributes: { kind: jti !== undefined ? 'jti' : 'serial', expiresAt: entry.expiresAt },
    });
    return reply.header('cache-control', 'no-store').send({ revoked: entry });
  });

  // ---- online identity: EST and join tokens (routes/) ----------------------------------------
  void app.register(
    estRoutes({
      ca: deps.estCa,
      registry,
      state,
      limiter: enrolLimiter,
      clock,
      accepting: () => audit.accepting(),
      // cert.issued is recorded (durable in failMode closed) before the certificate leaves.
      emit: record,
      latency,
      callerOf,
      claim: (req, subject) => {
        const st = stateOf(req);
        if (st) st.claimed = subject;
      },
    }),
  );
  void app.register(
    joinTokenRoutes({
      registry,
      state,
      clock,
      ttlCapMs: config.ca?.joinTokenTtlCap ?? 86_400_000,
      callerOf,
      adminAllowed,
    }),
  );

  // ---- health and metrics ------------------------------------------------------------------
  app.get('/healthz', { config: { kind: 'public', doc: DOCS.healthz } }, (_req, reply) =>
    reply.type('application/json').send(LIVENESS_BODY),
  );
  // Readiness, as on every server (core/health.ts): its own certificate, a signing key, the audit sink.
  // The certificate served now: a renewed one replaces the one the server started with.
  const ownCert =
    deps.ownCertificate ?? (typeof deps.tls?.cert === 'string' ? () => deps.tls!.cert as string : undefined);
  const readiness = stsReadinessChecks({
    certificate: () => (ownCert ? ownCert() : undefined),
    keyring: () => keyring,
    audit: () => audit,
    clock,
  });
  app.get('/readyz', { config: { kind: 'public', doc: DOCS.readyz } }, (_req, reply) => {
    const { status, body } = readinessReport(readiness);
    return reply.code(status).header('cache-control', 'no-store').type('application/json').send(body);
  });
  app.get('/metrics', { config: { kind: 'workload', doc: DOCS.metrics } }, async (_req, reply) => {
    refreshKeyAge(metrics, keyring, clock.now());
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  let openApiBody: string | undefined;
  app.get('/openapi.json', { config: { kind: 'public', doc: OPENAPI_ROUTE_DOC } }, (_req, reply) => {
    openApiBody ??= JSON.stringify(app.swagger());
    return reply.header('cache-control', 'no-cache').type('application/json').send(openApiBody);
  });

  return app;
}

function adminEventType(req: FastifyRequest): `admin.${string}` {
  const route = req.routeOptions.url ?? '';
  if (route.endsWith('/keys/rotate')) return 'admin.keys.rotate';
  if (route.endsWith('/keys')) return 'admin.keys.list';
  if (route.endsWith('/revoke')) return 'admin.revoke';
  if (route.endsWith('/join-tokens')) return 'admin.join-token.create';
  return 'admin.request';
}

/** Maps any error to one of our codes: ours pass through, fastify's body errors become request errors. */
function toStsCode(err: FastifyError): StsErrorCode {
  if (err instanceof StsError) return err.code;
  if (err instanceof PortcullisError) return 'ERR_STS_REQUEST_INVALID';
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return 'ERR_STS_BODY_TOO_LARGE';
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return 'ERR_STS_MEDIA_TYPE_UNSUPPORTED';
  }
  const status = err.statusCode ?? 500;
  if (status === 413) return 'ERR_STS_BODY_TOO_LARGE';
  if (status === 415) return 'ERR_STS_MEDIA_TYPE_UNSUPPORTED';
  if (status >= 400 && status < 500) return 'ERR_STS_REQUEST_INVALID';
  return 'ERR_STS_INTERNAL';
}

/** What the STS's readiness checks read; a getter answers undefined while that part is not loaded yet. */
export interface StsReadinessParts {
  /** The certificate chain served now (undefined: not checked by this listener, or not loaded yet). */
  readonly certificate: () => string | undefined;
  readonly keyring: () => Keyring | undefined;
  readonly audit: () => AuditSink | undefined;
  readonly clock: { now(): number };
  /** True while the certificate is still being enrolled or read (the check then says so). */
  readonly certificatePending?: () => boolean;
}

/**
 * The STS's `/readyz` checks (core/health.ts), the same on the mTLS listener and the ops listener:
 * its own certificate is valid, the keyring holds a signing key, the audit sink accepts events.
 */
export function stsReadinessChecks(parts: StsReadinessParts): Record<string, ReadinessCheck> {
  return {
    certificate: () => {
      if (parts.certificatePending?.()) return 'the certificate is not loaded yet';
      const pem = parts.certificate();
      return pem === undefined ? undefined : leafValidityProblem(pem, parts.clock.now());
    },
    keys: () => {
      const keyring = parts.keyring();
      if (!keyring) return 'the keystore is not open yet';
      try {
        keyring.signer();
        return undefined;
      } catch {
        return 'no signing key in the keyring';
      }
    },
    audit: () => {
      const audit = parts.audit();
      if (!audit) return 'the audit sink is not set up yet';
      return audit.accepting() ? undefined : 'the audit sink refuses events (failMode closed)';
    },
  };
}

/** Sets the `portcullis_sts_key_age_seconds` gauges from the keyring (before every scrape). */
export function refreshKeyAge(metrics: StsMetrics, keyring: Keyring, now: number): void {
  for (const state of ['next', 'current', 'retiring'] as const) {
    const times = keyring
      .list()
      .filter((k) => k.state === state)
      .map((k) =>
        Date.parse(
          k.state === 'current' ? k.activatedAt! : k.state === 'retiring' ? k.retiredAt! : k.publishedAt,
        ),
      );
    metrics.keyAge.set({ state }, times.length ? (now - Math.min(...times)) / 1000 : 0);
  }
}
