import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { SecureServerOptions } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { fastifySwagger } from '@fastify/swagger';
import Fastify, { LogController } from 'fastify';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  PortcullisError,
  describeClientError,
  endWithHttpError,
  parseAuditEvent,
  parseTraceparent,
  openApiOptions,
  readinessReport,
} from '../../core/index.ts';
import { COLLECTOR_DOCS as D } from './route-docs.ts';
import type { AuditEvent, Logger, ReadinessCheck, Registry, SpiffeId, Workload } from '../../core/index.ts';
import { CollectorRequestError } from '../errors.ts';
import { RESERVED_EVENT_TYPE } from '../record.ts';
import type { AuditErrorCode } from '../errors.ts';
import type { AuditLog } from './log.ts';
import type { CollectorMetrics } from './metrics.ts';
import { registerQueryRoutes } from './query-routes.ts';
import { SourceRegistry } from './sources.ts';
import {
  DEFAULT_REPORT_INTERVAL_MS,
  SPOOL_REPORT_FIELDS,
  SPOOL_REPORT_HEADER,
  SpoolReportError,
  checkSpoolReport,
  parseSpoolReport,
} from '../spool-report.ts';
import type { SpoolReport } from '../spool-report.ts';

/** The peer check the collector needs: ca/'s `createPeerVerifier(...)` result satisfies it. */
export interface CollectorPeerVerifier {
  /** Throws an error with a `code` when the peer is refused. */
  verifySocket(socket: TLSSocket): { readonly spiffeId: SpiffeId };
}

/** Everything {@link buildCollectorApp} needs; only `startCollector` fills defaults. */
export interface CollectorDeps {
  readonly log: AuditLog;
  readonly registry: Registry;
  readonly peerVerifier: CollectorPeerVerifier;
  readonly logger: Logger;
  readonly clock: () => Date;
  /** The collector's own SPIFFE ID: `source` of the events it records about its own decisions. */
  readonly selfId: string;
  /** Verifier key of the checkpoint signer, served at `GET /v1/checkpoints/key`. */
  readonly verifierKey: string;
  readonly limits: {
    readonly bodyBytes: number;
    readonly batchEvents: number;
    readonly queryRecords: number;
    /** Body bytes one source may post per `sourceInterval` ms (default: unbounded). */
    readonly sourceBytes?: number;
    readonly sourceInterval?: number;
    /** Live tails one caller may hold open at once (default 4). */
    readonly liveTails?: number;
    /** Sources whose spool reports are kept in memory (default 10,000; the least recently heard from goes first). */
    readonly sources?: number;
  };
  /** Called after each durable append (the checkpoint policy listens here). */
  readonly onAppended?: (count: number) => void;
  /** HTTPS options (key, cert, requestCert…); without them the app is plain HTTP, for `inject()` tests. */
  readonly tls?: SecureServerOptions;
  /** When given, requests are counted and `GET /metrics` (registered peers) serves the registry. */
  readonly metrics?: CollectorMetrics;
  /** The checks of `GET /readyz` (core/health.ts); without them it answers 200 with none. */
  readonly readiness?: Readonly<Record<string, ReadinessCheck>>;
  /** Live tails (`GET /v1/events/stream`): per-caller bound, heartbeat and poll (ms); defaults 4, 15 s, 1 s. */
  readonly tail?: {
    readonly streamsPerCaller?: number;
    readonly heartbeatMs?: number;
    readonly pollMs?: number;
  };
}

/** HTTP status of each error code the collector answers with. */
const STATUS: Partial<Record<AuditErrorCode, number>> = {
  ERR_AUDIT_PEER_REFUSED: 401,
  ERR_AUDIT_PEER_NOT_REGISTERED: 403,
  ERR_AUDIT_FORBIDDEN: 403,
  ERR_AUDIT_BAD_REQUEST: 400,
  ERR_AUDIT_NOT_FOUND: 404,
  ERR_AUDIT_PROOF_RANGE: 400,
  ERR_AUDIT_STORE_UNAVAILABLE: 503,
  ERR_AUDIT_STORE_CLOSED: 503,
  ERR_AUDIT_IDEMPOTENCY_MISMATCH: 422,
  ERR_AUDIT_IDEMPOTENCY_IN_FLIGHT: 409,
  ERR_AUDIT_RATE_LIMITED: 429,
};

/** `Idempotency-Key`: 1–128 characters of `[A-Za-z0-9._:-]`. */
const IDEMPOTENCY_KEY = /^[A-Za-z0-9._:-]{1,128}$/;

