/** Produces W3C trace-context ids (RFC-free hex) from a random source, in bulk to keep per-request cost low. */
export interface IdSource {
  /** 32 hex characters, never all zero. */
  traceId(): string;
  /** 16 hex characters, never all zero. */
  spanId(): string;
}

const POOL = 4096;

/** Builds an {@link IdSource} over `random(n)` (crypto.randomBytes in production, seeded in tests). */
export function createIdSource(random: (n: number) => Uint8Array): IdSource {
  let pool = Buffer.alloc(0);
  let offset = POOL;
  const take = (n: number): string => {
    for (;;) {
      if (offset + n > pool.length) {
        pool = Buffer.from(random(POOL));
        offset = 0;
      }
      const hex = pool.toString('hex', offset, offset + n);
      offset += n;
      if (!/^0+$/.test(hex)) return hex;
    }
  };
  return { traceId: () => take(16), spanId: () => take(8) };
}
