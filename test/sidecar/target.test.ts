import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkRequestTarget } from '../../sidecar/inbound/target.ts';

describe('checkRequestTarget', () => {
  const refused: [string, string][] = [
    ['GET', '/orders/%2e%2e/admin'],
    ['GET', '/orders/%2E%2E/admin'],
    ['GET', '/orders/%2e/admin'],
    ['GET', '/orders/..%2fadmin'],
    ['GET', '/orders/..%2Fadmin'],
    ['GET', '/orders/%5c..'],
    ['GET', '/orders\\..\\admin'],
    ['GET', '/orders/../admin'],
    ['GET', '/orders/./admin'],
    ['GET', '/..'],
    ['GET', '//admin'],
    ['GET', '/orders//1'],
    ['GET', '/admin;x=1'],
    ['GET', '/admin%3bx=1'],
    ['GET', '/admin%00'],
    ['GET', '/admin%0a'],
    ['GET', '/admin%7F'],
    ['GET', '/admin%2500'],
    ['GET', '/%61dmin'],
    ['GET', '/admin%'],
    ['GET', '/admin%g1'],
    ['GET', '/admin%c0%af'],
    ['GET', '/admin%e0%80%ae'],
    ['GET', '/admin%ff'],
    ['GET', '/admin%c3'],
    ['GET', '/admin#frag'],
    ['GET', '/admin%23'],
    ['GET', '/admin%3F'],
    ['GET', '/admin\x00'],
    ['GET', '/admin\t'],
    ['GET', '/admin x'],
    ['GET', '/adm\u00efn'],
    ['GET', 'http://orders/admin'],
    ['GET', 'HTTP://orders/admin'],
    ['GET', 'orders:443'],
    ['CONNECT', 'orders:443'],
    ['CONNECT', '/orders'],
    ['OPTIONS', '*'],
    ['GET', ''],
    ['GET', '/orders?x=%00'],
    ['GET', '/orders?x=%c0%af'],
    ['GET', '/orders?x=#y'],
    ['GET', '/orders?x=\x01'],
  ];
  for (const [method, target] of refused) {
    it(`refuses ${method} ${JSON.stringify(target)} with ERR_SIDECAR_PATH_AMBIGUOUS`, () => {
      assert.throws(() => checkRequestTarget(method, target), { code: 'ERR_SIDECAR_PATH_AMBIGUOUS' });
    });
  }

  const accepted: [string, string][] = [
    ['/', '/'],
    ['/orders/1', '/orders/1'],
    ['/orders/', '/orders/'],
    ['/orders/1?x=a/b?c;d&e=%2F', '/orders/1'],
    ['/files/caf%C3%A9', '/files/caf%C3%A9'],
    ['/a/b.c/..d/.e', '/a/b.c/..d/.e'],
    ['/a/%20b', '/a/%20b'],
    ["/a/b:c@d!$&'()*+,=", "/a/b:c@d!$&'()*+,="],
  ];
  for (const [target, path] of accepted) {
    it(`passes ${JSON.stringify(target)} through unchanged with path ${JSON.stringify(path)}`, () => {
      const r = checkRequestTarget('GET', target);
      assert.equal(r.target, target);
      assert.equal(r.path, path);
    });
  }
});
