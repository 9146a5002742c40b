import type { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import { readConfiguredFile } from '../../core/index.ts';
import { CollectorClientError } from '../errors.ts';
import type { CollectorApiOptions } from './api.ts';
import { collectorConnector } from './server-identity.ts';

/** One answer of a collector read route, body not yet read. */
export interface CollectorResponse {
  readonly status: number;
  readonly contentType: string;
  readonly body: Readable;
}

/**
 * A raw mTLS GET client of the collector's read routes (`/v1/events`, `/v1/events/stream`,
 * `/v1/aggregates`, `/v1/status`…), for tools that relay the query API as it is, such as
 * `portcullis console`: the answer's status and body are handed back unparsed, so the collector's
 * own 4xx messages reach the user unchanged and a server-sent-events stream can be piped.
 */
export interface CollectorReadClient {
  /**
   * GET `path` (with its query string); `headers` e.g. `last-event-id`. Streams have no body
   * timeout unless `bodyTimeoutMs` sets one.
   */
  get(
    path: string,
    options?: {
      readonly headers?: Record<string, string>;
      readonly stream?: boolean;
      readonly bodyTimeoutMs?: number;
      readonly signal?: AbortSignal;
    },
  ): Promise<CollectorResponse>;
  /** GET `path` and parse its JSON; a non-200 answer is a CollectorClientError carrying the collector's message. */
  json<T>(path: string): Promise<T>;
  /** GET `path` as text (signed checkpoint notes, the verifier key). */
  text(path: string): Promise<string>;
  close(): Promise<void>;
}

/** Creates a {@link CollectorReadClient} presenting the operator's certificate. */
export function createCollectorReadClient(options: CollectorApiOptions): CollectorReadClient {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const agent = new Agent({
    connect: collectorConnector(
      {
        cert: readConfiguredFile(options.tls.cert, '--cert'),
        key: readConfiguredFile(options.tls.key, '--key'),
        ca: readConfiguredFile(options.tls.trustBundle, '--trust'),
      },
      options.collectorId,
      { timeoutMs },
    ),
  });
  const get: CollectorReadClient['get'] = async (path, o = {}) => {
    let res;
    try {
      res = await request(new URL(path, options.url), {
        dispatcher: agent,
        headers: o.headers ?? {},
        headersTimeout: timeoutMs,
        // A live tail is quiet between records (the collector sends a heartbeat every 15 s).
        bodyTimeout: o.bodyTimeoutMs ?? (o.stream ? 0 : timeoutMs),
        ...(o.signal ? { signal: o.signal } : {}),
      });
    } catch (err) {
      if (o.signal?.aborted) throw err;
      throw new CollectorClientError(
        'ERR_AUDIT_COLLECTOR_UNREACHABLE',
        `${options.url}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    const type = res.headers['content-type'];
    return {
      status: res.statusCode,
      contentType: (Array.isArray(type) ? type[0] : type) ?? '',
      body: res.body,
    };
  };
  const text = async (path: string): Promise<string> => {
    const res = await get(path);
    const body = await readAll(res.body);
    if (res.status !== 200) throw refused(res.status, body);
    return body;
  };
  return {
    get,
    text,
    json: async <T>(path: string) => JSON.parse(await text(path)) as T,
    close: () => agent.close(),
  };
}

/** Reads a whole answer body as UTF-8. */
export async function readAll(body: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** The collector's `{error, message}` answer as an error. */
export function refused(status: number, text: string): CollectorClientError {
  let detail = text.slice(0, 200);
  try {
    const body = JSON.parse(text) as { error?: string; message?: string };
    if (body.message) detail = `${body.message} [${body.error}]`;
  } catch {
    // not JSON
  }
  return new CollectorClientError('ERR_AUDIT_COLLECTOR_REFUSED', `collector answered ${status}: ${detail}`, {
    status,
  });
}
