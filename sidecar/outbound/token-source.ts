import type { Logger } from '../../core/index.ts';
import { SidecarError } from '../errors.ts';
import type { FetchedToken } from '../sts-client.ts';

/** Tokens for the app's outbound calls, one per audience. */
export interface TokenSource {
  /**
   * A token for `audience` that is valid now; `ERR_SIDECAR_TOKEN_UNAVAILABLE` at once when none can
   * be had. `traceparent` rides along on a fetch this call starts (not on cache hits).
   */
  get(audience: string, traceparent?: string): Promise<string>;
  /**
   * Drops every cached token (the certificate they are bound to changed) and starts fetching new
   * ones for the same audiences at once: right after a renewal the STS has just answered, while a
   * fetch left for the next call would fail if it went down in between.
   */
  invalidate(): void;
  stats(): { fetches: number; failures: number; cached: number };
}

/** Dependencies of {@link createTokenSource}. */
export interface TokenSourceDeps {
  readonly request: (audience: string, traceparent?: string) => Promise<FetchedToken>;
  readonly clock: () => number;
  readonly logger: Logger;
  /** Refresh this long before expiry (capped at half the token's lifetime). */
  readonly refreshBeforeMs: number;
  /** After a failed fetch, callers without a valid token get 503 at once for this long. */
  readonly retryAfterMs: number;
}

interface Entry {
  readonly token: string;
  readonly expiresAtMs: number;
  readonly refreshAtMs: number;
}

// A token this close to expiry is not handed out: it could expire on the wire.
const IN_FLIGHT_MARGIN_MS = 1_000;

/**
 * Per-audience token cache: served while valid, refreshed in the background from
 * `refreshAt` on, one fetch in flight per audience. With the STS down, cached tokens keep working
 * until they expire; then callers get a prompt `ERR_SIDECAR_TOKEN_UNAVAILABLE`, never a hang.
 */
export function createTokenSource(deps: TokenSourceDeps): TokenSource {
  const cache = new Map<string, Entry>();
  const inflight = new Map<string, Promise<Entry>>();
  const failedAt = new Map<string, number>();
  let generation = 0;
  let fetches = 0;
  let failures = 0;

  function fetch(audience: string, traceparent?: string): Promise<Entry> {
    let p = inflight.get(audience);
    if (p) return p;
    const gen = generation;
    p = (async () => {
      const sentAt = deps.clock();
      try {
        const t = await deps.request(audience, traceparent);
        fetches++;
        const lifetime = t.expiresAtMs - sentAt;
        const entry = {
          token: t.token,
          expiresAtMs: t.expiresAtMs,
          refreshAtMs: t.expiresAtMs - Math.min(deps.refreshBeforeMs, lifetime / 2),
        };
        if (gen === generation) {
          cache.set(audience, entry);
          failedAt.delete(audience);
        }
        return entry;
      } catch (err) {
        failures++;
        failedAt.set(audience, deps.clock());
        deps.logger.warn(
          {
            audience,
            err: (err as Error).message,
            ...(traceparent ? { traceId: traceparent.slice(3, 35) } : {}),
          },
          'token fetch failed',
        );
        throw err;
      } finally {
        inflight.delete(audience);
      }
    })();
    inflight.set(audience, p);
    return p;
  }

  const unavailable = (audience: string, cause?: unknown) =>
    new SidecarError(
      'ERR_SIDECAR_TOKEN_UNAVAILABLE',
      `no token for ${audience}: the token service is unreachable`,
      { cause },
    );

  return {
    async get(audience, traceparent) {
      const now = deps.clock();
      const e = cache.get(audience);
      const usable = e !== undefined && now < e.expiresAtMs - IN_FLIGHT_MARGIN_MS;
      const cooling = now - (failedAt.get(audience) ?? -Infinity) < deps.retryAfterMs;
      if (usable) {
        if (now >= e.refreshAtMs && !cooling && !inflight.has(audience))
          fetch(audience, traceparent).catch(() => {});
        return e.token;
      }
      if (e) cache.delete(audience);
      if (cooling) throw unavailable(audience);
      try {
        return (await fetch(audience, traceparent)).token;
      } catch (err) {
        throw unavailable(audience, err);
      }
    },
    invalidate() {
      const audiences = [...cache.keys()];
      generation++;
      cache.clear();
      failedAt.clear();
      for (const audience of audiences) fetch(audience).catch(() => {});
    },
    stats: () => ({ fetches, failures, cached: cache.size }),
  };
}
