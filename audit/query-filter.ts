import type { AuditRecord } from './record.ts';

/** Event fields the query API filters and groups by. */
export const FILTER_FIELDS = ['type', 'source', 'subject', 'decision', 'rule', 'reason'] as const;
export type FilterField = (typeof FILTER_FIELDS)[number];

/** Time buckets of aggregates, in ms. */
export const INTERVALS = { '1m': 60_000, '5m': 300_000, '1h': 3_600_000, '1d': 86_400_000 } as const;
export type AggregateInterval = keyof typeof INTERVALS;

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
  /** The policy rule that decided (`event.rule`). */
  readonly rule?: string;
  /** The reason code (`event.reason`), e.g. `ERR_SIDECAR_POLICY_DENIED`. */
  readonly reason?: string;
  /** First seq to consider (ascending paging). */
  readonly fromSeq?: number;
  /** Only seqs below this one (descending paging). */
  readonly beforeSeq?: number;
  /** `asc` (default): oldest first from `fromSeq`; `desc`: newest first below `beforeSeq`. */
  readonly order?: 'asc' | 'desc';
  /** At most this many records. */
  readonly limit: number;
}

/** What {@link AuditStore.aggregate} counts. */
export interface AggregateQuery {
  readonly filter: Omit<RecordFilter, 'limit' | 'fromSeq' | 'beforeSeq' | 'order'>;
  /** Fields to group by (none: one group with the total). */
  readonly groupBy: readonly FilterField[];
  /** Time buckets of the record time (UTC, aligned to the epoch). */
  readonly interval?: AggregateInterval;
}

/** One group of an aggregate: the values of the grouped fields (null when absent), its bucket, and the count. */
export interface AggregateGroup {
  readonly key: Partial<Record<FilterField, string | null>>;
  /** RFC 3339 start of the time bucket, with an interval. */
  readonly bucket?: string;
  readonly count: number;
}

/** True when `record` passes every filter field (time, type, source, subject, decision, rule, reason). */
export function matchesFilter(record: AuditRecord, filter: Omit<RecordFilter, 'limit'>): boolean {
  const e = record.event;
  if (filter.type !== undefined && e.type !== filter.type) return false;
  if (filter.source !== undefined && e.source !== filter.source) return false;
  if (filter.subject !== undefined && e.subject !== filter.subject) return false;
  if (filter.decision !== undefined && e.decision !== filter.decision) return false;
  if (filter.rule !== undefined && e.rule !== filter.rule) return false;
  if (filter.reason !== undefined && e.reason !== filter.reason) return false;
  if (filter.since !== undefined || filter.until !== undefined) {
    const t = Date.parse(record.time);
    if (filter.since !== undefined && t < Date.parse(filter.since)) return false;
    if (filter.until !== undefined && t >= Date.parse(filter.until)) return false;
  }
  return true;
}

/** Runs a filter over records in the order given (the scan of the memory store). */
export async function scanQuery(
  records: AsyncIterable<AuditRecord> | Iterable<AuditRecord>,
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

/** Start of the bucket holding `ms`. */
export function bucketStart(ms: number, interval: AggregateInterval): number {
  const size = INTERVALS[interval];
  return Math.floor(ms / size) * size;
}

/**
 * Counts records into groups (the memory store's aggregate, and the reference the others are
 * tested against). Groups are sorted by bucket, then by count (largest first), then by key.
 */
export class GroupCounter {
  readonly #groups = new Map<
    string,
    { key: Partial<Record<FilterField, string | null>>; bucket?: number; count: number }
  >();
  readonly #query: AggregateQuery;

  constructor(query: AggregateQuery) {
    this.#query = query;
  }

  /** Adds `n` to the group of these field values (and time). */
  add(values: (field: FilterField) => string | undefined, timeMs: number, n = 1): void {
    const key: Partial<Record<FilterField, string | null>> = {};
    for (const f of this.#query.groupBy) key[f] = values(f) ?? null;
    const bucket = this.#query.interval ? bucketStart(timeMs, this.#query.interval) : undefined;
    const id = JSON.stringify([bucket, ...this.#query.groupBy.map((f) => key[f])]);
    const g = this.#groups.get(id);
    if (g) g.count += n;
    else this.#groups.set(id, { key, ...(bucket !== undefined ? { bucket } : {}), count: n });
  }

  /** The groups, sorted. */
  groups(): AggregateGroup[] {
    return sortGroups(
      [...this.#groups.values()].map((g) => ({
        key: g.key,
        ...(g.bucket !== undefined ? { bucket: new Date(g.bucket).toISOString() } : {}),
        count: g.count,
      })),
    );
  }
}

/** Sorts groups by bucket, then by count (largest first), then by key. */
export function sortGroups(groups: AggregateGroup[]): AggregateGroup[] {
  return groups.sort(
    (a, b) =>
      (a.bucket ?? '').localeCompare(b.bucket ?? '') ||
      b.count - a.count ||
      JSON.stringify(a.key).localeCompare(JSON.stringify(b.key)),
  );
}

/** Counts records of an iterable (memory store, and tests' reference). */
export async function scanAggregate(
  records: AsyncIterable<AuditRecord> | Iterable<AuditRecord>,
  query: AggregateQuery,
): Promise<AggregateGroup[]> {
  const counter = new GroupCounter(query);
  for await (const r of records) {
    if (!matchesFilter(r, query.filter)) continue;
    const e = r.event as Record<string, unknown>;
    counter.add((f) => e[f] as string | undefined, Date.parse(r.time));
  }
  return counter.groups();
}
