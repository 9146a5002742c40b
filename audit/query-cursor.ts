import { createHash } from 'node:crypto';
import type { RecordFilter } from './query-filter.ts';
import { FILTER_FIELDS } from './query-filter.ts';

type Fields = Omit<RecordFilter, 'limit' | 'fromSeq' | 'beforeSeq' | 'order'>;

/** Short hash of a filter's fields: a cursor is only good for the query it came from. */
function filterTag(filter: Fields): string {
  const fields = [...FILTER_FIELDS, 'since', 'until'].map((k) => filter[k as keyof Fields] ?? null);
  return createHash('sha256').update(JSON.stringify(fields)).digest('base64url').slice(0, 12);
}

/**
 * The opaque cursor of `GET /v1/events` and `audit query`: where the next page starts (ascending:
 * its first seq; descending: the seq it stays below), the order, and a tag of the filter.
 */
export function encodeCursor(order: 'asc' | 'desc', seq: number, filter: Fields): string {
  return Buffer.from(JSON.stringify({ v: 1, o: order, s: seq, f: filterTag(filter) })).toString('base64url');
}

/** The seq a cursor continues from; throws an Error saying why when it does not fit this query. */
export function readCursor(cursor: string, order: 'asc' | 'desc', filter: Fields): number {
  const foreign = 'cursor is not a cursor this API returned (pass the "next" of the previous page as it is)';
  let c: { v?: unknown; o?: unknown; s?: unknown; f?: unknown };
  try {
    if (!/^[A-Za-z0-9_-]{1,256}$/.test(cursor)) throw new Error('not base64url');
    c = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as typeof c;
  } catch {
    throw new Error(foreign);
  }
  if (
    !c ||
    c.v !== 1 ||
    (c.o !== 'asc' && c.o !== 'desc') ||
    !Number.isSafeInteger(c.s) ||
    (c.s as number) < 0
  )
    throw new Error(foreign);
  if (c.o !== order)
    throw new Error(`cursor belongs to order=${c.o as string}; pass the same order as the first page`);
  if (c.f !== filterTag(filter))
    throw new Error('cursor belongs to a query with other filters; pass the same filters as the first page');
  return c.s as number;
}

/** Applies a cursor to a filter: `fromSeq` (ascending) or `beforeSeq` (descending). */
export function pageFilter(filter: RecordFilter, cursor: string | undefined): RecordFilter {
  if (cursor === undefined) return filter;
  const order = filter.order ?? 'asc';
  const at = readCursor(cursor, order, filter);
  return order === 'asc' ? { ...filter, fromSeq: at } : { ...filter, beforeSeq: at };
}

/** The cursor of the page after `records` (null when the page was not full: the end). */
export function nextCursor(filter: RecordFilter, records: readonly { seq: number }[]): string | null {
  if (records.length < filter.limit || records.length === 0) return null;
  const order = filter.order ?? 'asc';
  const last = records.at(-1)!.seq;
  return encodeCursor(order, order === 'asc' ? last + 1 : last, filter);
}
