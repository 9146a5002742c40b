// Token request parsing: a table of bodies and the code each must produce.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseTokenRequest } from '../../../sts/index.ts';

const ORDERS = encodeURIComponent('spiffe://example.org/ns/shop/sa/orders');
const TX = encodeURIComponent('urn:ietf:params:oauth:grant-type:token-exchange');
const AT = encodeURIComponent('urn:ietf:params:oauth:token-type:access_token');

const refusals: { body: string; code: string }[] = [
  { body: '', code: 'ERR_STS_REQUEST_INVALID' },
  { body: `audience=${ORDERS}`, code: 'ERR_STS_REQUEST_INVALID' },
  { body: `grant_type=password&audience=${ORDERS}`, code: 'ERR_STS_GRANT_UNSUPPORTED' },
  {
    body: `grant_type=client_credentials&grant_type=client_credentials&audience=${ORDERS}`,
    code: 'ERR_STS_REQUEST_INVALID',
  },
  { body: 'grant_type=client_credentials', code: 'ERR_STS_AUDIENCE_MISSING' },
  { body: 'grant_type=client_credentials&audience=', code: 'ERR_STS_AUDIENCE_MISSING' },
  {
    body: `grant_type=client_credentials&audience=${ORDERS}&audience=${ORDERS}`,
    code: 'ERR_STS_AUDIENCE_MULTIPLE',
  },
  { body: `grant_type=client_credentials&audience=${ORDERS}&expires_in=0`, code: 'ERR_STS_REQUEST_INVALID' },
  { body: `grant_type=client_credentials&audience=${ORDERS}&expires_in=-5`, code: 'ERR_STS_REQUEST_INVALID' },
  {
    body: `grant_type=client_credentials&audience=${ORDERS}&expires_in=1e3`,
    code: 'ERR_STS_REQUEST_INVALID',
  },
  {
    body: `grant_type=client_credentials&audience=${ORDERS}&subject_token=x&subject_token_type=${AT}`,
    code: 'ERR_STS_REQUEST_INVALID',
  },
  { body: `grant_type=${TX}&audience=${ORDERS}&subject_token=x`, code: 'ERR_STS_REQUEST_INVALID' },
  { body: `grant_type=${TX}&audience=${ORDERS}&subject_token_type=${AT}`, code: 'ERR_STS_REQUEST_INVALID' },
  {
    body: `grant_type=${TX}&audience=${ORDERS}&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token`,
    code: 'ERR_STS_REQUEST_INVALID',
  },
];

for (const r of refusals) {
  test(`refuses "${decodeURIComponent(r.body).slice(0, 90)}" with ${r.code}`, () => {
    assert.throws(() => parseTokenRequest(r.body), { code: r.code });
  });
}

test('parses client credentials with an expires_in and a client_id', () => {
  assert.deepEqual(
    parseTokenRequest(`grant_type=client_credentials&audience=${ORDERS}&expires_in=60&client_id=x`),
    {
      grantType: 'client_credentials',
      audience: 'spiffe://example.org/ns/shop/sa/orders',
      requestedTtlSeconds: 60,
      clientId: 'x',
    },
  );
});

test('parses a token exchange with a subject token', () => {
  const r = parseTokenRequest(
    `grant_type=${TX}&audience=${ORDERS}&subject_token=a.b.c&subject_token_type=${AT}`,
  );
  assert.equal(r.grantType, 'urn:ietf:params:oauth:grant-type:token-exchange');
  assert.equal(r.subjectToken, 'a.b.c');
});

test('a non-string body is a caller mistake (TypeError)', () => {
  assert.throws(() => parseTokenRequest(undefined as unknown as string), TypeError);
});
