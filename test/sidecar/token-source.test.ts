import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createTokenSource } from '../../sidecar/outbound/token-source.ts';
import { quiet } from './fixtures.ts';

/** A token endpoint whose answers the test controls; counts calls per audience. */
function endpoint(now: { t: number }, ttlMs: number) {
  const calls: string[] = [];
  let failing = false;
  let gate: Promise<void> | undefined;
  return {
    calls,
    fail(v: boolean) {
      failing = v;
    },
    hold(p: Promise<void> | undefined) {
      gate = p;
    },
    async request(aud: string) {
      calls.push(aud);
      if (gate) await gate;
      if (failing) throw new Error('connect ECONNREFUSED');
      return { token: `tok-${aud}-${calls.length}`, expiresAtMs: now.t + ttlMs };
    },
  };
}

describe('outbound token source', () => {
  it('fetches one token per audience, with one fetch in flight for concurrent callers', async () => {
    const now = { t: 0 };
    const ep = endpoint(now, 300_000);
    let release!: () => void;
    ep.hold(new Promise<void>((r) => (release = r)));
    const s = createTokenSource({
      request: (a) => ep.request(a),
      clock: () => now.t,
      logger: quiet(),
      refreshBeforeMs: 60_000,
      retryAfterMs: 1_000,
    });
    const all = Promise.all([s.get('a'), s.get('a'), s.get('a'), s.get('b')]);
    release();
    const [t1, t2, t3, t4] = await all;
    assert.equal(t1, t2);
    assert.equal(t2, t3);
    assert.notEqual(t1, t4);
    assert.deepEqual(ep.calls.sort(), ['a', 'b']);
  });

  it('serves the cached token, refreshes it in the background before expiry', async () => {
    const now = { t: 0 };
    const ep = endpoint(now, 300_000);
    const s = createTokenSource({
      request: (a) => ep.request(a),
      clock: () => now.t,
      logger: quiet(),
      refreshBeforeMs: 60_000,
      retryAfterMs: 1_000,
    });
    const first = await s.get('a');
    now.t = 200_000;
    assert.equal(await s.get('a'), first);
    assert.equal(ep.calls.length, 1);
    now.t = 241_000;
    assert.equal(await s.get('a'), first, 'still the old one while the refresh runs');
    await new Promise((r) => setImmediate(r));
    assert.equal(ep.calls.length, 2);
    assert.notEqual(await s.get('a'), first);
  });

  it('keeps using a cached token while the STS is down, then fails at once with ERR_SIDECAR_TOKEN_UNAVAILABLE', async () => {
    const now = { t: 0 };
    const ep = endpoint(now, 10_000);
    const s = createTokenSource({
      request: (a) => ep.request(a),
      clock: () => now.t,
      logger: quiet(),
      refreshBeforeMs: 60_000,
      retryAfterMs: 1_000,
    });
    const tok = await s.get('a');
    ep.fail(true);
    now.t = 6_000;
    assert.equal(await s.get('a'), tok);
    await new Promise((r) => setImmediate(r));
    now.t = 8_500;
    assert.equal(await s.get('a'), tok);
    now.t = 9_500;
    await assert.rejects(s.get('a'), { code: 'ERR_SIDECAR_TOKEN_UNAVAILABLE' });
    const calls = ep.calls.length;
    await assert.rejects(s.get('a'), { code: 'ERR_SIDECAR_TOKEN_UNAVAILABLE' });
    assert.equal(ep.calls.length, calls, 'within the retry period no new fetch is tried');
    ep.fail(false);
    now.t = 11_000;
    assert.match(await s.get('a'), /^tok-a-/);
  });

  it('drops cached tokens on invalidate (the certificate they are bound to changed)', async () => {
    const now = { t: 0 };
    const ep = endpoint(now, 300_000);
    const s = createTokenSource({
      request: (a) => ep.request(a),
      clock: () => now.t,
      logger: quiet(),
      refreshBeforeMs: 60_000,
      retryAfterMs: 1_000,
    });
    const a = await s.get('a');
    s.invalidate();
    assert.notEqual(await s.get('a'), a);
    assert.equal(s.stats().fetches, 2);
  });

  it('fetches new tokens for the cached audiences at once on invalidate, so an STS outage right after a renewal costs no call', async () => {
    const now = { t: 0 };
    const ep = endpoint(now, 300_000);
    const s = createTokenSource({
      request: (a) => ep.request(a),
      clock: () => now.t,
      logger: quiet(),
      refreshBeforeMs: 60_000,
      retryAfterMs: 1_000,
    });
    const a = await s.get('a');
    await s.get('b');
    s.invalidate();
    assert.deepEqual(ep.calls, ['a', 'b', 'a', 'b'], 'both refetched without a call asking');
    await new Promise((r) => setImmediate(r));
    ep.fail(true); // the STS goes away after the prefetch
    const again = await s.get('a');
    assert.notEqual(again, a);
    assert.equal(ep.calls.length, 4, 'served from the prefetched cache');
  });
});
