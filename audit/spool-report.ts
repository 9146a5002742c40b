// What an audit client says about its spool (decision 0096): on every batch it posts, as the
// `Portcullis-Spool` header, and, when it has nothing to post, as the body of a small periodic
// `POST /v1/sources/report`. The collector keeps the latest report per source (sources.ts) and
// serves it on `GET /v1/sources`. One validator for both carriers; pure, no I/O.

/** The states a client's spool can be in, worst last but one. */
export const SPOOL_STATES = ['idle', 'delivering', 'retrying', 'full', 'unwritable'] as const;
export type SpoolState = (typeof SPOOL_STATES)[number];

/** The report: the spool's backlog and health as the client sees it when it sends. */
export interface SpoolReport {
  /** Events in the spool not yet delivered (a batch being sent included). */
  readonly pending: number;
  /** Bytes of the spool files. */
  readonly pendingBytes: number;
  /** Age in ms of the oldest pending event (its `time`); 0 when nothing is pending. */
  readonly oldestPendingMs: number;
  /** Events counted missing from a damaged spool (files removed before delivery) since the client started. */
  readonly missing: number;
  /** Events the client could not keep since it started (spool full, invalid, emitted after close). */
  readonly lost: number;
  /**
   * `idle` nothing pending; `delivering` a backlog being sent; `retrying` the last delivery failed;
   * `full` the spool refuses events; `unwritable` the last spool write failed.
   */
  readonly state: SpoolState;
  /** How often (ms) the client reports when idle: the collector calls it stale after 3 of these. */
  readonly intervalMs: number;
}

/** The header carrying a report on `POST /v1/events`. */
export const SPOOL_REPORT_HEADER = 'portcullis-spool';
/** Longest header value taken (a report is under 150 characters). */
export const SPOOL_REPORT_MAX_CHARS = 512;
/** Shortest and longest reporting interval a client may declare (1 s … 24 days, a Node timer's reach). */
export const REPORT_INTERVAL_MIN_MS = 1_000;
/** The client's default reporting interval; also what the collector assumes of a client that sends no reports. */
export const DEFAULT_REPORT_INTERVAL_MS = 30_000;
export const REPORT_INTERVAL_MAX_MS = 2_147_483_647;

/** Field name in the header (an RFC 8941 dictionary) ↔ field of {@link SpoolReport}. */
const HEADER_KEYS = {
  pending: 'pending',
  bytes: 'pendingBytes',
  oldest: 'oldestPendingMs',
  missing: 'missing',
  lost: 'lost',
  state: 'state',
  interval: 'intervalMs',
} as const satisfies Record<string, keyof SpoolReport>;

/** A report the collector refuses: the message names the field. */
export class SpoolReportError extends Error {
  override name = 'SpoolReportError';
}

const COUNTS = ['pending', 'pendingBytes', 'oldestPendingMs', 'missing', 'lost'] as const;
/** Every field of a report. */
export const SPOOL_REPORT_FIELDS: readonly (keyof SpoolReport)[] = [...COUNTS, 'state', 'intervalMs'];

/**
 * Checks a report given as an object (the JSON body of `POST /v1/sources/report`, or the header
 * once split): every field present, counts non-negative safe integers, a known state, an interval
 * in range. Unknown fields are refused (a body) or were already dropped (a header). Throws
 * {@link SpoolReportError}.
 */
export function checkSpoolReport(raw: unknown): SpoolReport {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new SpoolReportError('a spool report must be an object');
  const r = raw as Record<string, unknown>;
  for (const k of COUNTS) {
    const v = r[k];
    if (v === undefined) throw new SpoolReportError(`${k} is required`);
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
      throw new SpoolReportError(`${k} must be a non-negative integer`);
  }
  if (r.state === undefined) throw new SpoolReportError('state is required');
  if (typeof r.state !== 'string' || !(SPOOL_STATES as readonly string[]).includes(r.state))
    throw new SpoolReportError(`state must be one of ${SPOOL_STATES.join(', ')}`);
  const i = r.intervalMs;
  if (i === undefined) throw new SpoolReportError('intervalMs is required');
  if (
    typeof i !== 'number' ||
    !Number.isSafeInteger(i) ||
    i < REPORT_INTERVAL_MIN_MS ||
    i > REPORT_INTERVAL_MAX_MS
  )
    throw new SpoolReportError(
      `intervalMs must be an integer from ${REPORT_INTERVAL_MIN_MS} to ${REPORT_INTERVAL_MAX_MS}`,
    );
  return {
    pending: r.pending as number,
    pendingBytes: r.pendingBytes as number,
    oldestPendingMs: r.oldestPendingMs as number,
    missing: r.missing as number,
    lost: r.lost as number,
    state: r.state as SpoolState,
    intervalMs: i,
  };
}

/** The header value: `pending=12, bytes=3456, oldest=5000, missing=0, lost=0, state=retrying, interval=30000`. */
export function formatSpoolReport(r: SpoolReport): string {
  return Object.entries(HEADER_KEYS)
    .map(([name, field]) => `${name}=${r[field]}`)
    .join(', ');
}

const MEMBER = /^([a-z*][a-z0-9_.*-]{0,63})=(?:(\d{1,15})|([A-Za-z*][A-Za-z0-9_.:%*/-]{0,63}))$/;

/**
 * Parses the header (a strict subset of an RFC 8941 dictionary: integer and token members). A
 * member this version does not know is skipped, so a newer client can add one; a known member
 * repeated, malformed or out of range is refused. Throws {@link SpoolReportError}.
 */
export function parseSpoolReport(value: string | string[] | undefined): SpoolReport {
  if (value === undefined) throw new SpoolReportError(`no ${SPOOL_REPORT_HEADER} header`);
  if (Array.isArray(value)) throw new SpoolReportError(`${SPOOL_REPORT_HEADER} must be given once`);
  if (value.length > SPOOL_REPORT_MAX_CHARS)
    throw new SpoolReportError(`${SPOOL_REPORT_HEADER} is longer than ${SPOOL_REPORT_MAX_CHARS} characters`);
  const out: Record<string, unknown> = {};
  const seen = new Set<string>();
  for (const member of value.split(',')) {
    const m = MEMBER.exec(member.trim());
    if (!m)
      throw new SpoolReportError(`${SPOOL_REPORT_HEADER}: "${member.trim().slice(0, 40)}" is not name=value`);
    const [, name, int, token] = m;
    if (seen.has(name!)) throw new SpoolReportError(`${SPOOL_REPORT_HEADER}: ${name} is repeated`);
    seen.add(name!);
    const field = (HEADER_KEYS as Record<string, keyof SpoolReport>)[name!];
    if (!field) continue;
    if (field === 'state') {
      if (token === undefined) throw new SpoolReportError(`${SPOOL_REPORT_HEADER}: state must be a word`);
      out.state = token;
    } else {
      if (int === undefined) throw new SpoolReportError(`${SPOOL_REPORT_HEADER}: ${name} must be an integer`);
      out[field] = Number(int);
    }
  }
  try {
    return checkSpoolReport(out);
  } catch (err) {
    throw new SpoolReportError(`${SPOOL_REPORT_HEADER}: ${(err as Error).message}`);
  }
}
