import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadRegistry, parseRegistry } from '../../core/index.ts';

const one = (text: string) => parseRegistry([{ file: 'ids.yaml', text }]);

test('the example registry loads with its workloads, audiences, TTLs and roles', () => {
  const reg = loadRegistry(new URL('../../identities', import.meta.url).pathname);
  assert.equal(reg.trustDomain, 'example.org');
  for (const name of ['sts', 'web', 'orders', 'admin-console', 'security-console'])
    assert.ok(reg.byName(name), name);
  const web = reg.byName('web')!;
  assert.deepEqual(web.audiences, ['spiffe://example.org/ns/shop/sa/orders']);
  assert.equal(web.tokenTtlMs, 300_000);
  assert.equal(web.svidTtlMs, 3_600_000, 'svidTtl defaults to 1h');
  assert.deepEqual(reg.byName('admin-console')!.roles, ['admin']);
  assert.deepEqual(reg.byName('security-console')!.roles, ['audit-reader']);
  assert.equal(reg.byId('spiffe://example.org/ns/shop/sa/orders')!.name, 'orders');
  assert.equal(reg.byId('spiffe://example.org/ns/shop/sa/nobody'), undefined);
});

test('registry errors name the file, the key path and the problem', () => {
  const head = 'trustDomain: example.org\nworkloads:\n';
  const cases: [string, string, string][] = [
    [
      head + '  - name: a\n    spiffeId: spiffe://example.org/a\n    tokenTTL: 5m\n',
      'ERR_CONFIG_INVALID',
      'ids.yaml: workloads[0].tokenTTL: unknown key (did you mean "tokenTtl"?)',
    ],
    [
      head + '  - name: a\n    spiffeId: spiffe://example.org/a/../b\n',
      'ERR_CONFIG_INVALID',
      'ids.yaml: workloads[0].spiffeId: "spiffe://example.org/a/../b" is not a SPIFFE ID: path cannot contain dot segments',
    ],
    [
      head +
        '  - name: a\n    spiffeId: spiffe://example.org/a\n  - name: a\n    spiffeId: spiffe://example.org/b\n',
      'ERR_REGISTRY_INVALID',
      'ids.yaml: workloads[1].name: duplicate name "a" (also at ids.yaml workloads[0])',
    ],
    [
      head +
        '  - name: a\n    spiffeId: spiffe://example.org/a\n  - name: b\n    spiffeId: spiffe://example.org/a\n',
      'ERR_REGISTRY_INVALID',
      'ids.yaml: workloads[1].spiffeId: duplicate SPIFFE ID "spiffe://example.org/a"',
    ],
    [
      head + '  - name: a\n    spiffeId: spiffe://other.org/a\n',
      'ERR_REGISTRY_INVALID',
      'ids.yaml: workloads[0].spiffeId: "spiffe://other.org/a" is outside the trust domain "example.org"',
    ],
    [
      head + '  - name: a\n    spiffeId: spiffe://example.org\n',
      'ERR_REGISTRY_INVALID',
      'ids.yaml: workloads[0].spiffeId: a workload ID needs a path',
    ],
    [
      head +
        '  - name: a\n    spiffeId: spiffe://example.org/a\n    audiences: [spiffe://example.org/ghost]\n',
      'ERR_REGISTRY_INVALID',
      'ids.yaml: workloads[0].audiences[0]: "spiffe://example.org/ghost" names no registered workload',
    ],
    [
      head + '  - name: a\n    spiffeId: spiffe://example.org/a\n    roles: [root]\n',
      'ERR_CONFIG_INVALID',
      'ids.yaml: workloads[0].roles[0]: must be one of "admin", "audit-reader", got the string "root"',
    ],
    [
      head + '  - name: a\n    spiffeId: spiffe://example.org/a\n    tokenTtl: 2h\n',
      'ERR_REGISTRY_INVALID',
      'ids.yaml: workloads[0].tokenTtl: exceeds the global cap of 1h',
    ],
    [
      head + '  - name: a\n    spiffeId: spiffe://example.org/a\n    svidTtl: 25h\n',
      'ERR_REGISTRY_INVALID',
      'ids.yaml: workloads[0].svidTtl: exceeds the cap of 24h',
    ],
    [
      head + '  - name: a\n    spiffeId: spiffe://example.org/a\n    svidTtl: 30s\n',
      'ERR_REGISTRY_INVALID',
      'ids.yaml: workloads[0].svidTtl: must be at least 1m',
    ],
    [
      head + '  - name: A_b\n    spiffeId: spiffe://example.org/a\n',
      'ERR_CONFIG_INVALID',
      'ids.yaml: workloads[0].name: must be lowercase letters',
    ],
    [
      head + '  - name: a\n    spiffeId: spiffe://example.org/a\n    dnsNames: ["bad name"]\n',
      'ERR_CONFIG_INVALID',
      'ids.yaml: workloads[0].dnsNames[0]: must be a lowercase DNS name',
    ],
    [
      head + '  - name: a\n    spiffeId: spiffe://example.org/a\n    ipAddresses: [300.1.1.1]\n',
      'ERR_CONFIG_INVALID',
      'ids.yaml: workloads[0].ipAddresses[0]: must be an IPv4 or IPv6 address',
    ],
    [
      head + "  - name: a\n    spiffeId: spiffe://example.org/a\n    ipAddresses: ['::ffff:10.0.0.1']\n",
      'ERR_CONFIG_INVALID',
      'ids.yaml: workloads[0].ipAddresses[0]: an IPv6 address with a dotted IPv4 part is not supported: write the IPv4 address, or the IPv6 one in hex',
    ],
    [
      'trustDomain: example.org\nworkloads: []\n',
      'ERR_CONFIG_INVALID',
      'ids.yaml: workloads: must list at least one workload',
    ],
    [
      'trustDomain: Example.org\nworkloads: []\n',
      'ERR_CONFIG_INVALID',
      'ids.yaml: trustDomain: "Example.org" is not a trust domain',
    ],
  ];
  for (const [text, code, message] of cases) {
    assert.throws(
      () => one(text),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.equal(err.code, code, err.message);
        assert.ok(err.message.startsWith(message), `got      ${err.message}\nexpected ${message}`);
        return true;
      },
    );
  }
});

