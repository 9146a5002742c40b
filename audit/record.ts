import { hash } from 'node:crypto';
import type { AuditEvent } from '../core/index.ts';
import { canonicalJson } from './canonical.ts';
import { RecordInvalidError } from './errors.ts';

/** `prev` of the first record: 64 zeros (DESIGN.md § Audit log). */
export const GENESIS_PREV = '0'.repeat(64);

/**
 * One record of the log. `seq` starts at 0 and is also the record's Merkle leaf index;
 * `hash` = hex SHA-256 of the RFC 8785 canonical JSON of `{seq, time, event, prev}`.
 */
export interface AuditRecord {
  readonly seq: number;
  /** RFC 3339 time the log appended the record (the event carries its own `time`). */
  readonly time: string;
  readonly event: AuditEvent;
  readonly prev: string;
  readonly hash: string;
}

/** A record together with its stored form: the canonical JSON of the whole record, one line. */
export interface EncodedRecord {
  readonly record: AuditRecord;
  readonly line: string;
}

/** Hex SHA-256 of the canonical JSON of `{seq, time, event, prev}`. */
export function hashRecord(record: Pick<AuditRecord, 'seq' | 'time' | 'event' | 'prev'>): string {
  return hash(
    'sha256',
    canonicalJson({ event: record.event, prev: record.prev, seq: record.seq, time: record.time }),
    'hex',
  );
}

/** Builds the record that follows `prev` and its canonical line (the stored form). */
export function buildRecord(seq: number, time: string, event: AuditEvent, prev: string): EncodedRecord {
  const eventJson = canonicalJson(event);
  const timeJson = canonicalJson(time);
  const body = `{"event":${eventJson},"prev":"${prev}","seq":${seq},"time":${timeJson}}`;
  const digest = hash('sha256', body, 'hex');
  const line = `{"event":${eventJson},"hash":"${digest}","prev":"${prev}","seq":${seq},"time":${timeJson}}`;
  return { record: { seq, time, event, prev, hash: digest }, line };
}

// The canonical line ends with the top-level hash, prev, seq and time, in that (sorted) order;
// an event cannot hold this text at its top level because "event" sorts first.
const TAIL =
  /^,"hash":"([0-9a-f]{64})","prev":"([0-9a-f]{64})","seq":(0|[1-9][0-9]{0,15}),"time":"([0-9T:.+\-Z]{20,40})"}$/;

/** What {@link scanRecordLine} reads off a stored line without parsing the event. */
export interface ScannedLine {
  readonly seq: number;
  readonly prev: string;
  /** The hash the line claims. */
  readonly hash: string;
  /** The hash of the line's bytes as they are; differs from `hash` when the line was altered. */
  readonly computed: string;
  readonly time: string;
  /** The event's canonical JSON text, unparsed. */
  readonly eventJson: string;
}

/**
 * Reads seq, prev, hash and time off a canonical record line and hashes its body bytes
 * directly, so that verification needs no re-serialization. Throws {@link RecordInvalidError}
 * when the line is not in canonical record form.
 */
export function scanRecordLine(line: string): ScannedLine {
  const at = line.lastIndexOf(',"hash":"');
  if (at < 10 || !line.startsWith('{"event":{')) throw new RecordInvalidError('not a canonical record line');
  const m = TAIL.exec(line.slice(at));
  if (!m) throw new RecordInvalidError('not a canonical record line');
  const body = line.slice(0, at) + line.slice(at + 74);
  return {
    seq: Number(m[3]),
    prev: m[2]!,
    hash: m[1]!,
    computed: hash('sha256', body, 'hex'),
    time: m[4]!,
    eventJson: line.slice(9, at),
  };
}

/** Parses a stored line into an {@link AuditRecord}; throws {@link RecordInvalidError}. */
export function parseRecordLine(line: string): AuditRecord {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    throw new RecordInvalidError('not JSON', { cause: err });
  }
  return toRecord(value);
}

/** Checks the shape of an untrusted record value (from the wire or a file). */
export function toRecord(value: unknown): AuditRecord {
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new RecordInvalidError('a record must be an object');
  const r = value as Record<string, unknown>;
  const extra = Object.keys(r).find((k) => !['seq', 'time', 'event', 'prev', 'hash'].includes(k));
  if (extra) throw new RecordInvalidError(`unknown field "${extra}"`);
  if (!Number.isSafeInteger(r.seq) || (r.seq as number) < 0)
    throw new RecordInvalidError('seq must be a non-negative integer');
  if (typeof r.time !== 'string') throw new RecordInvalidError('time must be a string');
  if (r.event === null || typeof r.event !== 'object' || Array.isArray(r.event))
    throw new RecordInvalidError('event must be an object');
  if (typeof r.prev !== 'string' || !HEX64.test(r.prev))
    throw new RecordInvalidError('prev must be 64 hex digits');
  if (typeof r.hash !== 'string' || !HEX64.test(r.hash))
    throw new RecordInvalidError('hash must be 64 hex digits');
  return r as unknown as AuditRecord;
}

const HEX64 = /^[0-9a-f]{64}$/;
