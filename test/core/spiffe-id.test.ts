import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatSpiffeId, parseSpiffeId, parseTrustDomain, SpiffeIdError } from '../../core/index.ts';

test('valid SPIFFE IDs parse into trust domain and path', () => {
  const cases: [string, string, string][] = [
    ['spiffe://example.org', 'example.org', ''],
    ['spiffe://example.org/ns/shop/sa/orders', 'example.org', '/ns/shop/sa/orders'],
    ['spiffe://a-b_c.d/X.y-z_0', 'a-b_c.d', '/X.y-z_0'],
    ['spiffe://1.2.3.4/workload', '1.2.3.4', '/workload'],
    ['spiffe://example.org/...', 'example.org', '/...'],
    ['spiffe://example.org/.a/a.', 'example.org', '/.a/a.'],
  ];
  for (const [input, td, path] of cases) {
    const id = parseSpiffeId(input);
    assert.equal(id.trustDomain, td, input);
    assert.equal(id.path, path, input);
    assert.equal(id.uri, input, input);
  }
});

test('invalid SPIFFE IDs are refused with ERR_SPIFFE_ID_INVALID and the broken rule', () => {
  const cases: [string, RegExp][] = [
    ['', /empty/],
    ['http://example.org/a', /scheme/],
    ['SPIFFE://example.org/a', /scheme/],
    ['spiffe:/example.org/a', /scheme/],
    ['example.org/a', /scheme/],
    ['spiffe://', /trust domain is missing/],
    ['spiffe:///path', /trust domain is missing/],
    ['spiffe://Example.org/a', /lowercase/],
    ['spiffe://EXAMPLE.ORG', /lowercase/],
    ['spiffe://example.org:8443/a', /port/],
    ['spiffe://user@example.org/a', /userinfo/],
    ['spiffe://user:pw@example.org/a', /port|userinfo/],
    ['spiffe://example.org/a?x=1', /query/],
    ['spiffe://example.org?x=1', /query/],
    ['spiffe://example.org/a#frag', /fragment/],
    ['spiffe://example.org/a%2Fb', /percent/],
    ['spiffe://exa%6Dple.org/a', /percent/],
    ['spiffe://example.org/', /trailing slash/],
    ['spiffe://example.org/a/', /trailing slash/],
    ['spiffe://example.org//a', /empty segments/],
    ['spiffe://example.org/a//b', /empty segments/],
    ['spiffe://example.org/./a', /dot segments/],
    ['spiffe://example.org/a/..', /dot segments/],
    ['spiffe://example.org/a/../b', /dot segments/],
    ['spiffe://example.org/a b', /path segment characters/],
    ['spiffe://example.org/caf\u00e9', /path segment characters/],
    ['spiffe://exa mple.org/a', /trust domain characters/],
    ['spiffe://example.org/a\\b', /path segment characters/],
    [`spiffe://example.org/${'a'.repeat(2048)}`, /longer than 2048 bytes/],
  ];
  for (const [input, reason] of cases) {
    assert.throws(
      () => parseSpiffeId(input),
      (err: unknown) =>
        err instanceof SpiffeIdError && err.code === 'ERR_SPIFFE_ID_INVALID' && reason.test(err.message),
      JSON.stringify(input.slice(0, 60)),
    );
  }
});

test('an ID of exactly 2048 bytes is accepted and one byte more is not', () => {
  const prefix = 'spiffe://example.org/';
  const ok = prefix + 'a'.repeat(2048 - prefix.length);
  assert.equal(parseSpiffeId(ok).uri.length, 2048);
  assert.throws(() => parseSpiffeId(ok + 'a'), { code: 'ERR_SPIFFE_ID_INVALID' });
});

test('a non-string input is a caller mistake (TypeError)', () => {
  assert.throws(() => parseSpiffeId(42 as unknown as string), TypeError);
});

test('formatSpiffeId builds and validates; parseTrustDomain refuses a bad domain', () => {
  assert.equal(formatSpiffeId('example.org', 'ns', 'shop').uri, 'spiffe://example.org/ns/shop');
  assert.throws(() => formatSpiffeId('example.org', '..'), { code: 'ERR_SPIFFE_ID_INVALID' });
  assert.equal(parseTrustDomain('example.org'), 'example.org');
  assert.throws(() => parseTrustDomain('Example.org'), { code: 'ERR_SPIFFE_ID_INVALID' });
});
