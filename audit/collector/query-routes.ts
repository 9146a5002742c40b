// The collector's query API (docs/audit.md § Query API): newest-first pages with an opaque
// cursor, aggregates, a Server-Sent Events tail and the integrity status. Registered by
// buildCollectorApp beside the other routes, behind the same mTLS peer check and role.
import type { FastifyContextConfig, FastifyInstance, FastifyRequest } from 'fastify';
import { jsonResponse } from '../../core/index.ts';
import type { JsonSchema, ResponseDoc, RouteDoc } from '../../core/index.ts';
import { CollectorRequestError } from '../errors.ts';
import type { AuditRecord } from '../record.ts';
import type { AggregateInterval, FilterField, RecordFilter } from '../query-filter.ts';
import { FILTER_FIELDS, INTERVALS } from '../query-filter.ts';
import { encodeCursor, readCursor } from '../query-cursor.ts';
import type { AuditLog } from './log.ts';
import { COLLECTOR_ERROR_SCHEMA, COLLECTOR_RECORD_SCHEMA, SPOOL_REPORT_SCHEMA } from './route-docs.ts';
import { STALE_AFTER_INTERVALS } from './sources.ts';
import type { SourceRegistry } from './sources.ts';

/** What the query routes need from the collector app. */
export interface QueryRouteDeps {
  readonly log: AuditLog;
  /** The sources heard from since start and their spool reports (`GET /v1/sources`). */
  readonly sources: SourceRegistry;
  readonly clock: () => Date;
  /** Most records per page (`limits.queryRecords`). */
  readonly maxRecords: number;
  /** Live tails one caller may hold open at once. */
  readonly streamsPerCaller: number;
  /** Comment heartbeat interval of a tail (ms). */
  readonly heartbeatMs: number;
  /** How often a tail looks for records other collectors appended (ms). */
  readonly pollMs: number;
  /** The verified caller's SPIFFE ID. */
  callerOf(req: FastifyRequest): string;
  /** Records an allowed read in the log (`admin.audit.read`). */
  audited(req: FastifyRequest): Promise<void>;
}

/** Lets tails know that records were appended (by this collector). */
export interface TailNotifier {
  wake(): void;
}

const bad = (why: string) => new CollectorRequestError('ERR_AUDIT_BAD_REQUEST', why);

const text = { type: 'string', minLength: 1, maxLength: 2048 } as const;
const instant = { type: 'string', minLength: 1, maxLength: 64, description: 'RFC 3339 instant' } as const;
const FILTER_PROPERTIES = {
  type: { ...text, description: 'event type, e.g. authz.decision' },
  source: {
    ...text,
    description: "SPIFFE ID of the emitting workload (an authz.decision's deciding sidecar)",
  },
  subject: { ...text, description: "SPIFFE ID of who acted (an authz.decision's caller)" },
  decision: { type: 'string', enum: ['allow', 'deny'] },
  rule: { ...text, maxLength: 256, description: 'policy rule that decided' },
  reason: { ...text, maxLength: 256, description: 'reason code, e.g. ERR_SIDECAR_POLICY_DENIED' },
  since: { ...instant, description: 'records appended at or after this RFC 3339 instant' },
  until: { ...instant, description: 'records appended before this RFC 3339 instant' },
} as const;
const uint = { type: 'string', pattern: '^(0|[1-9][0-9]{0,15})$' } as const;

/** The error bodies (`{error, message}`) as fast-json-stringify writes them: the documented schema. */
const ERRORS = {
  400: COLLECTOR_ERROR_SCHEMA,
  401: COLLECTOR_ERROR_SCHEMA,
  403: COLLECTOR_ERROR_SCHEMA,
  429: COLLECTOR_ERROR_SCHEMA,
  503: COLLECTOR_ERROR_SCHEMA,
};

/**
 * The OpenAPI description of a query route (`config.doc`, decision 0058): its summary, the same
 * request schemas Fastify validates with, the same 200 schema, and one response per status the
 * route really answers.
 */
