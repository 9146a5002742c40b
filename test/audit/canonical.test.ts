import { test } from 'node:test';
import assert from 'node:assert/strict';
import canonicalize from 'canonicalize';
import { canonicalJson } from '../../audit/index.ts';

const cases: [string, unknown][] = [
  ['sorted keys', { b: 1, a: 2, c: { z: true, y: null } }],
  ['UTF-16 key order (not code point order)', { '\u{1F600}': 1, '\uFFFF': 2, a: 3 }],
  ['numbers in ECMAScript form', { n: [0, -0, 1e21, 1e-7, 0.1 + 0.2, 123456789012345680000, -1.5] }],
  ['string escapes', { s: '"\\\n\t\u0001\u007f\u2028é😀' }],
  ['nested arrays', [[1, [2, [3]]], { x: [] }, {}]],
  ['undefined members are left out', { a: undefined, b: 1 }],
];

for (const [name, value] of cases) {
  test(`canonical JSON matches the canonicalize package: ${name}`, () => {
    assert.equal(canonicalJson(value), canonicalize(value));
  });
}

const refused: [string, unknown][] = [
  ['NaN', { n: Number.NaN }],
  ['Infinity', [Number.POSITIVE_INFINITY]],
  ['a lone surrogate', { s: '\uD800x' }],
  ['a function', { f: () => 1 }],
  ['a bigint', { b: 1n }],
];

for (const [name, value] of refused) {
  test(`canonical JSON refuses ${name} with ERR_AUDIT_RECORD_INVALID`, () => {
    assert.throws(() => canonicalJson(value), { code: 'ERR_AUDIT_RECORD_INVALID' });
  });
}

test('keys that contain NUL do not collide with another shape in the key-order cache', () => {
  assert.equal(canonicalJson({ a: 1, b: 2 }), '{"a":1,"b":2}');
  assert.equal(canonicalJson({ 'a\u0000b': 1 }), '{"a\\u0000b":1}');
});
