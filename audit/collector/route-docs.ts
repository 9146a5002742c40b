// The OpenAPI description of every collector route (decision 0058), attached as `config.doc` and
// turned into /openapi.json by @fastify/swagger. The events posted are validated by the audit
// event's zod schema (core/audit-event.ts), whose JSON Schema the document holds; the proofs'
// query strings are parsed by hand in app.ts and described here as those parsers accept them.
// The query routes (query-routes.ts) carry their own `config.doc`, built from the schemas
// Fastify validates their requests with.
import {
  LIVENESS_SCHEMA,
  OPENAPI_ROUTE_DOC,
  READINESS_SCHEMA,
  auditEventSchema,
  fromZod,
  jsonResponse,
  textResponse,
} from '../../core/index.ts';
import type { JsonSchema, ResponseDoc, RouteDoc } from '../../core/index.ts';
import type { AuditErrorCode } from '../errors.ts';
import {
  REPORT_INTERVAL_MAX_MS,
  REPORT_INTERVAL_MIN_MS,
  SPOOL_REPORT_MAX_CHARS,
  SPOOL_STATES,
} from '../spool-report.ts';

const str: JsonSchema = { type: 'string' };
const seq: JsonSchema = { type: 'integer', minimum: 0 };
const uintParam: JsonSchema = { type: 'string', pattern: '^(0|[1-9][0-9]*)$' };
const base64List: JsonSchema = { type: 'array', items: { type: 'string', contentEncoding: 'base64' } };

/** The codes the collector answers with (audit/errors.ts): the `error` of every error body. */
const CODES = [
  'ERR_AUDIT_PEER_REFUSED',
  'ERR_AUDIT_PEER_NOT_REGISTERED',
  'ERR_AUDIT_FORBIDDEN',
  'ERR_AUDIT_BAD_REQUEST',
  'ERR_AUDIT_NOT_FOUND',
  'ERR_AUDIT_PROOF_RANGE',
  'ERR_AUDIT_STORE_UNAVAILABLE',
  'ERR_AUDIT_STORE_CLOSED',
  'ERR_AUDIT_IDEMPOTENCY_MISMATCH',
  'ERR_AUDIT_IDEMPOTENCY_IN_FLIGHT',
  'ERR_AUDIT_RATE_LIMITED',
  'ERR_AUDIT_INTERNAL',
] as const satisfies readonly (AuditErrorCode | 'ERR_AUDIT_INTERNAL')[];

/** Every error body: `{error, message}`. */
export const COLLECTOR_ERROR_SCHEMA: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['error', 'message'],
  properties: { error: { enum: [...CODES] }, message: str },
};
const serverErrors: Record<string, ResponseDoc> = {
  '5XX': jsonResponse('the collector cannot serve the request now', COLLECTOR_ERROR_SCHEMA),
};
const errors: Record<string, ResponseDoc> = {
  '4XX': jsonResponse('refused (docs/audit.md, Collector API)', COLLECTOR_ERROR_SCHEMA),
  ...serverErrors,
};

const eventSchema = fromZod(auditEventSchema);
const count: JsonSchema = { type: 'integer', minimum: 0 };
/** An audit client's spool report (audit/spool-report.ts; decision 0096). */
export const SPOOL_REPORT_SCHEMA: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['pending', 'pendingBytes', 'oldestPendingMs', 'missing', 'lost', 'state', 'intervalMs'],
  properties: {
    pending: { ...count, description: 'events in the spool not yet delivered' },
    pendingBytes: { ...count, description: 'bytes of the spool files' },
    oldestPendingMs: { ...count, description: 'age of the oldest pending event (ms); 0 when none' },
    missing: {
      ...count,
      description: 'events counted missing from a damaged spool since the client started',
    },
    lost: { ...count, description: 'events the client could not keep since it started' },
    state: { enum: [...SPOOL_STATES] },
    intervalMs: {
      type: 'integer',
      minimum: REPORT_INTERVAL_MIN_MS,
      maximum: REPORT_INTERVAL_MAX_MS,
      description: 'how often the client reports when idle (ms)',
    },
  },
};
/** One stored record, as the routes that return records write it. */
export const COLLECTOR_RECORD_SCHEMA: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['seq', 'time', 'event', 'prev', 'hash'],
  properties: {
    seq,
    time: { type: 'string', format: 'date-time' },
    event: eventSchema,
    prev: str,
    hash: str,
  },
};