function queryDoc(
  summary: string,
  parts: Pick<RouteDoc, 'querystring' | 'headers'>,
  ok: ResponseDoc,
  more: Readonly<Record<string, ResponseDoc>> = {},
): RouteDoc {
  const error = (why: string) => jsonResponse(why, COLLECTOR_ERROR_SCHEMA);
  return {
    summary,
    tags: ['query'],
    ...parts,
    response: {
      200: ok,
      400: error('a parameter is unknown, repeated or out of range (the message names it)'),
      401: error('no client certificate, or one the collector refuses'),
      403: error('not a registered workload, or without role audit-reader (the refusal is audited)'),
      ...more,
      '5XX': error('the store cannot serve the request now'),
    },
  };
}

/** Refuses query parameters a route does not know, before schema validation could drop them. */
function onlyKnown(keys: readonly string[]) {
  const known = new Set(keys);
  return async (req: FastifyRequest) => {
    for (const k of Object.keys(req.query as object))
      if (!known.has(k)) throw bad(`unknown parameter "${k}"`);
  };
}

type Query = Record<string, unknown>;

function str(q: Query, k: string, max = 2048): string | undefined {
  const v = q[k];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v.length === 0 || v.length > max)
    throw bad(`${k} must be given once, non-empty`);
  return v;
}

function uintParam(q: Query, k: string): number | undefined {
  const v = q[k];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !/^(0|[1-9][0-9]{0,15})$/.test(v))
    throw bad(`${k} must be a non-negative integer`);
  return Number(v);
}

/** The filter fields and time range of a query string (all routes share them). */
function parseFilterFields(q: Query): Omit<RecordFilter, 'limit'> {
  const time = (k: string) => {
    const v = str(q, k, 64);
    if (
      v !== undefined &&
      (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/i.test(v) ||
        Number.isNaN(Date.parse(v)))
    )
      throw bad(`${k} must be an RFC 3339 instant such as 2026-12-06T00:00:00Z`);
    return v;
  };
  const decision = str(q, 'decision');
  if (decision !== undefined && decision !== 'allow' && decision !== 'deny')
    throw bad('decision must be allow or deny');
  const since = time('since');
  const until = time('until');
  if (since !== undefined && until !== undefined && Date.parse(since) >= Date.parse(until))
    throw bad('since must be before until');
  return {
    since,
    until,
    type: str(q, 'type'),
    source: str(q, 'source'),
    subject: str(q, 'subject'),
    decision: decision as 'allow' | 'deny' | undefined,
    rule: str(q, 'rule', 256),
    reason: str(q, 'reason', 256),
  };
}

function decodeCursor(cursor: string, order: 'asc' | 'desc', filter: Omit<RecordFilter, 'limit'>): number {
  try {
    return readCursor(cursor, order, filter);
  } catch (err) {
    throw bad((err as Error).message);
  }
}

/** `groupBy=a,b`: distinct filter fields. */
function parseGroupBy(v: string | undefined): FilterField[] {
  if (v === undefined) return [];
  const fields = v.split(',');
  for (const f of fields)
    if (!(FILTER_FIELDS as readonly string[]).includes(f))
      throw bad(`groupBy: "${f.slice(0, 64)}" is not one of ${FILTER_FIELDS.join(', ')}`);
  if (new Set(fields).size !== fields.length) throw bad('groupBy names a field twice');
  return fields as FilterField[];
}

/** Most time buckets one aggregate may span. */
const MAX_BUCKETS = 10_000;
/** Default range of an aggregate without `since`. */
const DEFAULT_RANGE_MS = 24 * 3_600_000;

/** The routes' access level (app.ts' onRequest hook reads it): the `audit-reader` role. */
const reader = (
  doc: RouteDoc,
): FastifyContextConfig & { readonly access: 'reader'; readonly doc: RouteDoc } => ({
  access: 'reader',
  doc,
});

