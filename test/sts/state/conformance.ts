// One conformance suite for every STS state store: memory, file and PostgreSQL run the same tests.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { JoinTokenRecord, StsStateStore } from '../../../sts/index.ts';

/** A store under test plus a second handle on the same storage (a restart, or another replica). */
export interface StateFixture {
  readonly store: StsStateStore;
  /** Another instance over the same storage; undefined for memory (nothing outlives it). */
  readonly twin?: () => Promise<StsStateStore>;
  /** Handles may be used at the same time (replicas); the file store's twin is a restart instead. */
  readonly shared?: boolean;
  cleanup(): Promise<void>;
}

const T0 = 1_800_000_000_000;
let n = 0;
export function tokenRecord(overrides: Partial<JoinTokenRecord> = {}): JoinTokenRecord {
  n++;
  return {
    id: (n.toString(16) + Math.random().toString(16).slice(2)).padEnd(64, '0').slice(0, 64),
    workload: 'web',
    spiffeId: 'spiffe://example.org/ns/shop/sa/web',
    createdAt: T0,
    expiresAt: T0 + 900_000,
    createdBy: 'spiffe://example.org/ns/ops/sa/admin-console',
    ...overrides,
  };
}

/** Runs the state store contract against `make`. */
export function stateStoreConformance(name: string, make: () => Promise<StateFixture>): void {
  describe(`${name} state store conformance`, () => {
    const withFixture = (fn: (f: StateFixture) => Promise<void>) => async () => {
      const f = await make();
      try {
        await fn(f);
      } finally {
        await f.cleanup();
      }
    };

    test(
      'a join token is found, redeemed once, then reported used; unknown ids are unknown',
      withFixture(async ({ store }) => {
        const rec = tokenRecord();
        await store.addJoinToken(rec);
        assert.deepEqual(await store.findJoinToken(rec.id), { record: rec });
        assert.deepEqual(await store.redeemJoinToken(rec.id, T0 + 1), { ok: true, record: rec });
        assert.deepEqual(await store.redeemJoinToken(rec.id, T0 + 2), {
          ok: false,
          reason: 'used',
          record: rec,
        });
        assert.equal((await store.findJoinToken(rec.id))?.usedAt, T0 + 1);
        assert.deepEqual(await store.redeemJoinToken('f'.repeat(64), T0), { ok: false, reason: 'unknown' });
        assert.equal(await store.findJoinToken('f'.repeat(64)), undefined);
      }),
    );

    test(
      'an expired join token is refused as expired and stays unused',
      withFixture(async ({ store }) => {
        const rec = tokenRecord({ expiresAt: T0 + 1000 });
        await store.addJoinToken(rec);
        assert.deepEqual(await store.redeemJoinToken(rec.id, T0 + 1000), {
          ok: false,
          reason: 'expired',
          record: rec,
        });
        assert.equal((await store.findJoinToken(rec.id))?.usedAt, undefined);
      }),
    );

    test(
      'a second token with the same id is refused with ERR_STS_STATE_CONFLICT',
      withFixture(async ({ store }) => {
        const rec = tokenRecord();
        await store.addJoinToken(rec);
        await assert.rejects(store.addJoinToken({ ...rec, workload: 'orders' }), {
          code: 'ERR_STS_STATE_CONFLICT',
        });
      }),
    );

    test(
      'of 20 concurrent redemptions of one token exactly one succeeds (across handles when the store is shared)',
      withFixture(async (f) => {
        const rec = tokenRecord();
        await f.store.addJoinToken(rec);
        const other = f.shared && f.twin ? await f.twin() : f.store;
        try {
          const results = await Promise.all(
            Array.from({ length: 20 }, (_, i) => (i % 2 ? other : f.store).redeemJoinToken(rec.id, T0 + 5)),
          );
          assert.equal(results.filter((r) => r.ok).length, 1);
          assert.ok(results.every((r) => r.ok || r.reason === 'used'));
        } finally {
          if (other !== f.store) await other.close();
        }
      }),
    );

    test(
      'revocations keep their latest expiry, drop out once expired, and survive a reopen',
      withFixture(async (f) => {
        await f.store.revoke({ kind: 'jti', value: 'j-1', expiresAt: T0 + 10_000 });
        await f.store.revoke({ kind: 'serial', value: 'abc', expiresAt: T0 + 20_000 });
        await f.store.revoke({ kind: 'serial', value: 'abc', expiresAt: T0 + 5_000 });
        await f.store.revoke({ kind: 'jti', value: 'abc', expiresAt: T0 + 30_000 });
        const sorted = (xs: { kind: string; value: string; expiresAt: number }[]) =>
          [...xs].sort((a, b) => (a.kind + a.value < b.kind + b.value ? -1 : 1));
        const want = [
          { kind: 'jti', value: 'abc', expiresAt: T0 + 30_000 },
          { kind: 'jti', value: 'j-1', expiresAt: T0 + 10_000 },
          { kind: 'serial', value: 'abc', expiresAt: T0 + 20_000 },
        ];
        assert.deepEqual(sorted(await f.store.revocations(T0)), want);
        assert.deepEqual(
          sorted(await f.store.revocations(T0 + 15_000)),
          want.filter((e) => e.expiresAt > T0 + 15_000),
        );
        if (f.twin) {
          const again = await f.twin();
          try {
            assert.deepEqual(sorted(await again.revocations(T0)), want);
          } finally {
            await again.close();
          }
        }
      }),
    );

    test(
      'a redeemed join token stays redeemed for another handle on the same storage',
      withFixture(async (f) => {
        if (!f.twin) return;
        const rec = tokenRecord();
        await f.store.addJoinToken(rec);
        assert.equal((await f.store.redeemJoinToken(rec.id, T0 + 1)).ok, true);
        const again = await f.twin();
        try {
          assert.deepEqual(await again.redeemJoinToken(rec.id, T0 + 2), {
            ok: false,
            reason: 'used',
            record: rec,
          });
        } finally {
          await again.close();
        }
      }),
    );
  });
}
