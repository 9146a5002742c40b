import type { Logger } from '../../core/index.ts';
import { SidecarError } from '../errors.ts';
import { parseJwks } from './parse.ts';
import type { VerificationKey } from './parse.ts';

/** Dependencies of {@link createJwksCache}. */
export interface JwksCacheDeps {
  /** Fetches the STS's JWKS document (over mTLS); rejects on any transport or HTTP failure. */
  readonly fetchJwks: () => Promise<unknown>;
  readonly clock: () => number;
  readonly logger: Logger;
  /** Background refresh period. */
  readonly refreshMs: number;
  /** Retry period after a failed fetch (shorter than the refresh period). */
  readonly retryMs: number;
  /** How long the last good set stays in service without a successful fetch; then requests get 503. */
  readonly maxStaleMs: number;
  /** An unknown `kid` triggers at most one refetch per this period. */
  readonly kidCooldownMs: number;
}

/** The sidecar's view of the STS signing keys. */
export interface JwksCache {
  /** First fetch; resolves either way (a failed start keeps retrying in the background). */
  start(): Promise<void>;
  /**
   * The key for `kid`. Unknown kid: one refetch at most per cooldown, then
   * `ERR_SIDECAR_TOKEN_KEY_UNKNOWN`. No usable set: `ERR_SIDECAR_JWKS_UNAVAILABLE`.
   */
  key(kid: string): Promise<VerificationKey>;
  /** Synchronous check for the cached-claims path: the set is usable and still holds `kid`. Throws like {@link key}. */
  assertKnown(kid: string): void;
  /** Fetches now; resolves true on success. Concurrent calls share one fetch. */
  refresh(): Promise<boolean>;
  /** Figures for metrics and tests. */
  stats(): { fetches: number; failures: number; ageMs: number | undefined; kids: string[] };
  close(): void;
}

/**
 * A JWKS cache that survives STS outages: refreshed in the background, refetched (rate-limited)
 * on an unknown `kid`, the last good set kept for `maxStaleMs` after its last successful fetch,
 * failed or malformed fetches never replacing or poisoning it.
 */
export function createJwksCache(deps: JwksCacheDeps): JwksCache {
  let keys: Map<string, VerificationKey> | undefined;
  let fetchedAt = 0;
  let lastKidRefetch = -Infinity;
  let inflight: Promise<boolean> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let fetches = 0;
  let failures = 0;

  const schedule = (ms: number) => {
    if (closed) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => void refresh(), ms);
    timer.unref();
  };

  function refresh(): Promise<boolean> {
    inflight ??= (async () => {
      try {
        const next = await parseJwks(await deps.fetchJwks());
        keys = next;
        fetchedAt = deps.clock();
        fetches++;
        schedule(deps.refreshMs);
        return true;
      } catch (err) {
        failures++;
        deps.logger.warn(
          { err: (err as Error).message, code: (err as { code?: string }).code },
          'JWKS fetch failed; keeping the last good set',
        );
        schedule(deps.retryMs);
        return false;
      } finally {
        inflight = undefined;
      }
    })();
    return inflight;
  }

  function assertUsable(): Map<string, VerificationKey> {
    if (!keys) throw new SidecarError('ERR_SIDECAR_JWKS_UNAVAILABLE', 'no verification keys yet');
    if (deps.clock() - fetchedAt > deps.maxStaleMs)
      throw new SidecarError(
        'ERR_SIDECAR_JWKS_UNAVAILABLE',
        'verification keys are too old (token service unreachable)',
      );
    return keys;
  }

  const unknown = (kid: string) =>
    new SidecarError('ERR_SIDECAR_TOKEN_KEY_UNKNOWN', `token signed by an unknown key "${kid.slice(0, 64)}"`);

  return {
    async start() {
      await refresh();
    },
    async key(kid) {
      const found = keys?.get(kid);
      if (found) {
        assertUsable();
        return found;
      }
      const now = deps.clock();
      if (now - lastKidRefetch >= deps.kidCooldownMs) {
        lastKidRefetch = now;
        await refresh();
      }
      const set = assertUsable();
      const again = set.get(kid);
      if (!again) throw unknown(kid);
      return again;
    },
    assertKnown(kid) {
      if (!assertUsable().has(kid)) throw unknown(kid);
    },
    refresh,
    stats: () => ({
      fetches,
      failures,
      ageMs: keys ? deps.clock() - fetchedAt : undefined,
      kids: keys ? [...keys.keys()] : [],
    }),
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
    },
  };
}