/** Registers `GET /v1/events`, `/v1/events/stream`, `/v1/aggregates` and `/v1/status`. */
export function registerQueryRoutes(app: FastifyInstance, deps: QueryRouteDeps): TailNotifier {
  const { log } = deps;
  const waiting = new Set<() => void>();
  const streams = new Map<string, number>();
  const open = new Set<{ end(): Promise<void> }>();

  const eventsKeys = [...Object.keys(FILTER_PROPERTIES), 'order', 'limit', 'cursor', 'fromSeq'];
  const eventsQuery: JsonSchema = {
    type: 'object',
    additionalProperties: false,
    properties: {
      ...FILTER_PROPERTIES,
      order: {
        type: 'string',
        enum: ['asc', 'desc'],
        description: 'asc (default): oldest first; desc: newest first',
      },
      limit: {
        ...uint,
        description: `records per page (1 to limits.queryRecords, default ${deps.maxRecords})`,
      },
      cursor: { type: 'string', maxLength: 256, description: 'the "next" of the previous page' },
      fromSeq: {
        ...uint,
        description: 'ascending only: first seq to consider (kept for compatibility)',
      },
    },
  };
  // The page is the stored lines as they are (not serialized by Fastify): described with the full
  // record schema, the events posted as the audit event's zod schema.
  const eventsPage: JsonSchema = {
    type: 'object',
    additionalProperties: false,
    required: ['records', 'nextSeq', 'next'],
    properties: {
      records: { type: 'array', items: COLLECTOR_RECORD_SCHEMA },
      nextSeq: {
        type: ['integer', 'null'],
        description: 'ascending: fromSeq of the next page, or null',
      },
      next: {
        type: ['string', 'null'],
        description: 'cursor of the next page in the same order, or null',
      },
    },
  };
  app.get(
    '/v1/events',
    {
      config: reader(
        queryDoc(
          'Audit records matching the filters, one page at a time (the query is itself audited)',
          { querystring: eventsQuery },
          jsonResponse('the page, and the cursor of the next one', eventsPage),
        ),
      ),
      preValidation: onlyKnown(eventsKeys),
      schema: { querystring: eventsQuery, response: { 200: eventsPage, ...ERRORS } },
    },
    async (req, reply) => {
      const q = req.query as Query;
      const fields = parseFilterFields(q);
      const order = (str(q, 'order') ?? 'asc') as 'asc' | 'desc';
      if (order !== 'asc' && order !== 'desc') throw bad('order must be asc or desc');
      const limit = uintParam(q, 'limit') ?? deps.maxRecords;
      if (limit < 1 || limit > deps.maxRecords) throw bad(`limit must be between 1 and ${deps.maxRecords}`);
      const cursor = str(q, 'cursor', 256);
      let fromSeq = uintParam(q, 'fromSeq');
      if (fromSeq !== undefined && cursor !== undefined) throw bad('give cursor or fromSeq, not both');
      if (fromSeq !== undefined && order === 'desc')
        throw bad('fromSeq pages ascending; with order=desc use cursor');
      let beforeSeq: number | undefined;
      if (cursor !== undefined) {
        const at = decodeCursor(cursor, order, fields);
        if (order === 'asc') fromSeq = at;
        else beforeSeq = at;
      }
      const filter: RecordFilter = { ...fields, order, limit, fromSeq, beforeSeq };
      // The stored lines are the records' JSON: passed on as they are, not parsed and serialized
      // again (the response schema describes them; decision 0075).
      const lines = await log.store().queryLines(filter);
      await deps.audited(req);
      const full = lines.length === limit;
      const last = lines.at(-1);
      const nextSeq = order === 'asc' && full ? last!.seq + 1 : null;
      const next = full ? encodeCursor(order, order === 'asc' ? last!.seq + 1 : last!.seq, fields) : null;
      void reply.header('cache-control', 'no-store').type('application/json; charset=utf-8');
      return `{"records":[${lines.map((l) => l.line).join(',')}],"nextSeq":${JSON.stringify(nextSeq)},"next":${JSON.stringify(next)}}`;
    },
  );

  const aggKeys = [...Object.keys(FILTER_PROPERTIES), 'groupBy', 'interval'];
  const aggQuery: JsonSchema = {
    type: 'object',
    additionalProperties: false,
    properties: {
      ...FILTER_PROPERTIES,
      groupBy: {
        type: 'string',
        maxLength: 128,
        description: `comma-separated fields among ${FILTER_FIELDS.join(', ')}`,
      },
      interval: {
        type: 'string',
        enum: Object.keys(INTERVALS),
        description: 'time buckets (UTC, epoch-aligned)',
      },
    },
  };
  const aggregates: JsonSchema = {
    type: 'object',
    required: ['since', 'until', 'groups'],
    properties: {
      since: { type: 'string' },
      until: { type: 'string' },
      groups: {
        type: 'array',
        items: {
          type: 'object',
          required: ['key', 'count'],
          properties: {
            key: {
              type: 'object',
              properties: Object.fromEntries(FILTER_FIELDS.map((f) => [f, { type: ['string', 'null'] }])),
            },
            bucket: { type: 'string', description: 'RFC 3339 start of the time bucket' },
            count: { type: 'integer' },
          },
        },
      },
    },
  };
  app.get(
    '/v1/aggregates',
    {
      config: reader(
        queryDoc(
          'Counts of the matching records, grouped by fields and time buckets (audited)',
          { querystring: aggQuery },
          jsonResponse(
            'the range counted (without since: the 24 hours before until) and the groups',
            aggregates,
          ),
        ),
      ),
      preValidation: onlyKnown(aggKeys),
      schema: { querystring: aggQuery, response: { 200: aggregates, ...ERRORS } },
    },
    async (req, reply) => {
      const q = req.query as Query;
      const fields = parseFilterFields(q);
      const groupBy = parseGroupBy(str(q, 'groupBy', 128));
      const interval = str(q, 'interval') as AggregateInterval | undefined;
      if (interval !== undefined && !(interval in INTERVALS))
        throw bad(`interval must be one of ${Object.keys(INTERVALS).join(', ')}`);
      // A range is always bounded: without since, the last 24 hours before until (or now).
      const until = fields.until ?? deps.clock().toISOString();
      const since = fields.since ?? new Date(Date.parse(until) - DEFAULT_RANGE_MS).toISOString();
      if (Date.parse(since) >= Date.parse(until)) throw bad('since must be before until');
      if (interval && (Date.parse(until) - Date.parse(since)) / INTERVALS[interval] > MAX_BUCKETS)
        throw bad(
          `more than ${MAX_BUCKETS} ${interval} buckets; narrow since..until or take a longer interval`,
        );
      const groups = await log.store().aggregate({ filter: { ...fields, since, until }, groupBy, interval });
      await deps.audited(req);
      void reply.header('cache-control', 'no-store');
      return { since, until, groups };
    },
  );

  const streamQuery: JsonSchema = {
    type: 'object',
    additionalProperties: false,
    properties: FILTER_PROPERTIES,
  };
  const streamHeaders: JsonSchema = {
    type: 'object',
    properties: { 'last-event-id': { ...uint, description: 'resume after this seq' } },
  };
  app.get(
    '/v1/events/stream',
    {
      config: reader(
        queryDoc(
          'Live tail of the matching records as Server-Sent Events (resumes after Last-Event-ID; audited)',
          { querystring: streamQuery, headers: streamHeaders },
          {
            description:
              'the stream: `retry: 2000`, then per record `id: <seq>`, `event: record`, `data: <record JSON>`; a comment heartbeat every 15 s',
            content: { 'text/event-stream': { schema: { type: 'string' } } },
          },
          {
            429: jsonResponse(
              `the caller already holds limits.liveTails streams (default 4); Retry-After says when to try again`,
              COLLECTOR_ERROR_SCHEMA,
            ),
          },
        ),
      ),
      preValidation: onlyKnown(Object.keys(FILTER_PROPERTIES)),
      schema: { querystring: streamQuery, headers: streamHeaders, response: ERRORS },
    },
    async (req, reply) => {
      const q = req.query as Query;
      const fields = parseFilterFields(q);
      const lastId = req.headers['last-event-id'];
      let after: number;
      if (lastId !== undefined) {
        if (typeof lastId !== 'string' || !/^(0|[1-9][0-9]{0,15})$/.test(lastId))
          throw bad('Last-Event-ID must be the seq of a record (a non-negative integer)');
        after = Number(lastId);
      } else {
        after = (await log.store().size()) - 1;
      }
      const caller = deps.callerOf(req);
      const held = streams.get(caller) ?? 0;
      if (held >= deps.streamsPerCaller)
        throw new CollectorRequestError(
          'ERR_AUDIT_RATE_LIMITED',
          `${caller} already holds ${held} live tails (at most ${deps.streamsPerCaller}); close one first`,
          { retryAfterSeconds: 5 },
        );
      // The slot is taken before the read is audited (an await): tails opened at the same moment
      // each see the ones before them.
      streams.set(caller, held + 1);
      const release = () => {
        const n = (streams.get(caller) ?? 1) - 1;
        if (n > 0) streams.set(caller, n);
        else streams.delete(caller);
      };
      try {
        await deps.audited(req);
      } catch (err) {
        release();
        throw err;
      }
      reply.hijack();
      const raw = reply.raw;
      raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      let closed = false;
      let wake: (() => void) | undefined;
      // Resolves once the response's last chunk is handed to the socket (or the socket is gone),
      // so that a shutdown does not cut the connection before the client reads the stream's end.
      const finished = new Promise<void>((resolve) => {
        raw.once('finish', resolve);
        raw.once('close', resolve);
      });
      const handle = {
        end() {
          if (!closed) {
            closed = true;
            wake?.();
            raw.end();
          }
          return finished;
        },
      };
      open.add(handle);
      raw.on('close', () => {
        closed = true;
        wake?.();
      });
      const heartbeat = setInterval(() => {
        if (!closed) raw.write(': heartbeat\n\n');
      }, deps.heartbeatMs);
      raw.write(`retry: 2000\n: tail after seq ${after}\n\n`);
      const send = async (r: AuditRecord) => {
        if (!raw.write(`id: ${r.seq}\nevent: record\ndata: ${JSON.stringify(r)}\n\n`))
          await new Promise<void>((resolve) => {
            raw.once('drain', resolve);
            raw.once('close', resolve);
          });
      };
      void (async () => {
        try {
          while (!closed) {
            const page = await log.store().query({ ...fields, fromSeq: after + 1, limit: 500 });
            for (const r of page) {
              if (closed) break;
              await send(r);
              after = r.seq;
            }
            if (page.length === 500 || closed) continue;
            // Until this collector appends, or a poll for what other collectors appended.
            await new Promise<void>((resolve) => {
              const timer = setTimeout(done, deps.pollMs);
              function done() {
                clearTimeout(timer);
                waiting.delete(done);
                wake = undefined;
                resolve();
              }
              wake = done;
              waiting.add(done);
            });
          }
        } catch (err) {
          req.log.warn({ err: (err as Error).message }, 'live tail ended by a store error');
        } finally {
          clearInterval(heartbeat);
          open.delete(handle);
          release();
          if (!raw.writableEnded) raw.end();
        }
      })();
    },
  );

  const status: JsonSchema = {
    type: 'object',
    required: ['store', 'checkpoint', 'chain', 'collector'],
    properties: {
      store: {
        type: 'object',
        properties: { kind: { type: 'string' }, records: { type: 'integer' } },
      },
      checkpoint: {
        type: ['object', 'null'],
        properties: {
          size: { type: 'integer' },
          rootHash: { type: 'string', description: 'base64 Merkle root' },
          chainHead: { type: 'string' },
          time: {
            type: ['string', 'null'],
            description: 'when this collector signed it (null: before its start)',
          },
          note: {
            type: 'string',
            description: 'the signed note, as /v1/checkpoints/latest serves it',
          },
        },
      },
      chain: {
        type: 'object',
        properties: {
          verifiedThrough: {
            type: 'integer',
            description: 'records hashed and chained by this collector',
          },
          ok: { type: 'boolean' },
          error: { type: 'string' },
        },
      },
      collector: {
        type: 'object',
        properties: {
          ready: { type: 'boolean' },
          liveTails: { type: 'integer' },
          uptimeSeconds: { type: 'number' },
        },
      },
    },
  };
  app.get(
    '/v1/status',
    {
      config: reader(
        queryDoc(
          "The log's size, latest checkpoint, chain verification and collector health",
          { querystring: { type: 'object', additionalProperties: false, properties: {} } },
          jsonResponse('the status (chain.ok false: the log failed verification)', status),
        ),
      ),
      preValidation: onlyKnown([]),
      schema: { response: { 200: status, ...ERRORS } },
    },
    async (_req, reply) => {
      let chain: { verifiedThrough: number; ok: boolean; error?: string };
      try {
        await log.sync();
        chain = { verifiedThrough: log.size, ok: true };
      } catch (err) {
        chain = { verifiedThrough: log.size, ok: false, error: (err as Error).message };
      }
      const latest = log.latest();
      void reply.header('cache-control', 'no-store');
      return {
        store: { kind: log.store().kind, records: await log.store().size() },
        checkpoint: latest
          ? {
              size: latest.body.size,
              rootHash: Buffer.from(latest.body.root).toString('base64'),
              chainHead: latest.body.chainHead,
              time: log.latestSignedAt()?.toISOString() ?? null,
              note: latest.note,
            }
          : null,
        chain,
        collector: { ready: !closing, liveTails: open.size, uptimeSeconds: Math.round(process.uptime()) },
      };
    },
  );

  const when = { type: 'string', format: 'date-time' } as const;
  const sourcesBody: JsonSchema = {
    type: 'object',
    additionalProperties: false,
    required: ['staleAfterIntervals', 'defaultIntervalMs', 'dropped', 'sources'],
    properties: {
      staleAfterIntervals: {
        type: 'integer',
        description: 'a source is stale after this many of its intervals',
      },
      defaultIntervalMs: {
        type: 'integer',
        description: 'interval assumed for a source that sends no reports',
      },
      dropped: {
        type: 'integer',
        description: 'sources forgotten since start because there were more than limits.sources',
      },
      sources: {
        type: 'array',
        items: {
          type: 'object',
          additionalProperties: false,
          required: [
            'source',
            'firstSeen',
            'lastSeen',
            'lastBatch',
            'batches',
            'events',
            'report',
            'backlogGrowing',
            'stale',
            'attention',
          ],
          properties: {
            source: { type: 'string', description: 'SPIFFE ID of the verified client certificate' },
            firstSeen: when,
            lastSeen: { ...when, description: 'the last batch or report' },
            lastBatch: { type: ['string', 'null'], format: 'date-time' },
            batches: { type: 'integer' },
            events: { type: 'integer' },
            report: {
              anyOf: [
                {
                  ...SPOOL_REPORT_SCHEMA,
                  required: [...(SPOOL_REPORT_SCHEMA.required as string[]), 'receivedAt'],
                  properties: {
                    ...(SPOOL_REPORT_SCHEMA.properties as Record<string, JsonSchema>),
                    receivedAt: when,
                  },
                },
                { type: 'null' },
              ],
              description: 'the latest spool report; null from a client that sends none',
            },
            backlogGrowing: {
              type: 'boolean',
              description:
                'the backlog is above what it was at least one interval before and its oldest event waited longer than an interval',
            },
            stale: {
              type: 'boolean',
              description: 'nothing arrived for staleAfterIntervals of its interval',
            },
            attention: {
              type: 'array',
              items: { type: 'string' },
              description:
                'why the source needs a look (stale, N missing, N lost, backlog growing, spool retrying|full|unwritable); empty when it does not',
            },
          },
        },
      },
    },
  };
  app.get(
    '/v1/sources',
    {
      config: reader(
        queryDoc(
          'Every source heard from since the collector started: last batch, latest spool report, stale or not',
          { querystring: { type: 'object', additionalProperties: false, properties: {} } },
          jsonResponse('the sources, most recently heard from first', sourcesBody),
        ),
      ),
      preValidation: onlyKnown([]),
      schema: { response: { 200: sourcesBody, ...ERRORS } },
    },
    async (_req, reply) => {
      void reply.header('cache-control', 'no-store');
      return {
        staleAfterIntervals: STALE_AFTER_INTERVALS,
        defaultIntervalMs: deps.sources.defaultIntervalMs,
        dropped: deps.sources.dropped,
        sources: deps.sources.list(),
      };
    },
  );

  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
    // Each tail ends cleanly; a client that does not read its end within a second is cut by the close.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all([...open].map((s) => s.end())),
      new Promise((resolve) => (timer = setTimeout(resolve, 1000))),
    ]);
    clearTimeout(timer);
  });

  return {
    wake() {
      for (const w of [...waiting]) w();
    },
  };
}
