import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { compilePolicy, DEFAULT_DENY_RULE } from '../../sidecar/policy/compile.ts';
import { parsePolicy } from '../../sidecar/policy/parse.ts';
import { prng } from '../helpers/prng.ts';
import { casbinFor } from './fixtures.ts';

const WEB = 'spiffe://example.org/ns/shop/sa/web';
const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';
const ADMIN = 'spiffe://example.org/ns/ops/sa/admin-console';

function bigPolicy(n: number): string {
  const lines = [
    `service: ${ORDERS}`,
    'mode: enforce',
    'roles:',
    `  r0: [${WEB}]`,
    `  r1: [${WEB}, ${ADMIN}]`,
    `  r2: [${ADMIN}]`,
    'rules:',
  ];
  const methods = ['GET', 'POST', 'PUT', 'DELETE'];
  for (let i = 0; i < n; i++) {
    const who = i % 5 === 0 ? `subjects: ['*']` : i % 5 === 1 ? `subjects: [${WEB}]` : `role: r${i % 3}`;
    const effect = i % 7 === 0 ? 'deny' : 'allow';
    // A few rules whose first segment is not literal, and the root: the compiled index's shared slots.
    const special: Record<number, string> = { 3: '/:tenant/items/*', 8: '/*', 12: '/', 15: '/:tenant' };
    const path =
      special[i % 17] ??
      [`/svc${i % 13}/:id`, `/svc${i % 13}/items/*`, `/svc${i % 13}`, `/v${i % 4}/file.json`][i % 4];
    const m = i % 6 === 0 ? '' : `\n    methods: [${methods[i % 4]}${i % 9 === 0 ? ', GET' : ''}]`;
    lines.push(`  - id: rule-${i}\n    effect: ${effect}\n    ${who}${m}\n    paths: [${path}]`);
  }
  return lines.join('\n') + '\n';
}

describe('policy parsing', () => {
  it('parses the example orders policy with its hash and role membership', () => {
    const p = parsePolicy(readFileSync('policies/orders.yaml', 'utf8'), 'policies/orders.yaml', ORDERS);
    assert.equal(p.mode, 'enforce');
    assert.match(p.hash, /^sha256:[0-9a-f]{64}$/);
    assert.deepEqual(p.roles.get('storefront'), [WEB]);
    assert.equal(p.rules[1]!.effect, 'deny');
  });

  const bad: [string, string, RegExp][] = [
    [
      'unknown key with a hint',
      `service: ${ORDERS}\nmode: enforce\nrules: []\nrulez: []\n`,
      /p\.yaml: rulez: unknown key \(did you mean "rules"\?\)/,
    ],
    ['bad mode', `service: ${ORDERS}\nmode: maybe\nrules: []\n`, /p\.yaml: mode: must be one of/],
    [
      'role and subjects',
      `service: ${ORDERS}\nmode: enforce\nroles: {a: [${WEB}]}\nrules:\n  - id: x\n    role: a\n    subjects: ['*']\n    paths: [/a]\n`,
      /rules\[0\]: needs exactly one of/,
    ],
    [
      'undeclared role',
      `service: ${ORDERS}\nmode: enforce\nrules:\n  - id: x\n    role: ghost\n    paths: [/a]\n`,
      /rules\[0\]\.role: role "ghost" is not declared/,
    ],
    [
      'duplicate id',
      `service: ${ORDERS}\nmode: enforce\nrules:\n  - {id: x, subjects: ['*'], paths: [/a]}\n  - {id: x, subjects: ['*'], paths: [/b]}\n`,
      /rules\[1\]\.id: duplicate rule id/,
    ],
    [
      'dot-dot pattern',
      `service: ${ORDERS}\nmode: enforce\nrules:\n  - {id: x, subjects: ['*'], paths: [/a/../b]}\n`,
      /rules\[0\]\.paths\[0\]: must be a path pattern/,
    ],
    [
      'encoded pattern',
      `service: ${ORDERS}\nmode: enforce\nrules:\n  - {id: x, subjects: ['*'], paths: [/a%2fb]}\n`,
      /rules\[0\]\.paths\[0\]: must be a path pattern/,
    ],
    [
      'star in the middle',
      `service: ${ORDERS}\nmode: enforce\nrules:\n  - {id: x, subjects: ['*'], paths: [/a/*/b]}\n`,
      /must be a path pattern/,
    ],
    [
      'lower-case method',
      `service: ${ORDERS}\nmode: enforce\nrules:\n  - {id: x, subjects: ['*'], methods: [get], paths: [/a]}\n`,
      /rules\[0\]\.methods\[0\]: must be an upper-case/,
    ],
    [
      'bad subject',
      `service: ${ORDERS}\nmode: enforce\nrules:\n  - {id: x, subjects: [web], paths: [/a]}\n`,
      /rules\[0\]\.subjects\[0\]/,
    ],
    [
      'another service',
      `service: ${WEB}\nmode: enforce\nrules: []\n`,
      /p\.yaml: service: .* is not this sidecar's service/,
    ],
  ];
  for (const [name, text, message] of bad) {
    it(`refuses a policy with ${name}, naming file and key`, () => {
      assert.throws(
        () => parsePolicy(text, 'p.yaml', ORDERS),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'ERR_CONFIG_INVALID');
          assert.match(err.message, message);
          assert.equal(err.message.includes('\n'), false);
          return true;
        },
      );
    });
  }
});

