import { createHash } from 'node:crypto';

/** One deny-list entry: a jti or a certificate serial, kept until `expiresAt` (RFC 3339). */
export interface DenyEntry {
  readonly value: string;
  readonly expiresAt: string;
}

/** The body of `GET /v1/revocations`: both lists sorted by value, expired entries left out. */
export interface RevocationsDocument {
  readonly jtis: readonly { readonly jti: string; readonly expiresAt: string }[];
  readonly serials: readonly { readonly serial: string; readonly expiresAt: string }[];
}

/** The jti and serial deny-list. Entries expire (a token or certificate past its end needs no entry). */
export interface DenyList {
  /** Adds or extends an entry; returns false if it was already there with a later expiry. */
  revokeJti(jti: string, expiresAtMs: number): boolean;
  revokeSerial(serial: string, expiresAtMs: number): boolean;
  isJtiRevoked(jti: string): boolean;
  /** `serial` in canonical lowercase hex. */
  isSerialRevoked(serial: string): boolean;
  /** The current document, its JSON and a strong ETag; recomputed only after a change or expiry. */
  snapshot(): { readonly document: RevocationsDocument; readonly body: string; readonly etag: string };
}

/** Creates an in-memory {@link DenyList}; `clock` decides expiry. */
export function createDenyList(clock: { now(): number }): DenyList {
  const jtis = new Map<string, number>();
  const serials = new Map<string, number>();
  let cached: ReturnType<DenyList['snapshot']> | undefined;
  let cachedUntil = 0;

  const add = (map: Map<string, number>, value: string, at: number) => {
    const old = map.get(value);
    if (old !== undefined && old >= at) return false;
    map.set(value, at);
    cached = undefined;
    return true;
  };
  const live = (map: Map<string, number>, value: string) => {
    const at = map.get(value);
    return at !== undefined && at > clock.now();
  };
  const prune = (map: Map<string, number>, now: number) => {
    for (const [k, at] of map) if (at <= now) map.delete(k);
  };

  return {
    revokeJti: (jti, at) => add(jtis, jti, at),
    revokeSerial: (serial, at) => add(serials, serial, at),
    isJtiRevoked: (jti) => live(jtis, jti),
    isSerialRevoked: (serial) => serials.size > 0 && live(serials, serial),
    snapshot() {
      const now = clock.now();
      if (cached && now < cachedUntil) return cached;
      prune(jtis, now);
      prune(serials, now);
      const iso = (ms: number) => new Date(ms).toISOString();
      const sorted = (m: Map<string, number>) => [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const document: RevocationsDocument = {
        jtis: sorted(jtis).map(([jti, at]) => ({ jti, expiresAt: iso(at) })),
        serials: sorted(serials).map(([serial, at]) => ({ serial, expiresAt: iso(at) })),
      };
      const body = JSON.stringify(document);
      cached = { document, body, etag: `"${createHash('sha256').update(body).digest('base64url')}"` };
      cachedUntil = Math.min(...jtis.values(), ...serials.values(), Number.POSITIVE_INFINITY);
      return cached;
    },
  };
}
