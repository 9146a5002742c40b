import type { Logger } from '../core/index.ts';
import { SidecarError } from './errors.ts';

/** One answer of the STS revocations endpoint: 304 (unchanged) or 200 with a body and ETag. */
export type RevocationsResponse =
  | { readonly status: 304 }
  | { readonly status: 200; readonly etag: string | undefined; readonly body: unknown };

/** Dependencies of {@link createRevocationList}. */
export interface RevocationListDeps {
  /** GET /v1/revocations with `If-None-Match: etag` when one is given; rejects on failure. */
  readonly fetchRevocations: (etag: string | undefined) => Promise<RevocationsResponse>;
  readonly clock: () => number;
  readonly logger: Logger;
  readonly intervalMs: number;
}

/** The STS deny-list of token ids and certificate serials, as last polled. */
export interface RevocationList {
  start(): Promise<void>;
  isJtiRevoked(jti: string): boolean;
  /** `serial` in canonical lowercase hex. */
  isSerialRevoked(serial: string): boolean;
  /** Polls now; resolves true when the list was fetched or confirmed unchanged. */
  refresh(): Promise<boolean>;
  stats(): { polls: number; failures: number; etag: string | undefined };
  close(): void;
}

/**
 * Parses the body of `GET /v1/revocations` (`{jtis: [{jti, expiresAt}], serials: [{serial,
 * expiresAt}]}`) into value → expiry maps; a malformed body is refused whole with
 * `ERR_SIDECAR_REVOCATIONS_INVALID`.
 */
export function parseRevocations(body: unknown): { jtis: Map<string, number>; serials: Map<string, number> } {
  const bad = (why: string) =>
    new SidecarError('ERR_SIDECAR_REVOCATIONS_INVALID', `revocation list refused: ${why}`);
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw bad('not a JSON object');
  const read = (name: 'jtis' | 'serials', field: 'jti' | 'serial') => {
    const list = (body as Record<string, unknown>)[name];
    if (!Array.isArray(list)) throw bad(`"${name}" is not an array`);
    const out = new Map<string, number>();
    for (const e of list as unknown[]) {
      const entry = e as Record<string, unknown> | null;
      const value = entry?.[field];
      const at = typeof entry?.expiresAt === 'string' ? Date.parse(entry.expiresAt) : NaN;
      if (typeof value !== 'string' || value.length === 0 || Number.isNaN(at))
        throw bad(`an entry of "${name}" is malformed`);
      out.set(field === 'serial' ? value.toLowerCase() : value, at);
    }
    return out;
  };
  return { jtis: read('jtis', 'jti'), serials: read('serials', 'serial') };
}

/** Polls the STS deny-list with ETag / If-None-Match; failures keep the last list in force. */
export function createRevocationList(deps: RevocationListDeps): RevocationList {
  let jtis = new Map<string, number>();
  let serials = new Map<string, number>();
  let etag: string | undefined;
  let polls = 0;
  let failures = 0;
  let inflight: Promise<boolean> | undefined;
  let timer: NodeJS.Timeout | undefined;
  const live = (m: Map<string, number>, v: string) => {
    if (m.size === 0) return false;
    const at = m.get(v);
    return at !== undefined && at > deps.clock();
  };
  function refresh(): Promise<boolean> {
    inflight ??= (async () => {
      try {
        const r = await deps.fetchRevocations(etag);
        polls++;
        if (r.status === 200) {
          const next = parseRevocations(r.body);
          jtis = next.jtis;
          serials = next.serials;
          etag = r.etag;
        }
        return true;
      } catch (err) {
        failures++;
        deps.logger.warn(
          { err: (err as Error).message },
          'revocation list poll failed; keeping the last list',
        );
        return false;
      } finally {
        inflight = undefined;
      }
    })();
    return inflight;
  }
  return {
    async start() {
      await refresh();
      timer = setInterval(() => void refresh(), deps.intervalMs);
      timer.unref();
    },
    isJtiRevoked: (jti) => live(jtis, jti),
    isSerialRevoked: (serial) => live(serials, serial),
    refresh,
    stats: () => ({ polls, failures, etag }),
    close() {
      if (timer) clearInterval(timer);
    },
  };
}
