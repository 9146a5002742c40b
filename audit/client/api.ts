import { CollectorClientError } from '../errors.ts';
import { createCollectorReadClient, readAll, refused } from './read-client.ts';
import type { AuditRecord } from '../record.ts';
import { toRecord } from '../record.ts';
import type { AggregateGroup, AggregateQuery, RecordFilter } from '../query-filter.ts';
import type { SourceView } from '../collector/sources.ts';

/** What `GET /v1/sources` answers: every source heard from since the collector started. */
export interface CollectorSources {
  readonly staleAfterIntervals: number;
  readonly defaultIntervalMs: number;
  /** Sources forgotten past the collector's `limits.sources`. */
  readonly dropped: number;
  /** Most recently heard from first. */
  readonly sources: readonly SourceView[];
}

/** A page of `GET /v1/events`: `next` is the cursor of the following page (null at the end). */
export interface EventsPage {
  readonly records: AuditRecord[];
  readonly nextSeq: number | null;
  readonly next: string | null;
}

/** What `GET /v1/status` answers (fields may grow). */
export interface CollectorStatus {
  readonly store: { readonly kind: string; readonly records: number };
  readonly checkpoint: {
    readonly size: number;
    readonly rootHash: string;
    readonly chainHead: string;
    readonly time: string | null;
    readonly note: string;
  } | null;
  readonly chain: { readonly verifiedThrough: number; readonly ok: boolean; readonly error?: string };
  readonly collector: {
    readonly ready: boolean;
    readonly liveTails?: number;
    readonly uptimeSeconds?: number;
  };
}

/** Options of {@link createCollectorApi}: where the collector is and how to prove who we are. */
export interface CollectorApiOptions {
  readonly url: string;
  readonly tls: { readonly cert: string; readonly key: string; readonly trustBundle: string };
  /** SPIFFE ID the collector's certificate must carry. */
  readonly collectorId: string;
  readonly timeoutMs?: number;
}

/** An inclusion proof as the collector serves it (and as `audit prove --save` stores it). */
export interface InclusionBundle {
  readonly seq: number;
  readonly size: number;
  readonly record: AuditRecord;
  /** Base64 node hashes, RFC 9162 order. */
  readonly proof: readonly string[];
}

/** The read side of a collector, for the CLI and tools. */
export interface CollectorApi {
  /** One page of `GET /v1/events`; `cursor` is the `next` of the page before. */
  events(filter: Omit<RecordFilter, 'beforeSeq'> & { readonly cursor?: string }): Promise<EventsPage>;
  /** `GET /v1/aggregates`. */
  aggregates(query: AggregateQuery): Promise<{ since: string; until: string; groups: AggregateGroup[] }>;
  /**
   * `GET /v1/events/stream`: the matching records as they are appended, after `lastEventId`
   * (default: from now), until `signal` aborts or the collector ends the stream.
   */
  stream(
    filter: AggregateQuery['filter'],
    options?: { lastEventId?: number; signal?: AbortSignal },
  ): AsyncIterable<AuditRecord>;
  /** `GET /v1/status`. */
  status(): Promise<CollectorStatus>;
  /** `GET /v1/sources`: the audit clients heard from and their spool reports. */
  sources(): Promise<CollectorSources>;
  /** `GET /v1/checkpoints/latest`: the signed note, unverified. */
  latestCheckpoint(): Promise<string>;
  inclusion(seq: number, size: number): Promise<InclusionBundle>;
  consistency(from: number, to: number): Promise<Buffer[]>;
  close(): Promise<void>;
}

/** An mTLS client of the collector's query, checkpoint and proof routes. */
export function createCollectorApi(options: CollectorApiOptions): CollectorApi {
  const reader = createCollectorReadClient(options);
  const params = (filter: object): URLSearchParams => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filter)) if (v !== undefined) q.set(k, String(v));
    return q;
  };
  return {
    async events(filter) {
      const body = await reader.json<{ records: unknown[]; nextSeq: number | null; next?: string | null }>(
        `/v1/events?${params(filter)}`,
      );
      return { records: body.records.map(toRecord), nextSeq: body.nextSeq, next: body.next ?? null };
    },
    async aggregates(query) {
      const q = params(query.filter);
      if (query.groupBy.length) q.set('groupBy', query.groupBy.join(','));
      if (query.interval) q.set('interval', query.interval);
      return reader.json<{ since: string; until: string; groups: AggregateGroup[] }>(`/v1/aggregates?${q}`);
    },
    async *stream(filter, streamOptions = {}) {
      let res;
      try {
        res = await reader.get(`/v1/events/stream?${params(filter)}`, {
          headers: {
            accept: 'text/event-stream',
            ...(streamOptions.lastEventId !== undefined
              ? { 'last-event-id': String(streamOptions.lastEventId) }
              : {}),
          },
          ...(streamOptions.signal ? { signal: streamOptions.signal } : {}),
          // Heartbeats come every 15 s; a stream silent for a minute is dead.
          bodyTimeoutMs: 60_000,
        });
      } catch (err) {
        if (streamOptions.signal?.aborted) return;
        throw err;
      }
      if (res.status !== 200) throw refused(res.status, await readAll(res.body));
      let buffered = '';
      try {
        for await (const chunk of res.body) {
          buffered += (chunk as Buffer).toString('utf8');
          for (let end = buffered.indexOf('\n\n'); end >= 0; end = buffered.indexOf('\n\n')) {
            const message = buffered.slice(0, end);
            buffered = buffered.slice(end + 2);
            let event = 'message';
            const data: string[] = [];
            for (const line of message.split('\n')) {
              if (line.startsWith('event: ')) event = line.slice(7);
              else if (line.startsWith('data: ')) data.push(line.slice(6));
            }
            if (event === 'record' && data.length) yield toRecord(JSON.parse(data.join('\n')));
          }
        }
      } catch (err) {
        if (streamOptions.signal?.aborted) return;
        throw new CollectorClientError(
          'ERR_AUDIT_COLLECTOR_UNREACHABLE',
          `${options.url}: the live tail ended (${(err as Error).message})`,
          { cause: err },
        );
      }
    },
    status: () => reader.json<CollectorStatus>('/v1/status'),
    sources: () => reader.json<CollectorSources>('/v1/sources'),
    latestCheckpoint: () => reader.text('/v1/checkpoints/latest'),
    async inclusion(seq, size) {
      const body = await reader.json<InclusionBundle>(`/v1/proofs/inclusion?seq=${seq}&size=${size}`);
      return { ...body, record: toRecord(body.record) };
    },
    async consistency(from, to) {
      const body = await reader.json<{ proof: string[] }>(`/v1/proofs/consistency?from=${from}&to=${to}`);
      return body.proof.map((p) => Buffer.from(p, 'base64'));
    },
    close: () => reader.close(),
  };
}
