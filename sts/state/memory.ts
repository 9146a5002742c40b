import { StsError } from '../errors.ts';
import type {
  JoinTokenRecord,
  RedeemResult,
  RevocationEntry,
  StoredJoinToken,
  StsStateStore,
} from './store.ts';
import { JOIN_TOKEN_RETAIN_MS } from './store.ts';

/** The plain state both in-process stores share: the memory store keeps it, the file store persists it. */
export class StateMaps {
  readonly tokens = new Map<string, { record: JoinTokenRecord; usedAt?: number }>();
  readonly revoked = new Map<string, RevocationEntry>();

  addJoinToken(record: JoinTokenRecord): void {
    if (this.tokens.has(record.id))
      throw new StsError('ERR_STS_STATE_CONFLICT', 'a join token with this id already exists');
    this.tokens.set(record.id, { record });
  }
  findJoinToken(id: string): StoredJoinToken | undefined {
    const t = this.tokens.get(id);
    return t ? { ...t } : undefined;
  }
  redeemJoinToken(id: string, nowMs: number): RedeemResult {
    const t = this.tokens.get(id);
    if (!t) return { ok: false, reason: 'unknown' };
    if (t.usedAt !== undefined) return { ok: false, reason: 'used', record: t.record };
    if (t.record.expiresAt <= nowMs) return { ok: false, reason: 'expired', record: t.record };
    t.usedAt = nowMs;
    return { ok: true, record: t.record };
  }
  revoke(entry: RevocationEntry): boolean {
    const key = `${entry.kind}:${entry.value}`;
    const old = this.revoked.get(key);
    if (old && old.expiresAt >= entry.expiresAt) return false;
    this.revoked.set(key, { kind: entry.kind, value: entry.value, expiresAt: entry.expiresAt });
    return true;
  }
  revocations(nowMs: number): RevocationEntry[] {
    return [...this.revoked.values()].filter((e) => e.expiresAt > nowMs);
  }
  /** Drops revocations past their expiry and join tokens past expiry plus the retention. */
  prune(nowMs: number): void {
    for (const [k, e] of this.revoked) if (e.expiresAt <= nowMs) this.revoked.delete(k);
    for (const [k, t] of this.tokens)
      if (t.record.expiresAt + JOIN_TOKEN_RETAIN_MS <= nowMs) this.tokens.delete(k);
  }
}

/** A {@link StsStateStore} in memory: for tests and for one STS that may forget on restart. */
export class MemoryStateStore implements StsStateStore {
  readonly kind = 'memory';
  readonly #maps = new StateMaps();
  addJoinToken(record: JoinTokenRecord): Promise<void> {
    return Promise.resolve().then(() => this.#maps.addJoinToken(record));
  }
  findJoinToken(id: string): Promise<StoredJoinToken | undefined> {
    return Promise.resolve(this.#maps.findJoinToken(id));
  }
  redeemJoinToken(id: string, nowMs: number): Promise<RedeemResult> {
    return Promise.resolve(this.#maps.redeemJoinToken(id, nowMs));
  }
  revoke(entry: RevocationEntry): Promise<void> {
    this.#maps.revoke(entry);
    return Promise.resolve();
  }
  revocations(nowMs: number): Promise<RevocationEntry[]> {
    return Promise.resolve(this.#maps.revocations(nowMs));
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}
