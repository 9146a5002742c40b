import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseSidecarConfig } from '../../sidecar/config.ts';
import { resolveRoute } from '../../sidecar/outbound/route.ts';
import type { Route } from '../../sidecar/outbound/route.ts';
import { loadPolicyFile } from '../../sidecar/policy/load.ts';

const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';
const route: Route = {
  name: 'orders',
  hosts: ['orders.shop.internal'],
  address: '127.0.0.1:15443',
  spiffeId: ORDERS,
};
const routes = new Map([
  ['orders', route],
  ['orders.shop.internal', route],
]);

describe('resolveRoute', () => {
  const ok: [string, string, string | undefined, string][] = [
    ['GET', 'http://orders/orders/1', undefined, '/orders/1'],
    ['GET', 'http://ORDERS:80/orders/1?x=1', undefined, '/orders/1?x=1'],
    ['GET', 'http://orders', undefined, '/'],
    ['GET', 'http://orders?x=1', undefined, '/?x=1'],
    ['POST', '/orders/1', 'orders.shop.internal', '/orders/1'],
    ['GET', '/orders/1', 'orders:15001', '/orders/1'],
  ];
  for (const [method, target, host, path] of ok) {
    it(`routes ${method} ${target} (Host ${host}) to orders with target ${path}`, () => {
      const r = resolveRoute(method, target, host, routes);
      assert.equal(r.route, route);
      assert.equal(r.target, path);
    });
  }
  const bad: [string, string, string | undefined, string][] = [
    ['CONNECT', 'orders:443', undefined, 'ERR_SIDECAR_PATH_AMBIGUOUS'],
    ['GET', 'https://orders/x', undefined, 'ERR_SIDECAR_PATH_AMBIGUOUS'],
    ['GET', 'http://orders/x#frag', undefined, 'ERR_SIDECAR_PATH_AMBIGUOUS'],
    ['GET', 'http://payments/x', undefined, 'ERR_SIDECAR_ROUTE_UNKNOWN'],
    ['GET', '/x', undefined, 'ERR_SIDECAR_ROUTE_UNKNOWN'],
    ['GET', '/x', '127.0.0.1:15001', 'ERR_SIDECAR_ROUTE_UNKNOWN'],
    ['GET', 'http://orders:99999/x', undefined, 'ERR_SIDECAR_PATH_AMBIGUOUS'],
    ['GET', 'http://orders:0/x', undefined, 'ERR_SIDECAR_PATH_AMBIGUOUS'],
    ['GET', '/x', 'orders:65536', 'ERR_SIDECAR_PATH_AMBIGUOUS'],
  ];
  for (const [method, target, host, code] of bad) {
    it(`refuses ${method} ${target} (Host ${host}) with ${code}`, () => {
      assert.throws(() => resolveRoute(method, target, host, routes), { code });
    });
  }
});

describe('parseSidecarConfig', () => {
  const base = {
    service: ORDERS,
    trustDomain: 'example.org',
    tls: { cert: 'c.pem', key: 'k.pem', trustBundle: 'r.pem' },
    sts: {
      url: 'https://127.0.0.1:8443',
      spiffeId: 'spiffe://example.org/ns/portcullis/sa/sts',
      issuer: 'https://sts',
    },
    inbound: { app: 'http://127.0.0.1:8082', policy: 'p.yaml' },
  };
  it('fills documented defaults and resolves paths against the base directory', () => {
    const c = parseSidecarConfig(base, 'x.yaml', '/etc/portcullis');
    assert.equal(c.tls.cert, '/etc/portcullis/c.pem');
    assert.equal(c.inbound.policy, '/etc/portcullis/p.yaml');
    assert.equal(c.sts.jwksMaxStale, 3_600_000);
    assert.equal(c.inbound.listen.port, 15443);
  });
  const bad: [string, Record<string, unknown>, RegExp][] = [
    [
      'a service outside the trust domain',
      { service: 'spiffe://other.org/x' },
      /x\.yaml: service: is outside the trust domain/,
    ],
    [
      'an http STS',
      { sts: { ...base.sts, url: 'http://127.0.0.1:8443' } },
      /x\.yaml: sts\.url: must be an https URL/,
    ],
    ['a non-http app', { inbound: { ...base.inbound, app: 'ftp://x' } }, /x\.yaml: inbound\.app:/],
    [
      'a route host listed twice',
      {
        outbound: {
          routes: [
            { name: 'a', address: '127.0.0.1:1', spiffeId: ORDERS },
            { name: 'b', hosts: ['a'], address: '127.0.0.1:2', spiffeId: ORDERS },
          ],
        },
      },
      /x\.yaml: outbound\.routes\[1\]: host "a" is already routed/,
    ],
    [
      'a route address without port',
      { outbound: { routes: [{ name: 'a', address: '127.0.0.1', spiffeId: ORDERS }] } },
      /outbound\.routes\[0\]\.address: must be host:port/,
    ],
  ];
  for (const [name, patch, message] of bad) {
    it(`refuses ${name} with one line naming the key`, () => {
      assert.throws(
        () => parseSidecarConfig({ ...base, ...patch }, 'x.yaml'),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'ERR_CONFIG_INVALID');
          assert.match(err.message, message);
          return true;
        },
      );
    });
  }
});

describe('loadPolicyFile', () => {
  it('names the file when it is missing (ERR_CONFIG_NOT_FOUND)', () => {
    assert.throws(
      () => loadPolicyFile('/nonexistent/policy.yaml'),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_CONFIG_NOT_FOUND');
        assert.match(
          err.message,
          /^\/nonexistent\/policy\.yaml: inbound\.policy: cannot be read \(ENOENT\)$/,
        );
        return true;
      },
    );
  });
});
