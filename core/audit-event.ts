import { z } from 'zod';
import { AuditEventError } from './errors.ts';

/** Fixed event types; `admin.<verb>` events are open-ended. */
export const AUDIT_EVENT_TYPES = [
  'authz.decision',
  'token.issued',
  'token.denied',
  'key.rotated',
  'cert.issued',
  'cert.revoked',
] as const;
const TYPE =
  /^(?:authz\.decision|token\.issued|token\.denied|key\.rotated|cert\.issued|cert\.revoked|admin\.[a-z][a-z0-9_.-]{0,63})$/;

// Well-formed only: a lone surrogate has no canonical JSON (RFC 8785), so the log could not hash it.
const text = (max: number) =>
  z
    .string()
    .max(max)
    .refine((s) => s.isWellFormed(), 'must be well-formed Unicode (no lone surrogates)');

/**
 * The audit event of DESIGN.md § Audit log. Every field but `type` and `time` is optional so
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
    .refine((r) => Object.keys(r).length <= 32, 'at most 32 attributes')
    .optional(),
});

/** One audit event. */
export type AuditEvent = z.output<typeof auditEventSchema>;
export type AuditEventType = (typeof AUDIT_EVENT_TYPES)[number] | `admin.${string}`;

/** Parses an untrusted value into an {@link AuditEvent}; throws {@link AuditEventError}. */
export function parseAuditEvent(value: unknown): AuditEvent {
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
  accepting(): boolean {
    return true;
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}
