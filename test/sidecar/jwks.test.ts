import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createJwksCache } from '../../sidecar/jwks/cache.ts';
import { parseJwks } from '../../sidecar/jwks/parse.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { makeKey, quiet, startFakeSts } from './fixtures.ts';
import type { TestKey } from './fixtures.ts';

describe('parseJwks', () => {
  let k1: TestKey;
  before(async () => {
    k1 = await makeKey('k1');
  });
  it('imports a set of ES256 public keys by kid', async () => {
    const keys = await parseJwks({ keys: [k1.jwk] });
    assert.deepEqual([...keys.keys()], ['k1']);
    assert.equal(keys.get('k1')!.alg, 'ES256');
  });
  const bad: [string, () => unknown][] = [
    ['a document that is not an object', () => []],
    ['an empty key list', () => ({ keys: [] })],
    ['a key without kid', () => ({ keys: [{ ...k1.jwk, kid: undefined }] })],
    ['a repeated kid', () => ({ keys: [k1.jwk, k1.jwk] })],
    ['a private key', () => ({ keys: [{ ...k1.jwk, d: 'AAAA' }] })],
    ['a symmetric key', () => ({ keys: [{ kty: 'oct', k: 'c2VjcmV0', kid: 'h', alg: 'HS256' }] })],
    ['an RSA key', () => ({ keys: [{ kty: 'RSA', n: 'AQAB', e: 'AQAB', kid: 'r' }] })],
    ['a key whose alg disagrees with its curve', () => ({ keys: [{ ...k1.jwk, alg: 'ES384' }] })],
    ['an encryption key', () => ({ keys: [{ ...k1.jwk, use: 'enc' }] })],
    [
      'one bad key among good ones (refused whole)',
      () => ({ keys: [k1.jwk, { ...k1.jwk, kid: 'k2', x: 'bad' }] }),
    ],
  ];
  for (const [name, doc] of bad) {
    it(`refuses ${name} with ERR_SIDECAR_JWKS_INVALID`, async () => {
      await assert.rejects(parseJwks(doc()), { code: 'ERR_SIDECAR_JWKS_INVALID' });
    });
  }
});