describe('compiled policy', () => {
  const orders = parsePolicy(readFileSync('policies/orders.yaml', 'utf8'), 'policies/orders.yaml');
  const table: [string, string, string, boolean, string][] = [
    [WEB, 'GET', '/orders/1', true, 'storefront-reads-orders'],
    [WEB, 'GET', '/orders', true, 'storefront-reads-orders'],
    [WEB, 'POST', '/orders/1', false, DEFAULT_DENY_RULE],
    [WEB, 'GET', '/orders/1/items', false, DEFAULT_DENY_RULE],
    [WEB, 'GET', '/admin', false, 'nobody-touches-admin'],
    [WEB, 'GET', '/admin/users', false, 'nobody-touches-admin'],
    [ADMIN, 'GET', '/orders/1', false, DEFAULT_DENY_RULE],
  ];
  for (const [sub, method, path, allow, rule] of table) {
    it(`decides ${method} ${path} by ${sub.split('/').pop()} as ${allow ? 'allow' : 'deny'} by ${rule}`, () => {
      const d = compilePolicy(orders).decide(sub, method, path);
      assert.equal(d.allow, allow);
      assert.equal(d.rule, rule);
      assert.equal(d.reason, allow ? 'allowed' : 'ERR_SIDECAR_POLICY_DENIED');
      assert.equal(d.policyHash, orders.hash);
    });
  }

  it("agrees with Casbin's enforce on every rule of a 100-rule policy and on 5,000 generated requests", async () => {
    const policy = parsePolicy(bigPolicy(100), 'big.yaml');
    const compiled = compilePolicy(policy);
    const casbin = await casbinFor(policy);
    const subjects = [WEB, ADMIN, ORDERS, 'spiffe://example.org/other'];
    const methods = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH'];
    const requests: [string, string, string][] = [];
    // Every rule: each of its paths instantiated, for every subject and method.
    for (const rule of policy.rules)
      for (const p of rule.paths) {
        const path = p.replace(/:[A-Za-z_]+/g, 'x1').replace(/\*$/, 'deep/er');
        for (const s of subjects) for (const m of methods) requests.push([s, m, path]);
      }
    const rnd = prng(42);
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)]!;
    const segs = ['svc1', 'svc12', 'items', 'x', 'file.json', 'fileXjson', 'v1', 'v3', '', 'a.b'];
    for (let i = 0; i < 5000; i++) {
      const depth = 1 + Math.floor(rnd() * 4);
      const path = '/' + Array.from({ length: depth }, () => pick(segs)).join('/');
      requests.push([pick(subjects), pick(methods), path]);
    }
    let allows = 0;
    for (const [s, m, p] of requests) {
      const want = casbin.enforceSync(s, p, m);
      const got = compiled.decide(s, m, p);
      assert.equal(got.allow, want, `${s} ${m} ${p}`);
      if (got.allow) allows++;
      if (got.rule !== DEFAULT_DENY_RULE) {
        // The rule the compiled matcher names must itself match in Casbin.
        const rule = policy.rules.find((r) => r.id === got.rule)!;
        const single = await casbinFor({ ...policy, rules: [{ ...rule, effect: 'allow' }] });
        assert.equal(single.enforceSync(s, p, m), true, `rule ${rule.id} named for ${s} ${m} ${p}`);
      }
    }
    assert.ok(allows > 50 && allows < requests.length - 50, `a mix of decisions (${allows} allows)`);
  });

  it('reports mode audit in its decisions', () => {
    const p = parsePolicy(`service: ${ORDERS}\nmode: audit\nrules: []\n`, 'a.yaml');
    const d = compilePolicy(p).decide(WEB, 'GET', '/');
    assert.equal(d.allow, false);
    assert.equal(d.mode, 'audit');
  });
});
