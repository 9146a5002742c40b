import { statSync } from 'node:fs';
import { ConfigError, withoutCredentials } from '../../core/index.ts';
import { createCollectorApi, openStore } from '../../audit/index.ts';
import type { AuditRecord, AuditStore } from '../../audit/index.ts';

/** Where `policy replay` reads recorded decisions from, and how to stop reading. */
export interface DecisionSource {
  /** `file`, `postgres` or `collector`. */
  readonly kind: string;
  /** Records in seq order (for a collector: only `authz.decision` records from the service). */
  readonly records: AsyncIterable<AuditRecord>;
  close(): Promise<void>;
}

/** Options of {@link openDecisionSource}. */
export interface DecisionSourceOptions {
  /** The service whose decisions are wanted (a collector filters by it). */
  readonly service: string;
  /** RFC 3339: a collector is asked only for records appended since then. */
  readonly since?: string;
  /** The operator's mTLS identity, for a collector URL. */
  readonly tls?: { readonly cert: string; readonly key: string; readonly trustBundle: string };
  /** SPIFFE ID the collector must present, for a collector URL. */
  readonly collectorId?: string;
  /** Records per collector page (the collector's `limits.queryRecords`; default 1000). */
  readonly pageSize?: number;
}

/**
 * Opens recorded decisions from `from`: a file store directory (`DIR` or `file:DIR`), a
 * PostgreSQL store (`postgres://…`, `postgresql://…` or `postgres:URL`, as `audit verify --store`
 * takes them), or a collector (`https://…`, paged by cursor through `GET /v1/events` with the operator's
 * certificate; the operator needs role `audit-reader`). Stores are opened read-only. Anything
 * else is a TypeError naming what is accepted (the CLI checks the form first).
 */
export async function openDecisionSource(
  from: string,
  options: DecisionSourceOptions,
): Promise<DecisionSource> {
  if (from.startsWith('https://')) {
    if (!options.tls || !options.collectorId)
      throw new TypeError('a collector source needs "tls" and "collectorId"');
    const api = createCollectorApi({ url: from, tls: options.tls, collectorId: options.collectorId });
    const limit = options.pageSize ?? 1000;
    async function* pages(): AsyncIterable<AuditRecord> {
      // Oldest first by the API's cursor (the collector answers each page from its index).
      let cursor: string | undefined;
      for (;;) {
        const page = await api.events({
          type: 'authz.decision',
          source: options.service,
          ...(options.since !== undefined ? { since: options.since } : {}),
          order: 'asc',
          limit,
          ...(cursor !== undefined ? { cursor } : {}),
        });
        yield* page.records;
        if (page.next === null) return;
        cursor = page.next;
      }
    }
    return { kind: 'collector', records: pages(), close: () => api.close() };
  }
  let spec = from;
  if (!/^(file:|postgres(ql)?:)/.test(from)) {
    let dir = false;
    try {
      dir = statSync(from).isDirectory();
    } catch {
      // reported below
    }
    if (!dir)
      throw new TypeError(
        `"${withoutCredentials(from)}" is not a file store directory, file:DIR, postgres://… or https://… collector URL`,
      );
    spec = `file:${from}`;
  }
  const store: AuditStore = await openStore(spec, { readOnly: true });
  if ((await store.size()) === 0) {
    await store.close();
    throw new ConfigError(
      'ERR_CONFIG_NOT_FOUND',
      withoutCredentials(from),
      '',
      'holds no audit records (is it an audit store?)',
    );
  }
  return { kind: store.kind, records: store.read(0), close: () => store.close() };
}
