import { Ajv } from 'ajv';
import type { ValidateFunction } from 'ajv';
import { z } from 'zod';
import { AuditEventError } from './errors.ts';

/** Fixed event types; `admin.<verb>` events are open-ended. */
export const AUDIT_EVENT_TYPES = [
  'authz.decision',
  'authz.response',
  'token.issued',
  'token.denied',
  'key.rotated',
  'cert.issued',
  'cert.revoked',
] as const;
const TYPE =
  /^(?:authz\.decision|authz\.response|token\.issued|token\.denied|key\.rotated|cert\.issued|cert\.revoked|admin\.[a-z][a-z0-9_.-]{0,63})$/;

// Well-formed only: a lone surrogate has no canonical JSON (RFC 8785), so the log could not hash it.
const text = (max: number) =>
  z
    .string()
    .max(max)
    .refine((s) => s.isWellFormed(), 'must be well-formed Unicode (no lone surrogates)');

/** At most this many `attributes` per event (zod refines it; JSON Schema says it as maxProperties). */
const MAX_ATTRIBUTES = 32;

/**
 * The audit event of docs/architecture.md § Audit. Every field but `type` and `time` is optional so
 * that one schema fits decisions, issuances and rotations; unknown fields are refused.
 */
export const auditEventSchema = z.strictObject({
  type: z.string().regex(TYPE, 'must be one of the audit event types or admin.<verb>'),
  /** RFC 3339 time the event happened, as seen by its source. */
  time: z.iso.datetime({ offset: true }),
  /** SPIFFE ID of the emitting workload; the collector overwrites it with the peer's. */
  source: text(2048).optional(),
  /** Who acted: the caller's SPIFFE ID (or a CLI operator's identity). */
  subject: text(2048).optional(),
  /** What was acted on: a service ID, an audience, a key id, a serial. */
  target: text(2048).optional(),
  /** What was attempted, e.g. `GET /orders/1` or `token.request`. */
  action: text(4096).optional(),
  decision: z.enum(['allow', 'deny']).optional(),
  /** False when a deny was recorded but not enforced (`mode: audit`). */
  enforced: z.boolean().optional(),
  /** Stable reason code, e.g. `ERR_SIDECAR_TOKEN_EXPIRED` or `allowed`. */
  reason: text(256).optional(),
  rule: text(256).optional(),
  policyHash: text(128).optional(),
  status: z.number().int().min(0).max(999).optional(),
  latencyMs: z.number().min(0).max(86_400_000).optional(),
  jti: text(256).optional(),
  traceId: z
    .string()
    .regex(/^[0-9a-f]{32}$/)
    .optional(),
  /** Small extra facts (kid, serial, key state); never secrets. */
  attributes: z
    .record(
      z.string().regex(/^[A-Za-z][A-Za-z0-9_.-]{0,63}$/),
      z.union([text(1024), z.number(), z.boolean()]),
    )
    .refine((r) => Object.keys(r).length <= MAX_ATTRIBUTES, `at most ${MAX_ATTRIBUTES} attributes`)
    .optional(),
});

/** One audit event. */
export type AuditEvent = z.output<typeof auditEventSchema>;
export type AuditEventType = (typeof AUDIT_EVENT_TYPES)[number] | `admin.${string}`;

// The schema above, compiled by Ajv from zod's own JSON Schema: the fast check for the common,
// valid event (about three times cheaper than zod's parse, which allocated ~4 KB per event and ran on
// every audited request). Zod stays the authority: whatever the fast check refuses is parsed by zod
// for the verdict and the message, and a test checks that it accepts nothing zod refuses (decision
// 0037). What Ajv measures differently or JSON Schema cannot say is checked by hand after it:
// string lengths in UTF-16 code units as zod counts them (Ajv counts code points), well-formed
// Unicode, at most MAX_ATTRIBUTES attributes.
interface FastCheck {
  readonly validate: ValidateFunction;
  /** Field name → zod's maximum length, in UTF-16 code units. */
  readonly maxLength: Readonly<Record<string, number>>;
  /** zod's maximum length of a text attribute value. */
  readonly attributeMaxLength: number;
}
let fast: FastCheck | undefined;

