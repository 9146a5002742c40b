import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sidecarServiceName } from '../../sidecar/index.ts';

test('a sidecar is named after its workload: the last segment of its SPIFFE ID', () => {
  const cases: [string, string][] = [
    ['spiffe://example.org/ns/shop/sa/orders', 'orders-sidecar'],
    ['spiffe://example.org/web', 'web-sidecar'],
    ['spiffe://example.org/a/b.c-d_e', 'b.c-d_e-sidecar'],
  ];
  for (const [id, name] of cases) assert.equal(sidecarServiceName(id), name, id);
});

test('an ID without a path is a caller mistake (TypeError)', () => {
  for (const id of ['spiffe://example.org', 'spiffe://example.org/', ''])
    assert.throws(() => sidecarServiceName(id), TypeError, id);
});