export const COLLECTOR_DOCS = {
  healthz: {
    summary: 'Liveness: 200 while the process serves',
    tags: ['health'],
    response: {
      200: jsonResponse('alive', LIVENESS_SCHEMA),
      ...serverErrors,
    },
  },
  readyz: {
    summary: 'Readiness: certificate, store, signing key, last checkpoint saved',
    tags: ['health'],
    response: {
      200: jsonResponse('ready', READINESS_SCHEMA),
      503: jsonResponse('not ready', READINESS_SCHEMA),
    },
  },
  metrics: {
    summary: 'Prometheus metrics (registered workloads)',
    tags: ['health'],
    response: { 200: textResponse('the exposition', 'text/plain'), ...errors },
  },
  postEvents: {
    summary: 'Append a batch of audit events (registered workloads; source is the caller)',
    tags: ['events'],
    headers: {
      type: 'object',
      properties: {
        'idempotency-key': { type: 'string', pattern: '^[A-Za-z0-9._:-]{1,128}$' },
        'portcullis-spool': {
          type: 'string',
          maxLength: SPOOL_REPORT_MAX_CHARS,
          description:
            "the client's spool report, e.g. pending=12, bytes=3456, oldest=5000, missing=0, lost=0, state=retrying, interval=30000; one the collector cannot read is ignored (events still accepted) and named in the portcullis-spool-refused response header",
        },
      },
    },
    body: {
      type: 'object',
      additionalProperties: false,
      required: ['events'],
      properties: { events: { type: 'array', minItems: 1, items: eventSchema } },
    },
    response: {
      200: jsonResponse('appended (or, with a known Idempotency-Key, appended before)', {
        type: 'object',
        additionalProperties: false,
        required: ['accepted', 'firstSeq', 'lastSeq'],
        properties: { accepted: { type: 'integer', minimum: 1 }, firstSeq: seq, lastSeq: seq },
      }),
      ...errors,
    },
  },
  postSourceReport: {
    summary:
      "An audit client's spool report when it has no batch to carry it (registered workloads; for the caller only)",
    tags: ['events'],
    body: {
      ...SPOOL_REPORT_SCHEMA,
      properties: {
        ...(SPOOL_REPORT_SCHEMA.properties as Record<string, JsonSchema>),
        source: { type: 'string', description: "optional; must be the caller's own SPIFFE ID" },
      },
    },
    response: {
      200: jsonResponse('kept as the latest report of the caller', {
        type: 'object',
        additionalProperties: false,
        required: ['source', 'receivedAt'],
        properties: { source: str, receivedAt: { type: 'string', format: 'date-time' } },
      }),
      ...errors,
    },
  },
  latestCheckpoint: {
    summary: 'The latest signed checkpoint (C2SP signed note)',
    tags: ['checkpoints'],
    response: { 200: textResponse('the note', 'text/plain'), ...errors },
  },
  checkpointKey: {
    summary: 'The checkpoint verifier key (pin it out of band; docs/operations.md)',
    tags: ['checkpoints'],
    response: { 200: textResponse('the signed-note verifier key', 'text/plain'), ...errors },
  },
  inclusion: {
    summary: 'Inclusion proof of one record in the tree of a given size (role audit-reader)',
    tags: ['proofs'],
    querystring: {
      type: 'object',
      required: ['seq', 'size'],
      properties: { seq: uintParam, size: uintParam },
    },
    response: {
      200: jsonResponse('the record and its RFC 9162 audit path', {
        type: 'object',
        additionalProperties: false,
        required: ['seq', 'size', 'record', 'proof'],
        properties: { seq, size: seq, record: COLLECTOR_RECORD_SCHEMA, proof: base64List },
      }),
      ...errors,
    },
  },
  consistency: {
    summary: 'Consistency proof between two tree sizes',
    tags: ['proofs'],
    querystring: {
      type: 'object',
      required: ['from', 'to'],
      properties: { from: uintParam, to: uintParam },
    },
    response: {
      200: jsonResponse('the RFC 9162 consistency proof', {
        type: 'object',
        additionalProperties: false,
        required: ['from', 'to', 'proof'],
        properties: { from: seq, to: seq, proof: base64List },
      }),
      ...errors,
    },
  },
  openapi: OPENAPI_ROUTE_DOC,
} satisfies Record<string, RouteDoc>;
