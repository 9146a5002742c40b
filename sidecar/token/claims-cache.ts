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
  // Keyed by token, holding the thumbprint it was verified with: a bound token is only ever valid on
  // one certificate, so this is the (certificate, token) key without building a long string per request.
  const map = new Map<string, { readonly thumbprint: string; readonly verified: VerifiedToken }>();
  return {
    get(thumbprint, token) {
      const e = map.get(token);
      if (!e || e.thumbprint !== thumbprint) return undefined;
      if (e.verified.claims.exp * 1000 <= clock()) {
        map.delete(token);
        return undefined;
      }
      return e.verified;
    },
    set(thumbprint, token, verified) {
      if (map.size >= maxEntries) {
        const now = clock();
        for (const [k, v] of map) if (v.verified.claims.exp * 1000 <= now) map.delete(k);
        while (map.size >= maxEntries) map.delete(map.keys().next().value!);
      }
      map.set(token, { thumbprint, verified });
    },
    get size() {
      return map.size;
    },
    clear: () => map.clear(),
  };
}
