import type { VerifiedToken } from './verify.ts';

/** Verified claims keyed by (peer certificate thumbprint, token), kept until the token expires. */
export interface ClaimsCache {
  get(thumbprint: string, token: string): VerifiedToken | undefined;
  set(thumbprint: string, token: string, verified: VerifiedToken): void;
  readonly size: number;
  clear(): void;
}

/**
 * A bounded cache so that a token is verified once per connection certificate, not once per
 * request. It never answers for an expired token (the caller still checks `exp` and revocation
 * on every hit); when full it drops expired entries, then the oldest.
 */
export function createClaimsCache(maxEntries: number, clock: () => number): ClaimsCache {
  const map = new Map<string, VerifiedToken>();
  return {
    get(thumbprint, token) {
      const key = `${thumbprint} ${token}`;
      const v = map.get(key);
      if (v && v.claims.exp * 1000 <= clock()) {
        map.delete(key);
        return undefined;
      }
      return v;
    },
    set(thumbprint, token, verified) {
      if (map.size >= maxEntries) {
        const now = clock();
        for (const [k, v] of map) if (v.claims.exp * 1000 <= now) map.delete(k);
        while (map.size >= maxEntries) map.delete(map.keys().next().value!);
      }
      map.set(`${thumbprint} ${token}`, verified);
    },
    get size() {
      return map.size;
    },
    clear: () => map.clear(),
  };
}
