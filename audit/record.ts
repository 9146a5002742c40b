import { hash } from 'node:crypto';
import type { AuditEvent } from '../core/index.ts';
import { canonicalJson } from './canonical.ts';
import { RecordInvalidError } from './errors.ts';

/** `prev` of the first record: 64 zeros (docs/audit.md). */
export const GENESIS_PREV = '0'.repeat(64);

/**
 * Event types only the collector writes (its own record of reads, `admin.audit.read`): a client's
 * event of such a type is refused, by the collector (403) and before that by the audit client.
 */
export const RESERVED_EVENT_TYPE = /^admin\.audit(\.|$)/;

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

const EVENT_PREFIX = Buffer.from('{"event":{');
const HASH_KEY = Buffer.from(',"hash":"');
const PREV_KEY = Buffer.from('","prev":"');
const SEQ_KEY = Buffer.from('","seq":');
const TIME_KEY = Buffer.from(',"time":"');

/** What {@link scanRecordBytes} reads off one stored line (fields are overwritten on each call). */
export interface ScannedBytes {
  seq: number;
  prev: string;
  hash: string;
  /** SHA-256 of the line's body bytes as they are. */
  digest: Buffer;
  /** Byte range of the event's JSON within the buffer. */
  eventStart: number;
  eventEnd: number;
}

/** A fresh {@link ScannedBytes} and the scratch buffer {@link scanRecordBytes} reuses with it. */
export function newByteScan(): { out: ScannedBytes; scratch: { buf: Buffer } } {
  return {
    out: { seq: 0, prev: '', hash: '', digest: Buffer.alloc(0), eventStart: 0, eventEnd: 0 },
    scratch: { buf: Buffer.allocUnsafe(4096) },
  };
}

/**
 * The byte-level twin of {@link scanRecordLine}, for verifying millions of records: reads seq,
 * prev and hash of the canonical line `buf[start, end)` and hashes its body bytes without
 * building strings. Reuses `out` and `scratch`; returns false when the line is not in
 * canonical record form.
 */
export function scanRecordBytes(
  buf: Buffer,
  start: number,
  end: number,
  out: ScannedBytes,
  scratch: { buf: Buffer },
): boolean {
  if (
    end - start < 200 ||
    buf.compare(EVENT_PREFIX, 0, EVENT_PREFIX.length, start, start + EVENT_PREFIX.length) !== 0
  )
    return false;
  const at = buf.lastIndexOf(HASH_KEY, end - 1);
  if (at < start + 10 || at + 160 > end) return false;
  if (buf.compare(PREV_KEY, 0, PREV_KEY.length, at + 73, at + 83) !== 0) return false;
  if (buf.compare(SEQ_KEY, 0, SEQ_KEY.length, at + 147, at + 155) !== 0) return false;
  let i = at + 155;
  let seq = 0;
  const digitsStart = i;
  while (i < end && buf[i]! >= 0x30 && buf[i]! <= 0x39 && i - digitsStart < 16)
    seq = seq * 10 + (buf[i++]! - 0x30);
  if (i === digitsStart || (buf[digitsStart] === 0x30 && i - digitsStart > 1)) return false;
  if (buf.compare(TIME_KEY, 0, TIME_KEY.length, i, i + TIME_KEY.length) !== 0) return false;
  if (buf[end - 1] !== 0x7d || buf[end - 2] !== 0x22) return false;
  for (let t = i + TIME_KEY.length; t < end - 2; t++) if (buf[t] === 0x22 || buf[t] === 0x5c) return false;
  // Body = the line without `,"hash":"<64 hex>"`: exactly the canonical {event, prev, seq, time}.
  const len = end - start - 74;
  if (scratch.buf.length < len) scratch.buf = Buffer.allocUnsafe(Math.max(len, scratch.buf.length * 2));
  buf.copy(scratch.buf, 0, start, at);
  buf.copy(scratch.buf, at - start, at + 74, end);
  out.digest = hash('sha256', scratch.buf.subarray(0, len), 'buffer');
  out.seq = seq;
  out.hash = buf.toString('latin1', at + 9, at + 73);
  out.prev = buf.toString('latin1', at + 83, at + 147);
  out.eventStart = start + 9;
  out.eventEnd = at;
  return true;
}
