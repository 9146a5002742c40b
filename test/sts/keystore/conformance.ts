// One conformance suite for every keystore (STYLE.md rule 5): memory, file and vault run the same tests.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Keyring, advanceKeyring, generateSigningKey } from '../../../sts/index.ts';
import type { Keystore, KeyringPolicy, KeyringState } from '../../../sts/index.ts';
import { quietLogger } from '../helpers.ts';

/** A store under test plus a second handle on the same backing (what a second replica would open). */
export interface KeystoreFixture {
  readonly store: Keystore;
  /** Another instance over the same storage. */
  readonly twin: () => Keystore;
  cleanup(): Promise<void>;
}

const POLICY: KeyringPolicy = { rotationPeriodMs: 60_000, publishLeadMs: 1_000, retainAfterRetireMs: 10_000 };

function sampleState(now = 1_800_000_000_000): KeyringState {
  return advanceKeyring(undefined, now, POLICY, generateSigningKey).state;
}

/** Runs the keystore contract against `make`. */
export function keystoreConformance(name: string, make: () => Promise<KeystoreFixture>): void {
  describe(`${name} keystore conformance`, () => {
    const withFixture = (fn: (f: KeystoreFixture) => Promise<void>) => async () => {
      const f = await make();
      try {
        await fn(f);
      } finally {
        await f.cleanup();
      }
    };

    test(
      'reads nothing at version 0 before the first write',
      withFixture(async ({ store }) => {
        assert.deepEqual(await store.read(), { state: undefined, version: 0 });
      }),
    );

    test(
      'reads back exactly what was written, private keys included',
      withFixture(async ({ store, twin }) => {
        const state = sampleState();
        const v1 = await store.write(state, 0);
        assert.ok(v1 > 0);
        const back = await twin().read();
        assert.equal(back.version, v1);
        assert.deepEqual(back.state, state);
        assert.ok(back.state!.keys.every((k) => typeof (k.privateJwk as { d?: string }).d === 'string'));
      }),
    );

    test(
      'refuses a write at a stale version with ERR_STS_KEYSTORE_CONFLICT and keeps the stored keyring',
      withFixture(async ({ store }) => {
        const first = sampleState();
        const v1 = await store.write(first, 0);
        const v2 = await store.write(sampleState(), v1);
        assert.ok(v2 > v1);
        const stored = await store.read();
        await assert.rejects(store.write(first, v1), { code: 'ERR_STS_KEYSTORE_CONFLICT' });
        await assert.rejects(store.write(first, 0), { code: 'ERR_STS_KEYSTORE_CONFLICT' });
        assert.deepEqual(await store.read(), stored);
      }),
    );

    test(
      'lets exactly one of two racing writers at the same version win',
      withFixture(async ({ store, twin }) => {
        const other = twin();
        const results = await Promise.allSettled([
          store.write(sampleState(), 0),
          other.write(sampleState(), 0),
        ]);
        const won = results.filter((r) => r.status === 'fulfilled');
        const lost = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
        assert.equal(won.length, 1);
        assert.equal(lost.length, 1);
        assert.equal((lost[0]!.reason as { code: string }).code, 'ERR_STS_KEYSTORE_CONFLICT');
      }),
    );

    test(
      'two keyrings on one keystore agree on the keys, and a rotation by one is adopted by the other',
      withFixture(async ({ store, twin }) => {
        let now = 1_800_000_000_000;
        const clock = { now: () => now };
        const open = (ks: Keystore) =>
          Keyring.open({ keystore: ks, policy: POLICY, clock, logger: quietLogger() });
        const a = await open(store);
        const b = await open(twin());
        assert.equal(a.signer().kid, b.signer().kid);
        assert.equal(a.jwks().body, b.jwks().body);
        now += POLICY.publishLeadMs;
        const result = await a.rotate();
        assert.equal(result.rotated, true);
        await b.refresh();
        assert.equal(b.signer().kid, result.currentKid);
        assert.equal(a.jwks().etag, b.jwks().etag);
      }),
    );
  });
}
