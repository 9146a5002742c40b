/** Options of {@link createRateLimiter}. */
export interface RateLimiterOptions {
  /** Tokens added per second to each bucket. */
  readonly perSecond: number;
  /** Bucket capacity. */
  readonly burst: number;
  /** Most keys tracked at once; the least recently used key is forgotten beyond it. */
  readonly maxTracked: number;
  readonly clock: { now(): number };
}

/** A per-key token bucket limiter with bounded memory. */
export interface RateLimiter {
  /** Takes one token for `key`: 0 when allowed, else the whole seconds to wait before retrying. */
  take(key: string): number;
  /** Number of keys tracked (for tests and metrics). */
  size(): number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * Token buckets keyed on the caller's SPIFFE ID. A Map in insertion order serves as the LRU:
 * each use re-inserts the key, and the oldest is evicted once `maxTracked` is exceeded, so a
 * flood of distinct IDs cannot grow memory (an evicted caller merely starts with a full bucket).
 */
export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const { perSecond, burst, maxTracked, clock } = options;
  if (!(perSecond > 0) || !(burst >= 1) || !(maxTracked >= 1))
    throw new TypeError('"perSecond" must be > 0, "burst" and "maxTracked" >= 1');
  const buckets = new Map<string, Bucket>();
  return {
    take(key) {
      const now = clock.now();
      let bucket = buckets.get(key);
      if (bucket) {
        buckets.delete(key);
        bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) / 1000) * perSecond);
        bucket.at = now;
      } else {
        bucket = { tokens: burst, at: now };
        if (buckets.size >= maxTracked) buckets.delete(buckets.keys().next().value!);
      }
      buckets.set(key, bucket);
      if (bucket.tokens >= 1) {
        bucket.tokens -= 1;
        return 0;
      }
      return Math.max(1, Math.ceil((1 - bucket.tokens) / perSecond));
    },
    size: () => buckets.size,
  };
}