type Access = 'public' | 'workload' | 'reader';

/**
 * Builds the collector's fastify app (docs/audit.md), not listening. Every route but
 * `/healthz` needs a verified, registered peer, checked in `onRequest` before any body is read;
 * queries and inclusion proofs also need role `audit-reader`, and refusals of those are
 * themselves appended to the log. Errors become `{error, message}` bodies in one handler.
 */
export function buildCollectorApp(deps: CollectorDeps): FastifyInstance {
  const { log, registry, peerVerifier, limits } = deps;
  const callers = new WeakMap<IncomingMessage, Workload>();
  /** SHA-256 of each POST body as received: what an Idempotency-Key is bound to. */
  const bodyHashes = new WeakMap<IncomingMessage, string>();
  /** Keys being appended by this collector right now (`source key`). */
  const inFlight = new Set<string>();
  /** Bytes each source posted in the current interval (fixed windows). */
  let window = { start: deps.clock().getTime(), spent: new Map<string, number>() };
  /** Every source heard from since start, with its latest spool report (GET /v1/sources). */
  const sources = new SourceRegistry({
    max: limits.sources ?? 10_000,
    defaultIntervalMs: DEFAULT_REPORT_INTERVAL_MS,
    clock: deps.clock,
  });
  /** Sources already warned about a spool report header the collector could not read (once each). */
  const badReportWarned = new Set<string>();

  const app = Fastify({
    ...(deps.tls ? { https: deps.tls } : {}),
    loggerInstance: deps.logger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: limits.bodyBytes,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    return503OnClosing: true,
    requestIdHeader: false,
    // What the HTTP parser refuses gets this API's `{error, message}` body, not fastify's default.
    clientErrorHandler: (err: Error & { code?: string }, socket: Duplex) => {
      const answer = describeClientError(err);
      if (!answer) return void socket.destroy();
      endWithHttpError(
        socket,
        answer.status,
        JSON.stringify({ error: 'ERR_AUDIT_BAD_REQUEST', message: answer.message }),
      );
    },
  }) as unknown as FastifyInstance;

  // The OpenAPI document of every route below (GET /openapi.json; decision 0058): set up by a
  // direct call so that its onRoute hook is in place before the first route (this builder is
  // synchronous; app.register would load it after the routes are added).
  fastifySwagger(
    app,
    openApiOptions({
      title: 'Portcullis audit collector',
      description: 'Tamper-evident audit log: events in, queries, checkpoints and proofs out (docs/audit.md)',
    }),
    (err) => {
      if (err) throw err;
    },
  );

  // JSON only (text/plain is refused with 415), parsed by fastify's own safe parser, and hashed as
  // received so that a retried batch is recognised byte for byte.
  const jsonParser = app.getDefaultJsonParser('error', 'error');
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    const buf = body as Buffer;
    bodyHashes.set(req.raw, createHash('sha256').update(buf).digest('hex'));
    jsonParser(req, buf.toString('utf8'), done);
  });

  const accessOf = (req: FastifyRequest): Access =>
    (req.routeOptions.config as { access?: Access } | undefined)?.access ?? 'workload';

  /** Records the collector's own decision about a control-plane read. */
  const audit = async (req: FastifyRequest, subject: string, allow: boolean, status: number) => {
    const event: AuditEvent = {
      type: 'admin.audit.read',
      time: deps.clock().toISOString(),
      source: deps.selfId,
      subject,
      target: deps.selfId,
      action: `${req.method} ${req.url.split('?')[0]}`.slice(0, 4096),
      decision: allow ? 'allow' : 'deny',
      reason: allow ? 'allowed' : 'ERR_AUDIT_FORBIDDEN',
      status,
    };
    await log.append([event]);
    appended(1);
  };
  /** After each durable append: the checkpoint policy, and the live tails. */
  const appended = (count: number) => {
    deps.onAppended?.(count);
    tails.wake();
  };

  app.addHook('onRequest', async (req) => {
    const access = accessOf(req);
    if (access === 'public') return;
    let peer;
    try {
      peer = peerVerifier.verifySocket(req.raw.socket as TLSSocket);
    } catch (err) {
      const reason = (err as { code?: string }).code ?? 'unknown';
      throw new CollectorRequestError(
        'ERR_AUDIT_PEER_REFUSED',
        `the client certificate was refused (${reason})`,
        {
          cause: err,
        },
      );
    }
    const workload = registry.byId(peer.spiffeId.uri);
    if (!workload)
      throw new CollectorRequestError(
        'ERR_AUDIT_PEER_NOT_REGISTERED',
        `${peer.spiffeId.uri} is not a registered workload`,
      );
    callers.set(req.raw, workload);
    if (req.method === 'POST' && req.routeOptions.url === '/v1/events') spend(workload.spiffeId.uri, req);
    if (access === 'reader' && !workload.roles.includes('audit-reader')) {
      await audit(req, workload.spiffeId.uri, false, 403);
      throw new CollectorRequestError('ERR_AUDIT_FORBIDDEN', 'this route needs role audit-reader');
    }
  });

  /** Charges a POST to its source's byte budget before the body is read; 429 past it. */
  function spend(source: string, req: FastifyRequest): void {
    const budget = limits.sourceBytes;
    if (budget === undefined) return;
    const interval = limits.sourceInterval ?? 1000;
    const now = deps.clock().getTime();
    if (now - window.start >= interval)
      window = { start: now - ((now - window.start) % interval), spent: new Map() };
    const declared = Number(req.headers['content-length']);
    // Without a length (chunked), the worst case is charged: the body limit.
    const bytes = Number.isSafeInteger(declared) && declared >= 0 ? declared : limits.bodyBytes;
    const spent = window.spent.get(source) ?? 0;
    if (spent > 0 && spent + bytes > budget) {
      deps.metrics?.rateLimited.inc();
      const retryAfter = Math.max(1, Math.ceil((window.start + interval - now) / 1000));
      throw new CollectorRequestError(
        'ERR_AUDIT_RATE_LIMITED',
        `${source} posted more than ${budget} bytes in ${interval} ms; retry after ${retryAfter} s`,
        { retryAfterSeconds: retryAfter },
      );
    }
    window.spent.set(source, spent + bytes);
  }

  const { metrics } = deps;
  if (metrics) {
    app.addHook('onResponse', (req, reply, done) => {
      metrics.requests.inc({ route: req.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) });
      done();
    });
  }

  app.setErrorHandler((err: FastifyError, req, reply) => {
    const traceId = parseTraceparent(req.headers.traceparent)?.traceId;
    let status: number;
    let code: string;
    let message: string;
    if (err instanceof PortcullisError && STATUS[err.code as AuditErrorCode]) {
      status = STATUS[err.code as AuditErrorCode]!;
      code = err.code;
      message = err.message;
    } else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      [status, code, message] = [413, 'ERR_AUDIT_BAD_REQUEST', `body exceeds ${limits.bodyBytes} bytes`];
    } else if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      [status, code, message] = [415, 'ERR_AUDIT_BAD_REQUEST', 'body must be application/json'];
    } else if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
      [status, code, message] = [err.statusCode, 'ERR_AUDIT_BAD_REQUEST', err.message.split('\n')[0]!];
    } else {
      [status, code, message] = [500, 'ERR_AUDIT_INTERNAL', 'internal error'];
    }
    if (status >= 500 && status !== 503)
      req.log.error({ err, ...(traceId ? { traceId } : {}) }, 'collector request failed');
    const retryAfter = (err as { retryAfterSeconds?: number }).retryAfterSeconds;
    if (retryAfter !== undefined) void reply.header('retry-after', String(retryAfter));
    void reply.code(status).header('cache-control', 'no-store').send({ error: code, message });
  });

  app.setNotFoundHandler((req, reply) => {
    reply.send(
      new CollectorRequestError(
        'ERR_AUDIT_NOT_FOUND',
        `no route ${req.method} ${req.url.split('?')[0]!.slice(0, 256)}`,
      ),
    );
  });

  app.get('/healthz', { config: { access: 'public', doc: D.healthz } }, async () => ({ status: 'ok' }));
  // Readiness, as on every server (core/health.ts): no client certificate needed.
  app.get('/readyz', { config: { access: 'public', doc: D.readyz } }, (_req, reply) => {
    const { status, body } = readinessReport(deps.readiness ?? {});
    return reply.code(status).header('cache-control', 'no-store').type('application/json').send(body);
  });

  if (metrics) {
    app.get('/metrics', { config: { doc: D.metrics } }, async (_req, reply) => {
      void reply.type(metrics.registry.contentType).header('cache-control', 'no-store');
      return metrics.registry.metrics();
    });
  }

  app.post('/v1/events', { config: { doc: D.postEvents } }, async (req, reply) => {
    const workload = callers.get(req.raw)!;
    const source = workload.spiffeId.uri;
    const key = idempotencyKey(req.headers['idempotency-key']);
    const events = parseBatch(req.body, limits.batchEvents, source);
    const report = batchReport(source, req.headers[SPOOL_REPORT_HEADER], reply);
    if (key === undefined) {
      const records = await log.append(events);
      appended(records.length);
      sources.sawBatch(source, events.length, report);
      return { accepted: records.length, firstSeq: records[0]!.seq, lastSeq: records.at(-1)!.seq };
    }
    const bodyHash = bodyHashes.get(req.raw)!;
    const id = `${source} ${key}`;
    if (inFlight.has(id))
      throw new CollectorRequestError(
        'ERR_AUDIT_IDEMPOTENCY_IN_FLIGHT',
        'a request with this Idempotency-Key is still being appended; retry',
        { retryAfterSeconds: 1 },
      );
    inFlight.add(id);
    try {
      const claim = { source, key, bodyHash };
      // Known already (also from before a crash, or from another collector): answer as then.
      // The store looks the key up in the same group commit that would append the batch, so a
      // batch stored before a crash, or by another collector, is answered as it was then.
      const outcome = await log.appendOnce(events, claim);
      if (outcome.replay) {
        if (outcome.replay.bodyHash !== bodyHash)
          throw new CollectorRequestError(
            'ERR_AUDIT_IDEMPOTENCY_MISMATCH',
            'this Idempotency-Key was used for a different batch',
          );
        metrics?.replays.inc();
        sources.sawBatch(source, events.length, report);
        void reply.header('idempotent-replayed', 'true');
        const { firstSeq, lastSeq } = outcome.replay;
        return { accepted: lastSeq - firstSeq + 1, firstSeq, lastSeq };
      }
      const records = outcome.records!;
      appended(records.length);
      sources.sawBatch(source, events.length, report);
      return { accepted: records.length, firstSeq: records[0]!.seq, lastSeq: records.at(-1)!.seq };
    } finally {
      inFlight.delete(id);
    }
  });

  /**
   * The spool report a batch carries, if any. One the collector cannot read is ignored, never a
   * reason to refuse the events (a report is advice; the events are the record): logged once per
   * source and answered with a `portcullis-spool-refused` header naming the problem.
   */
  function batchReport(
    source: string,
    header: string | string[] | undefined,
    reply: FastifyReply,
  ): SpoolReport | undefined {
    if (header === undefined) return undefined;
    try {
      return parseSpoolReport(header);
    } catch (err) {
      if (!(err instanceof SpoolReportError)) throw err;
      deps.metrics?.spoolReportsRefused.inc();
      void reply.header('portcullis-spool-refused', err.message.slice(0, 200));
      if (!badReportWarned.has(source) && badReportWarned.size < 10_000) {
        badReportWarned.add(source);
        deps.logger.warn({ source, reason: err.message }, 'spool report ignored (events accepted)');
      }
      return undefined;
    }
  }

  // A client's spool report when it has no batch to carry it (decision 0096): a source reports
  // for itself only, as its verified certificate names it.
  app.post('/v1/sources/report', { config: { doc: D.postSourceReport }, bodyLimit: 4096 }, async (req) => {
    const source = callers.get(req.raw)!.spiffeId.uri;
    const body = req.body;
    if (body === null || typeof body !== 'object' || Array.isArray(body))
      throw new CollectorRequestError('ERR_AUDIT_BAD_REQUEST', 'body must be a spool report object');
    const { source: claimed, ...rest } = body as Record<string, unknown>;
    if (claimed !== undefined && claimed !== source) {
      deps.metrics?.spoolReportsRefused.inc();
      throw new CollectorRequestError(
        'ERR_AUDIT_FORBIDDEN',
        `${source} may report for itself only, not for ${String(claimed).slice(0, 256)}`,
      );
    }
    let report: SpoolReport;
    try {
      const unknown = Object.keys(rest).find((k) => !(SPOOL_REPORT_FIELDS as string[]).includes(k));
      if (unknown !== undefined) throw new SpoolReportError(`unknown field "${unknown.slice(0, 64)}"`);
      report = checkSpoolReport(rest);
    } catch (err) {
      deps.metrics?.spoolReportsRefused.inc();
      throw new CollectorRequestError('ERR_AUDIT_BAD_REQUEST', (err as Error).message);
    }
    sources.sawReport(source, report);
    return { source, receivedAt: deps.clock().toISOString() };
  });

  // Pages, aggregates, the live tail and the status (docs/audit.md § Query API).
  const tails = registerQueryRoutes(app, {
    log,
    sources,
    clock: deps.clock,
    maxRecords: limits.queryRecords,
    streamsPerCaller: limits.liveTails ?? 4,
    heartbeatMs: deps.tail?.heartbeatMs ?? 15_000,
    pollMs: deps.tail?.pollMs ?? 1000,
    callerOf: (req) => callers.get(req.raw)!.spiffeId.uri,
    audited: (req) => audit(req, callers.get(req.raw)!.spiffeId.uri, true, 200),
  });

  app.get('/v1/checkpoints/latest', { config: { doc: D.latestCheckpoint } }, async (_req, reply) => {
    const { note } = log.latest() ?? (await log.checkpoint());
    void reply.type('text/plain; charset=utf-8').header('cache-control', 'no-store');
    return note;
  });

  app.get('/v1/checkpoints/key', { config: { doc: D.checkpointKey } }, async (_req, reply) => {
    void reply.type('text/plain; charset=utf-8');
    return `${deps.verifierKey}\n`;
  });

  app.get('/v1/proofs/inclusion', { config: { access: 'reader', doc: D.inclusion } }, async (req, reply) => {
    const q = req.query as Record<string, unknown>;
    const seq = intParam(q, 'seq', true)!;
    const size = intParam(q, 'size', true)!;
    if (seq >= size) throw new CollectorRequestError('ERR_AUDIT_BAD_REQUEST', 'seq must be below size');
    const { record, proof } = await log.inclusion(seq, size);
    void reply.header('cache-control', 'no-store');
    return { seq, size, record, proof: proof.map((p) => p.toString('base64')) };
  });

  app.get('/v1/proofs/consistency', { config: { doc: D.consistency } }, async (req) => {
    const q = req.query as Record<string, unknown>;
    const from = intParam(q, 'from', true)!;
    const to = intParam(q, 'to', true)!;
    if (from > to) throw new CollectorRequestError('ERR_AUDIT_BAD_REQUEST', 'from must not exceed to');
    const proof = await log.consistency(from, to);
    return { from, to, proof: proof.map((p) => p.toString('base64')) };
  });

  let openApiBody: string | undefined;
  app.get('/openapi.json', { config: { access: 'public', doc: D.openapi } }, (_req, reply) => {
    openApiBody ??= JSON.stringify(app.swagger());
    return reply.header('cache-control', 'no-cache').type('application/json').send(openApiBody);
  });

  return app;
}

