import { PortcullisError } from '../core/index.ts';

/** Stable error codes raised by audit/. Callers match on `code`, never on the message. */
export type AuditErrorCode =
  | 'ERR_AUDIT_SPOOL_FULL'
  | 'ERR_AUDIT_SPOOL_UNWRITABLE'
  | 'ERR_AUDIT_SPOOL_LOCKED'
  | 'ERR_AUDIT_CLIENT_CLOSED'
  | 'ERR_AUDIT_RECORD_INVALID'
  | 'ERR_AUDIT_CHAIN_BROKEN'
  | 'ERR_AUDIT_PROOF_INVALID'
  | 'ERR_AUDIT_PROOF_RANGE'
  | 'ERR_AUDIT_CHECKPOINT_INVALID'
  | 'ERR_AUDIT_CHECKPOINT_SIGNATURE'
  | 'ERR_AUDIT_CHECKPOINT_INCONSISTENT'
  | 'ERR_AUDIT_KEY_INVALID'
  | 'ERR_AUDIT_STORE_CORRUPT'
  | 'ERR_AUDIT_STORE_CLOSED'
  | 'ERR_AUDIT_STORE_UNAVAILABLE'
  | 'ERR_AUDIT_STORE_SPEC'
  | 'ERR_AUDIT_STORE_LOCKED'
  | 'ERR_AUDIT_IDEMPOTENCY_MISMATCH'
  | 'ERR_AUDIT_IDEMPOTENCY_IN_FLIGHT'
  | 'ERR_AUDIT_RATE_LIMITED'
  | 'ERR_AUDIT_PEER_REFUSED'
  | 'ERR_AUDIT_PEER_NOT_REGISTERED'
  | 'ERR_AUDIT_FORBIDDEN'
  | 'ERR_AUDIT_BAD_REQUEST'
  | 'ERR_AUDIT_NOT_FOUND'
  | 'ERR_AUDIT_COLLECTOR_UNREACHABLE'
  | 'ERR_AUDIT_COLLECTOR_REFUSED';

/** Base of every audit/ error; `code` is one of {@link AuditErrorCode}. */
export class AuditError extends PortcullisError<AuditErrorCode> {}

/** A stored or received record does not have the shape of an audit record. */
export class RecordInvalidError extends AuditError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AUDIT_RECORD_INVALID', message, options);
  }
}

/** A record breaks the hash chain; `seq` is the first bad record and `reason` says why. */
export class ChainBrokenError extends AuditError {
  readonly seq: number;
  readonly reason: string;
  constructor(seq: number, reason: string) {
    super('ERR_AUDIT_CHAIN_BROKEN', `record ${seq}: ${reason}`);
    this.seq = seq;
    this.reason = reason;
  }
}

/** An inclusion or consistency proof does not verify. */
export class ProofInvalidError extends AuditError {
  constructor(message: string) {
    super('ERR_AUDIT_PROOF_INVALID', message);
  }
}

/** A proof was asked for sizes or indexes the log does not have. */
export class ProofRangeError extends AuditError {
  constructor(message: string) {
    super('ERR_AUDIT_PROOF_RANGE', message);
  }
}

/** A checkpoint note is malformed, badly signed, or contradicts the log. */
export class CheckpointError extends AuditError {
  constructor(
    code:
      | 'ERR_AUDIT_CHECKPOINT_INVALID'
      | 'ERR_AUDIT_CHECKPOINT_SIGNATURE'
      | 'ERR_AUDIT_CHECKPOINT_INCONSISTENT'
      | 'ERR_AUDIT_KEY_INVALID',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** A store cannot be opened or used: corrupt, closed, unreachable or badly named. */
export class StoreError extends AuditError {
  constructor(
    code:
      | 'ERR_AUDIT_STORE_CORRUPT'
      | 'ERR_AUDIT_STORE_CLOSED'
      | 'ERR_AUDIT_STORE_UNAVAILABLE'
      | 'ERR_AUDIT_STORE_SPEC'
      | 'ERR_AUDIT_STORE_LOCKED',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** A collector request is refused: bad peer, missing role, or bad input. */
export class CollectorRequestError extends AuditError {
  constructor(
    code:
      | 'ERR_AUDIT_PEER_REFUSED'
      | 'ERR_AUDIT_PEER_NOT_REGISTERED'
      | 'ERR_AUDIT_FORBIDDEN'
      | 'ERR_AUDIT_BAD_REQUEST'
      | 'ERR_AUDIT_NOT_FOUND'
      | 'ERR_AUDIT_PROOF_RANGE'
      | 'ERR_AUDIT_IDEMPOTENCY_MISMATCH'
      | 'ERR_AUDIT_IDEMPOTENCY_IN_FLIGHT'
      | 'ERR_AUDIT_RATE_LIMITED',
    message: string,
    options?: { cause?: unknown; retryAfterSeconds?: number },
  ) {
    super(code, message, options);
    this.retryAfterSeconds = options?.retryAfterSeconds;
  }
  /** Seconds for a `Retry-After` header (429, 409). */
  readonly retryAfterSeconds: number | undefined;
}

/** The audit client could not talk to the collector (used by the CLI and in logs). */
export class CollectorClientError extends AuditError {
  readonly status: number | undefined;
  constructor(
    code: 'ERR_AUDIT_COLLECTOR_UNREACHABLE' | 'ERR_AUDIT_COLLECTOR_REFUSED',
    message: string,
    options?: { cause?: unknown; status?: number },
  ) {
    super(code, message, options);
    this.status = options?.status;
  }
}

/**
 * The audit client cannot make an event durable: its spool is full or cannot be written, another
 * live process holds its spool directory, or it is closed. A part in
 * `failMode: closed` then refuses to act (503) rather than act unrecorded.
 */
export class AuditSpoolError extends AuditError {
  constructor(
    code:
      | 'ERR_AUDIT_SPOOL_FULL'
      | 'ERR_AUDIT_SPOOL_UNWRITABLE'
      | 'ERR_AUDIT_SPOOL_LOCKED'
      | 'ERR_AUDIT_CLIENT_CLOSED',
    message: string,
  ) {
    super(code, message);
  }
}
