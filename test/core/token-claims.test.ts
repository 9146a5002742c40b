import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { buildAccessTokenClaims, certificateThumbprint, parseAccessTokenClaims } from '../../core/index.ts';

const thumbprint = certificateThumbprint(Buffer.from('a certificate'));
const good = buildAccessTokenClaims({
  issuer: 'https://sts.example.org',
  subject: 'spiffe://example.org/web',
  audience: 'spiffe://example.org/orders',
  clientId: 'spiffe://example.org/web',
  nowSeconds: 1_800_000_000,
  ttlSeconds: 300,
  jti: 'j1',
  thumbprint,
});

test('claims are built with nbf = iat, exp = iat + ttl and the cnf thumbprint', () => {
  assert.equal(good.exp - good.iat, 300);
  assert.equal(good.nbf, good.iat);
  assert.equal(good.cnf['x5t#S256'], createHash('sha256').update('a certificate').digest('base64url'));
  assert.deepEqual(parseAccessTokenClaims(JSON.parse(JSON.stringify(good))), good);
});

test('payloads of the wrong shape are refused with ERR_TOKEN_CLAIMS_INVALID', () => {
  const cases: [string, unknown][] = [
    ['not an object', 'x'],
    ['array', []],
    ['aud array', { ...good, aud: [good.aud] }],
    ['missing exp', { ...good, exp: undefined }],
    ['float exp', { ...good, exp: 1.5 }],
    ['string iat', { ...good, iat: '1' }],
    ['empty sub', { ...good, sub: '' }],
    ['no jti', { ...good, jti: undefined }],
    ['no cnf', { ...good, cnf: undefined }],
    ['short thumbprint', { ...good, cnf: { 'x5t#S256': 'abc' } }],
    ['bad act', { ...good, act: 'x' }],
  ];
  for (const [name, payload] of cases)
    assert.throws(() => parseAccessTokenClaims(payload), { code: 'ERR_TOKEN_CLAIMS_INVALID' }, name);
});

test('a non-positive ttl is a caller mistake', () => {
  assert.throws(
    () =>
      buildAccessTokenClaims({
        ...{ issuer: 'i', subject: 's', audience: 'a', clientId: 'c', jti: 'j', thumbprint },
        nowSeconds: 1,
        ttlSeconds: 0,
      }),
    TypeError,
  );
});