/** The `Idempotency-Key` header, if given; 400 unless 1–128 characters of `[A-Za-z0-9._:-]`. */
function idempotencyKey(value: string | string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !IDEMPOTENCY_KEY.test(value))
    throw new CollectorRequestError(
      'ERR_AUDIT_BAD_REQUEST',
      'Idempotency-Key must be given once, 1-128 characters of A-Z a-z 0-9 . _ : -',
    );
  return value;
}

/** Parses `{events: [...]}`, validating each event and stamping `source` with the peer's ID. */
function parseBatch(body: unknown, max: number, source: string): AuditEvent[] {
  const bad = (why: string) => new CollectorRequestError('ERR_AUDIT_BAD_REQUEST', why);
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    throw bad('body must be {"events": [...]}');
  const keys = Object.keys(body);
  if (keys.length !== 1 || keys[0] !== 'events') throw bad('body must be {"events": [...]}');
  const list = (body as { events: unknown }).events;
  if (!Array.isArray(list) || list.length === 0) throw bad('events must be a non-empty list');
  if (list.length > max) throw bad(`at most ${max} events per request`);
  return list.map((raw, i) => {
    let event: AuditEvent;
    try {
      // A client cannot speak for another: whatever source it wrote is replaced by its own.
      event = { ...parseAuditEvent(raw), source };
    } catch (err) {
      throw bad(`events[${i}]: ${(err as Error).message}`);
    }
    if (RESERVED_EVENT_TYPE.test(event.type))
      throw new CollectorRequestError(
        'ERR_AUDIT_FORBIDDEN',
        `events[${i}]: type ${event.type} is written by the collector only`,
      );
    return event;
  });
}

function intParam(q: Record<string, unknown>, key: string, required: boolean): number | undefined {
  const v = q[key];
  if (v === undefined) {
    if (required) throw new CollectorRequestError('ERR_AUDIT_BAD_REQUEST', `${key} is required`);
    return undefined;
  }
  if (typeof v !== 'string' || !/^(0|[1-9][0-9]{0,15})$/.test(v))
    throw new CollectorRequestError('ERR_AUDIT_BAD_REQUEST', `${key} must be a non-negative integer`);
  return Number(v);
}