test('files of one registry must agree on the trust domain and not repeat workloads', () => {
  const a = {
    file: 'a.yaml',
    text: 'trustDomain: example.org\nworkloads:\n  - {name: a, spiffeId: "spiffe://example.org/a"}\n',
  };
  const b = {
    file: 'b.yaml',
    text: 'trustDomain: example.com\nworkloads:\n  - {name: b, spiffeId: "spiffe://example.com/b"}\n',
  };
  const c = {
    file: 'c.yaml',
    text: 'trustDomain: example.org\nworkloads:\n  - {name: a, spiffeId: "spiffe://example.org/c"}\n',
  };
  assert.throws(() => parseRegistry([a, b]), {
    code: 'ERR_REGISTRY_INVALID',
    message: 'b.yaml: trustDomain: "example.com" differs from "example.org" in a.yaml',
  });
  assert.throws(() => parseRegistry([a, c]), {
    code: 'ERR_REGISTRY_INVALID',
    message: /^c\.yaml: workloads\[0\]\.name: duplicate name "a" \(also at a\.yaml/,
  });
});

test('a missing directory or one without YAML files is ERR_CONFIG_NOT_FOUND', () => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-reg-'));
  try {
    assert.throws(() => loadRegistry(join(dir, 'missing')), {
      code: 'ERR_CONFIG_NOT_FOUND',
      message: /missing: no such file or directory/,
    });
    assert.throws(() => loadRegistry(dir), {
      code: 'ERR_CONFIG_NOT_FOUND',
      message: /holds no identity registry/,
    });
    writeFileSync(
      join(dir, 'x.yaml'),
      'trustDomain: example.org\nworkloads:\n  - {name: a, spiffeId: "spiffe://example.org/a"}\n',
    );
    assert.equal(loadRegistry(dir).workloads.length, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