function compileFastCheck(): FastCheck {
  type Field = {
    type?: string;
    maxLength?: number;
    maxProperties?: number;
    additionalProperties?: { anyOf: Field[] };
  };
  const schema = z.toJSONSchema(auditEventSchema, { target: 'draft-07', io: 'input' }) as {
    properties: Record<string, Field>;
  };
  // Lengths move out of the schema into the hand check (Ajv's code-point count is also its slowest part).
  const maxLength: Record<string, number> = {};
  for (const [name, field] of Object.entries(schema.properties)) {
    if (field.maxLength !== undefined) maxLength[name] = field.maxLength;
    delete field.maxLength;
  }
  const attributes = schema.properties.attributes!;
  const text = attributes.additionalProperties!.anyOf.find((c) => c.type === 'string')!;
  const attributeMaxLength = text.maxLength!;
  delete text.maxLength;
  attributes.maxProperties = MAX_ATTRIBUTES;
  return {
    validate: new Ajv({ strict: true, validateFormats: false }).compile(schema),
    maxLength,
    attributeMaxLength,
  };
}

function wellFormedText(value: Record<string, unknown>, check: FastCheck): boolean {
  for (const k in value) {
    const v = value[k];
    if (typeof v === 'string') {
      if (v.length > (check.maxLength[k] ?? Infinity) || !v.isWellFormed()) return false;
    } else if (k === 'attributes' && v !== undefined) {
      // Attribute names are ASCII by the schema's pattern; their values may be any text.
      for (const a of Object.values(v as Record<string, unknown>))
        if (typeof a === 'string' && (a.length > check.attributeMaxLength || !a.isWellFormed())) return false;
    }
  }
  return true;
}

/** Parses an untrusted value into an {@link AuditEvent} (a copy); throws {@link AuditEventError}. */
export function parseAuditEvent(value: unknown): AuditEvent {
  fast ??= compileFastCheck();
  if (
    value !== null &&
    typeof value === 'object' &&
    Object.getPrototypeOf(value) === Object.prototype &&
    fast.validate(value) &&
    wellFormedText(value as Record<string, unknown>, fast)
  ) {
    const event = { ...(value as AuditEvent) };
    if (event.attributes) event.attributes = { ...event.attributes };
    return event;
  }
  const result = auditEventSchema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const at = issue.path.length ? `${issue.path.join('.')}: ` : '';
  throw new AuditEventError(`${at}${issue.message}`);
}

/**
 * Where the STS and the sidecar send audit events. The collector client (audit/) implements it;
 * {@link MemoryAuditSink} is the in-process one for tests and single-process tools.
 */
export interface AuditSink {
  /** Queues one event. Never blocks and never throws for I/O: delivery is the sink's job. */
  emit(event: AuditEvent): void;
  /**
   * Queues one event and resolves once it is durable, when the sink promises durability (the
   * collector client in `failMode: closed`: written and fsynced to its spool); otherwise as soon
   * as it is queued. Rejects when the event cannot be kept (spool full, sink closed): the caller
   * must then not act. For what must be on record before it happens (a forwarded request, a
   * token handed out).
   */
  record(event: AuditEvent): Promise<void>;
  /**
   * False when the sink can no longer keep new events (fail-closed mode with a full spool);
   * callers then refuse new requests with 503 rather than act unrecorded.
   */
  accepting(): boolean;
  /** Resolves once every event emitted so far is delivered or safely spooled. */
  flush(): Promise<void>;
  /** Flushes, then releases resources; later `emit` calls are counted as lost. */
  close(): Promise<void>;
}

/** An {@link AuditSink} that keeps events in memory, in order. */
export class MemoryAuditSink implements AuditSink {
  readonly events: AuditEvent[] = [];
  emit(event: AuditEvent): void {
    this.events.push(event);
  }
  async record(event: AuditEvent): Promise<void> {
    this.events.push(event);
  }
  accepting(): boolean {
    return true;
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

/**
 * An {@link AuditSink} that writes each event as one JSON log line (`msg: "audit"`): for a part
 * run without a collector. It never refuses events.
 */
export class LogAuditSink implements AuditSink {
  readonly #logger: { info(obj: object, msg: string): void };
  constructor(logger: { info(obj: object, msg: string): void }) {
    this.#logger = logger;
  }
  emit(event: AuditEvent): void {
    this.#logger.info({ audit: event }, 'audit');
  }
  async record(event: AuditEvent): Promise<void> {
    this.emit(event);
  }
  accepting(): boolean {
    return true;
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}