describe('JWKS cache over mTLS', () => {
  let pki: TestPki;
  let fake: Awaited<ReturnType<typeof startFakeSts>>;
  let k1: TestKey;
  let k2: TestKey;
  before(async () => {
    pki = await makeTestPki();
    fake = await startFakeSts(pki);
    k1 = await makeKey('k1');
    k2 = await makeKey('k2');
  });
  after(async () => {
    await fake.close();
    pki.cleanup();
  });

  function cache(now: { t: number }, extra: Partial<Parameters<typeof createJwksCache>[0]> = {}) {
    return createJwksCache({
      fetchJwks: () => fake.client.fetchJwks(),
      clock: () => now.t,
      logger: quiet(),
      refreshMs: 3_600_000,
      retryMs: 3_600_000,
      maxStaleMs: 60_000,
      kidCooldownMs: 10_000,
      ...extra,
    });
  }

  it('refetches once on an unknown kid, then at most once per cooldown', async () => {
    fake.state.jwks = { status: 200, body: JSON.stringify({ keys: [k1.jwk] }) };
    const now = { t: 1_000_000 };
    const c = cache(now);
    await c.start();
    const hits = fake.state.jwksHits;
    assert.equal((await c.key('k1')).kid, 'k1');
    fake.state.jwks = { status: 200, body: JSON.stringify({ keys: [k1.jwk, k2.jwk] }) };
    assert.equal((await c.key('k2')).kid, 'k2');
    assert.equal(fake.state.jwksHits, hits + 1);
    await assert.rejects(c.key('k3'), { code: 'ERR_SIDECAR_TOKEN_KEY_UNKNOWN' });
    assert.equal(fake.state.jwksHits, hits + 1, 'no second fetch within the cooldown');
    now.t += 10_000;
    await assert.rejects(c.key('k3'), { code: 'ERR_SIDECAR_TOKEN_KEY_UNKNOWN' });
    assert.equal(fake.state.jwksHits, hits + 2);
    c.close();
  });

  it('keeps the last good set through failed and malformed fetches, never caching a failure', async () => {
    fake.state.jwks = { status: 200, body: JSON.stringify({ keys: [k1.jwk] }) };
    const now = { t: 5_000_000 };
    const c = cache(now);
    await c.start();
    for (const broken of [
      { status: 500, body: 'oops' },
      { status: 200, body: 'not json' },
      { status: 200, body: JSON.stringify({ keys: [k1.jwk, { kty: 'oct', k: 'eA', kid: 'h' }] }) },
    ]) {
      fake.state.jwks = broken;
      assert.equal(await c.refresh(), false);
      assert.equal((await c.key('k1')).kid, 'k1');
      assert.deepEqual(c.stats().kids, ['k1']);
    }
    fake.state.jwks = { status: 200, body: JSON.stringify({ keys: [k2.jwk] }) };
    assert.equal(await c.refresh(), true, 'the next fetch is tried for real');
    assert.deepEqual(c.stats().kids, ['k2']);
    c.close();
  });

  it('answers ERR_SIDECAR_JWKS_UNAVAILABLE once the last good set is older than the bound', async () => {
    fake.state.jwks = { status: 200, body: JSON.stringify({ keys: [k1.jwk] }) };
    const now = { t: 9_000_000 };
    const c = cache(now);
    await c.start();
    fake.state.jwks = { status: 503, body: '' };
    now.t += 59_000;
    c.assertKnown('k1');
    now.t += 2_000;
    assert.throws(() => c.assertKnown('k1'), { code: 'ERR_SIDECAR_JWKS_UNAVAILABLE' });
    await assert.rejects(c.key('k1'), { code: 'ERR_SIDECAR_JWKS_UNAVAILABLE' });
    c.close();
  });

  it('answers ERR_SIDECAR_JWKS_UNAVAILABLE when no set was ever fetched', async () => {
    fake.state.jwks = { status: 500, body: '' };
    const c = cache({ t: 0 });
    await c.start();
    assert.throws(() => c.assertKnown('k1'), { code: 'ERR_SIDECAR_JWKS_UNAVAILABLE' });
    c.close();
  });

  it('refreshes in the background on its period', async () => {
    fake.state.jwks = { status: 200, body: JSON.stringify({ keys: [k1.jwk] }) };
    const c = cache({ t: Date.now() }, { refreshMs: 50, clock: Date.now });
    await c.start();
    const before = c.stats().fetches;
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(c.stats().fetches >= before + 2, `background fetches (${c.stats().fetches - before})`);
    c.close();
  });

  it('refuses an STS whose certificate names another SPIFFE ID', async () => {
    const { createStsClient } = await import('../../sidecar/sts-client.ts');
    const { createPeerVerifier } = await import('../../ca/index.ts');
    const web = pki.leaf('web');
    const client = createStsClient({
      url: fake.url,
      spiffeId: 'spiffe://example.org/ns/shop/sa/orders',
      material: () => ({ cert: web.certPem, key: web.keyPem, ca: pki.rootPem }),
      verifier: () =>
        createPeerVerifier({
          trustAnchorsPem: pki.rootPem,
          intermediatesPem: pki.intermediatePem,
          trustDomain: 'example.org',
          purpose: 'serverAuth',
        }),
      timeoutMs: 1000,
      clock: Date.now,
    });
    await assert.rejects(
      client.fetchJwks(),
      (err: Error & { code?: string; cause?: Error & { code?: string } }) => {
        assert.equal(err.code, 'ERR_SIDECAR_STS_UNAVAILABLE');
        assert.equal(err.cause?.code, 'ERR_SIDECAR_PEER_IDENTITY_MISMATCH');
        return true;
      },
    );
    await client.close();
  });
});
