import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createJwksCache } from '../../sidecar/jwks/cache.ts';
import type { JwksCache } from '../../sidecar/jwks/cache.ts';
import { tokenLayer } from '../../sidecar/inbound/layers/token.ts';
import { createClaimsCache } from '../../sidecar/token/claims-cache.ts';
import { verifyAccessToken } from '../../sidecar/token/verify.ts';
import type { TokenRules } from '../../sidecar/token/verify.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { ISSUER, ORDERS, WEB, goodClaims, makeKey, quiet, sign, startFakeSts } from './fixtures.ts';
import type { TestKey } from './fixtures.ts';

const NOW = 1_800_000_000_000;
const THUMB = 'A'.repeat(43);

describe('verifyAccessToken', () => {
  let pki: TestPki;
  let fake: Awaited<ReturnType<typeof startFakeSts>>;
  let key: TestKey;
  let other: TestKey;
  let jwks: JwksCache;
  let rules: TokenRules;
  before(async () => {
    pki = await makeTestPki();
    fake = await startFakeSts(pki);
    key = await makeKey('k1');
    other = await makeKey('k1');
    fake.state.jwks = { status: 200, body: JSON.stringify({ keys: [key.jwk] }) };
    jwks = createJwksCache({
      fetchJwks: () => fake.client.fetchJwks(),
      clock: () => NOW,
      logger: quiet(),
      refreshMs: 3_600_000,
      retryMs: 3_600_000,
      maxStaleMs: 3_600_000,
      kidCooldownMs: 3_600_000,
    });
    await jwks.start();
    rules = {
      jwks,
      issuer: ISSUER,
      audience: ORDERS,
      maxTokenBytes: 4096,
      maxLifetimeSeconds: 3600,
      skewSeconds: 30,
      isJtiRevoked: (jti) => jti === 'revoked-jti',
      clock: () => NOW,
    };
  });
  after(async () => {
    jwks.close();
    await fake.close();
    pki.cleanup();
  });

  it('the token layer caches a token only for the certificate it is bound to: a replay elsewhere does not displace it', async () => {
    const cache = createClaimsCache(10, () => NOW);
    const layer = tokenLayer({ ...rules, jwks }, cache);
    const token = await sign(key, goodClaims(NOW, THUMB));
    const on = (thumbprint: string) =>
      ({ req: { rawHeaders: ['Authorization', `Bearer ${token}`] }, peer: { thumbprint } }) as never;
    await layer(on(THUMB));
    assert.ok(cache.get(THUMB, token), 'cached for its own certificate');
    await layer(on('B'.repeat(43)));
    assert.ok(cache.get(THUMB, token), 'still cached for its own certificate after a replay on another');
    assert.equal(cache.get('B'.repeat(43), token), undefined);
  });

  it('a connection presenting the same Authorization value again still gets expiry, revocation and header checks', async () => {
    let t = NOW;
    const revoked = new Set<string>();
    const cache = createClaimsCache(10, () => t);
    const layer = tokenLayer(
      { ...rules, jwks, clock: () => t, isJtiRevoked: (jti) => revoked.has(jti) },
      cache,
    );
    const token = await sign(key, goodClaims(NOW, THUMB, { jti: 'memo-jti' }));
    const peer = { thumbprint: THUMB };
    const ctx = (raw: string[]) => ({ req: { rawHeaders: raw }, peer }) as never as { verified?: unknown };
    const header = ['Authorization', `Bearer ${token}`];
    const first = ctx(header);
    await layer(first as never);
    const second = ctx([...header]);
    assert.equal(await layer(second as never), undefined, 'a repeat is answered synchronously');
    assert.equal(second.verified, first.verified);
    cache.clear();
    assert.equal(layer(ctx([...header]) as never), undefined, 'the connection remembers its last token');
    // Another value on the same connection is parsed afresh, and two headers are still two.
    await assert.rejects(async () => layer(ctx(['Authorization', `Basic ${token}`]) as never), {
      code: 'ERR_SIDECAR_TOKEN_MALFORMED',
    });
    await assert.rejects(async () => layer(ctx([...header, ...header]) as never), {
      code: 'ERR_SIDECAR_TOKEN_MULTIPLE',
    });
    await assert.rejects(async () => layer(ctx([]) as never), { code: 'ERR_SIDECAR_TOKEN_MISSING' });
    revoked.add('memo-jti');
    await assert.rejects(async () => layer(ctx(header) as never), { code: 'ERR_SIDECAR_TOKEN_REVOKED' });
    revoked.clear();
    await layer(ctx(header) as never);
    t = NOW + 301_000;
    await assert.rejects(async () => layer(ctx(header) as never), { code: 'ERR_SIDECAR_TOKEN_EXPIRED' });
  });

  it('accepts a well-formed token and returns its claims and kid', async () => {
    const v = await verifyAccessToken(await sign(key, goodClaims(NOW, THUMB)), rules);
    assert.equal(v.claims.sub, WEB);
    assert.equal(v.kid, 'k1');
  });

  const now = Math.floor(NOW / 1000);
  const table: [string, () => Promise<string>, string][] = [
    ['an oversized token', async () => `${'a'.repeat(5000)}.b.c`, 'ERR_SIDECAR_TOKEN_TOO_LARGE'],
    ['a header that is not JSON', async () => `bm90IGpzb24.e30.c2ln`, 'ERR_SIDECAR_TOKEN_MALFORMED'],
    [
      'alg none',
      async () =>
        `${Buffer.from('{"alg":"none","typ":"at+jwt","kid":"k1"}').toString('base64url')}.${Buffer.from(JSON.stringify(goodClaims(NOW, THUMB))).toString('base64url')}.`,
      'ERR_SIDECAR_TOKEN_ALG_REFUSED',
    ],
    [
      'alg HS256',
      async () =>
        sign(key, goodClaims(NOW, THUMB), { alg: 'ES256' }).then(
          (t) =>
            `${Buffer.from('{"alg":"HS256","typ":"at+jwt","kid":"k1"}').toString('base64url')}${t.slice(t.indexOf('.'))}`,
        ),
      'ERR_SIDECAR_TOKEN_ALG_REFUSED',
    ],
    [
      'alg RS256',
      async () =>
        `${Buffer.from('{"alg":"RS256","typ":"at+jwt","kid":"k1"}').toString('base64url')}.e30.c2ln`,
      'ERR_SIDECAR_TOKEN_ALG_REFUSED',
    ],
    [
      'a crit header',
      async () =>
        `${Buffer.from('{"alg":"ES256","typ":"at+jwt","kid":"k1","crit":["x"],"x":1}').toString('base64url')}.e30.c2ln`,
      'ERR_SIDECAR_TOKEN_MALFORMED',
    ],
    [
      'typ JWT',
      async () => sign(key, goodClaims(NOW, THUMB), { typ: 'JWT' }),
      'ERR_SIDECAR_TOKEN_TYP_INVALID',
    ],
    [
      'no typ',
      async () => sign(key, goodClaims(NOW, THUMB), { typ: undefined }),
      'ERR_SIDECAR_TOKEN_TYP_INVALID',
    ],
    [
      'no kid',
      async () => sign(key, goodClaims(NOW, THUMB), { kid: undefined }),
      'ERR_SIDECAR_TOKEN_KEY_UNKNOWN',
    ],
    [
      'an unknown kid',
      async () => sign(key, goodClaims(NOW, THUMB), { kid: 'k9' }),
      'ERR_SIDECAR_TOKEN_KEY_UNKNOWN',
    ],
    [
      'a signature by another key under a known kid',
      async () => sign(other, goodClaims(NOW, THUMB)),
      'ERR_SIDECAR_TOKEN_SIGNATURE_INVALID',
    ],
    [
      'a tampered payload',
      async () => {
        const t = await sign(key, goodClaims(NOW, THUMB));
        const [h, , s] = t.split('.');
        return `${h}.${Buffer.from(JSON.stringify(goodClaims(NOW, THUMB, { sub: 'spiffe://example.org/x' }))).toString('base64url')}.${s}`;
      },
      'ERR_SIDECAR_TOKEN_SIGNATURE_INVALID',
    ],
    [
      'no exp',
      async () => sign(key, goodClaims(NOW, THUMB, { exp: undefined })),
      'ERR_SIDECAR_TOKEN_CLAIMS_INVALID',
    ],
    [
      'a fractional exp',
      async () => sign(key, goodClaims(NOW, THUMB, { exp: now + 10.5 })),
      'ERR_SIDECAR_TOKEN_CLAIMS_INVALID',
    ],
    [
      'a string exp',
      async () => sign(key, goodClaims(NOW, THUMB, { exp: String(now + 10) })),
      'ERR_SIDECAR_TOKEN_CLAIMS_INVALID',
    ],
    [
      'another audience',
      async () => sign(key, goodClaims(NOW, THUMB, { aud: WEB })),
      'ERR_SIDECAR_TOKEN_AUDIENCE_INVALID',
    ],
    [
      'an audience array holding this service',
      async () => sign(key, goodClaims(NOW, THUMB, { aud: [ORDERS] })),
      'ERR_SIDECAR_TOKEN_AUDIENCE_INVALID',
    ],
    [
      'another issuer',
      async () => sign(key, goodClaims(NOW, THUMB, { iss: 'https://evil' })),
      'ERR_SIDECAR_TOKEN_ISSUER_INVALID',
    ],
    [
      'no jti',
      async () => sign(key, goodClaims(NOW, THUMB, { jti: undefined })),
      'ERR_SIDECAR_TOKEN_CLAIMS_INVALID',
    ],
    [
      'no cnf',
      async () => sign(key, goodClaims(NOW, THUMB, { cnf: undefined })),
      'ERR_SIDECAR_TOKEN_CLAIMS_INVALID',
    ],
    [
      'nbf in the future beyond skew',
      async () => sign(key, goodClaims(NOW, THUMB, { nbf: now + 31 })),
      'ERR_SIDECAR_TOKEN_NOT_YET_VALID',
    ],
    [
      'iat in the future beyond skew',
      async () => sign(key, goodClaims(NOW, THUMB, { iat: now + 31, nbf: now })),
      'ERR_SIDECAR_TOKEN_NOT_YET_VALID',
    ],
    [
      'a lifetime above the maximum',
      async () => sign(key, goodClaims(NOW, THUMB, { exp: now + 3601 })),
      'ERR_SIDECAR_TOKEN_LIFETIME_TOO_LONG',
    ],
    [
      'exp reached exactly',
      async () => sign(key, goodClaims(NOW, THUMB, { iat: now - 60, nbf: now - 60, exp: now })),
      'ERR_SIDECAR_TOKEN_EXPIRED',
    ],
    [
      'a revoked jti',
      async () => sign(key, goodClaims(NOW, THUMB, { jti: 'revoked-jti' })),
      'ERR_SIDECAR_TOKEN_REVOKED',
    ],
  ];
  for (const [name, make, code] of table) {
    it(`refuses ${name} with ${code}`, async () => {
      await assert.rejects(verifyAccessToken(await make(), rules), { code });
    });
  }

  it('tolerates nbf within the skew', async () => {
    await verifyAccessToken(await sign(key, goodClaims(NOW, THUMB, { nbf: now + 29 })), rules);
  });
});

describe('claims cache', () => {
  const v = (exp: number) => ({ kid: 'k', claims: { exp } as never });
  it('keys entries by certificate thumbprint and token, and forgets expired tokens', () => {
    let t = 1_000_000;
    const c = createClaimsCache(10, () => t);
    c.set('thumb-a', 'tok', v(1_001));
    assert.ok(c.get('thumb-a', 'tok'));
    assert.equal(c.get('thumb-b', 'tok'), undefined, 'another certificate misses');
    t = 1_001_000;
    assert.equal(c.get('thumb-a', 'tok'), undefined, 'expired');
    assert.equal(c.size, 0);
  });
  it('stays within its bound, dropping expired entries then the oldest', () => {
    const t = 0;
    const c = createClaimsCache(3, () => t);
    for (let i = 0; i < 10; i++) c.set('t', `tok${i}`, v(100));
    assert.equal(c.size, 3);
    assert.ok(c.get('t', 'tok9'));
    assert.equal(c.get('t', 'tok0'), undefined);
  });
});
