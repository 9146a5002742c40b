import type { AuditRecord } from './record.ts';

/** Filters of `GET /v1/events` and `portcullis audit query`. All given fields must match. */
export interface RecordFilter {
  /** Records appended at or after this time (RFC 3339, compared as instants). */
  readonly since?: string;
  /** Records appended before this time. */
  readonly until?: string;
  readonly type?: string;
  readonly source?: string;
  readonly subject?: string;
  readonly decision?: 'allow' | 'deny';
  /** First seq to consider (for paging). */
  readonly fromSeq?: number;
  /** At most this many records. */
  readonly limit: number;
}

/** True when `record` passes every filter field (time, type, source, subject, decision). */
export function matchesFilter(record: AuditRecord, filter: RecordFilter): boolean {
  const e = record.event;
  if (filter.type !== undefined && e.type !== filter.type) return false;
  if (filter.source !== undefined && e.source !== filter.source) return false;
  if (filter.subject !== undefined && e.subject !== filter.subject) return false;
  if (filter.decision !== undefined && e.decision !== filter.decision) return false;
  if (filter.since !== undefined || filter.until !== undefined) {
    const t = Date.parse(record.time);
    if (filter.since !== undefined && t < Date.parse(filter.since)) return false;
    if (filter.until !== undefined && t >= Date.parse(filter.until)) return false;
  }
  return true;
}

/** Runs a filter over records in seq order (the scan used by the memory and file stores). */
export async function scanQuery(
  records: AsyncIterable<AuditRecord>,
  filter: RecordFilter,
): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  if (filter.limit <= 0) return out;
  for await (const r of records) {
    if (!matchesFilter(r, filter)) continue;
    out.push(r);
    if (out.length >= filter.limit) break;
  }
  return out;
}
