import { readConfiguredFile } from '../../core/index.ts';
import { collectorConnector } from './server-identity.ts';
import { Agent, request } from 'undici';
import { CollectorClientError } from '../errors.ts';
import type { AuditRecord } from '../record.ts';
import { toRecord } from '../record.ts';
import type { RecordFilter } from '../query-filter.ts';

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
  /** One page of `GET /v1/events`. */
  events(filter: RecordFilter): Promise<{ records: AuditRecord[]; nextSeq: number | null }>;
  /** `GET /v1/checkpoints/latest`: the signed note, unverified. */
  latestCheckpoint(): Promise<string>;
  inclusion(seq: number, size: number): Promise<InclusionBundle>;
  consistency(from: number, to: number): Promise<Buffer[]>;
  close(): Promise<void>;
}

/** An mTLS client of the collector's query, checkpoint and proof routes. */
export function createCollectorApi(options: CollectorApiOptions): CollectorApi {
  const agent = new Agent({
    connect: collectorConnector(
      {
        cert: readConfiguredFile(options.tls.cert, '--cert'),
        key: readConfiguredFile(options.tls.key, '--key'),
        ca: readConfiguredFile(options.tls.trustBundle, '--trust'),
      },
      options.collectorId,
      { timeoutMs: options.timeoutMs ?? 10_000 },
    ),
  });
  const get = async (path: string): Promise<string> => {
    let res;
    try {
      res = await request(new URL(path, options.url), {
        dispatcher: agent,
        headersTimeout: options.timeoutMs ?? 10_000,
        bodyTimeout: options.timeoutMs ?? 10_000,
      });
    } catch (err) {
      throw new CollectorClientError(
        'ERR_AUDIT_COLLECTOR_UNREACHABLE',
        `${options.url}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    const text = await res.body.text();
    if (res.statusCode !== 200) {
      let detail = text.slice(0, 200);
      try {
        const body = JSON.parse(text) as { error?: string; message?: string };
        detail = `${body.message} [${body.error}]`;
      } catch {
        // not JSON
      }
      throw new CollectorClientError(
        'ERR_AUDIT_COLLECTOR_REFUSED',
        `collector answered ${res.statusCode}: ${detail}`,
        {
          status: res.statusCode,
        },
      );
    }
    return text;
  };
  return {
    async events(filter) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(filter)) if (v !== undefined) q.set(k, String(v));
      const body = JSON.parse(await get(`/v1/events?${q}`)) as { records: unknown[]; nextSeq: number | null };
      return { records: body.records.map(toRecord), nextSeq: body.nextSeq };
    },
    latestCheckpoint: () => get('/v1/checkpoints/latest'),
    async inclusion(seq, size) {
      const body = JSON.parse(await get(`/v1/proofs/inclusion?seq=${seq}&size=${size}`)) as InclusionBundle;
      return { ...body, record: toRecord(body.record) };
    },
    async consistency(from, to) {
      const body = JSON.parse(await get(`/v1/proofs/consistency?from=${from}&to=${to}`)) as {
        proof: string[];
      };
      return body.proof.map((p) => Buffer.from(p, 'base64'));
    },
    close: () => agent.close(),
  };
}
