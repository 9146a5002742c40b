import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createMemoryStore } from '../../audit/index.ts';
import type { AuditRecord } from '../../audit/index.ts';
import { ConfigError, loadRegistry } from '../../core/index.ts';
import type { AuditEvent } from '../../core/index.ts';
import {
  DEFAULT_DENY_RULE,
  compilePolicy,
  createExplainer,
  findPolicyFiles,
  formatPolicyTestReport,
  formatReplayReport,
  lintPolicy,
  loadPolicyFile,
  loadPolicyTestFile,
  openDecisionSource,
  parsePolicy,
  replayDecisions,
  resolveSince,
  runPolicyTests,
} from '../../sidecar/index.ts';
import type { Policy, PolicyRule } from '../../sidecar/index.ts';
import { prng } from '../helpers/prng.ts';
import { casbinFor } from './fixtures.ts';

const WEB = 'spiffe://example.org/ns/shop/sa/web';
const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';
const ADMIN = 'spiffe://example.org/ns/ops/sa/admin-console';
const registry = loadRegistry('identities');

const policyOf = (rules: string, roles = `roles:\n  storefront: [${WEB}]\n`) =>
  parsePolicy(`service: ${ORDERS}\nmode: enforce\n${roles}rules:\n${rules}`, 'p.yaml');

/** A random policy over a small vocabulary, so that rules overlap, shadow and cover each other. */
function randomPolicy(rand: () => number, n: number): Policy {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rand() * xs.length)]!;
  const who = [
    `subjects: ['*']`,
    `subjects: [${WEB}]`,
    `subjects: [${ADMIN}, ${WEB}]`,
    'role: r0',
    'role: r1',
  ];
  const methods = ['', 'methods: [GET]', 'methods: [POST]', 'methods: [GET, DELETE]'];
  const paths = [
    '/a',
    '/a/:id',
    '/a/*',
    '/b',
    '/b/:id/c',
    '/*',
    '/',
    '/a/b',
    '/b/*',
    '/a/:id/*',
    '/a/',
    '/a/:id/',
    '/a/:id/:x',
  ];
  const rules = Array.from({ length: n }, (_, i) => {
    const ps = [...new Set([pick(paths), ...(rand() < 0.3 ? [pick(paths)] : [])])];
    return `  - id: r-${i}\n    effect: ${rand() < 0.3 ? 'deny' : 'allow'}\n    ${pick(who)}\n    ${pick(methods)}\n    paths: [${ps.join(', ')}]\n`;
  });
  return policyOf(rules.join(''), `roles:\n  r0: [${WEB}]\n  r1: [${ADMIN}, ${ORDERS}]\n`);
}

const SUBJECTS = [WEB, ADMIN, ORDERS, 'spiffe://example.org/ns/x/sa/stranger'];
const METHODS = ['GET', 'POST', 'DELETE', 'PUT'];
const PATHS = [
  '/a',
  '/a/1',
  '/a/1/2',
  '/a/1/2/3',
  '/a/1/',
  '/a/1/2/',
  '/a/',
  '/b',
  '/b/1/c',
  '/b/1/d',
  '/',
  '/c',
  '/a/b',
  '/b/',
  '/b/x',
];

describe('policy explain', () => {
  it("agrees with Casbin's enforce and names exactly the rules Casbin matches, on 40 random policies", async () => {
    const rand = prng(18);
    let losers = 0;
    for (let p = 0; p < 40; p++) {
      const policy = randomPolicy(rand, 8);
      const casbin = await casbinFor(policy);
      const single = await Promise.all(
        policy.rules.map(async (r) => ({
          id: r.id,
          e: await casbinFor({ ...policy, rules: [{ ...r, effect: 'allow' } as PolicyRule] }),
        })),
      );
      const explainer = createExplainer(policy);
      for (const s of SUBJECTS)
        for (const m of METHODS)
          for (const path of PATHS) {
            const e = explainer.explain(s, m, path);
            assert.equal(e.outcome, 'decided');
            if (e.outcome !== 'decided') continue;
            const at = `policy ${p}: ${s} ${m} ${path}`;
            assert.equal(e.decision.allow, casbin.enforceSync(s, path, m), at);
            const want = single.filter((x) => x.e.enforceSync(s, path, m)).map((x) => x.id);
            assert.deepEqual(e.matched, want, at);
            // The deciding rule is a matched one, and every other matched rule is listed as a loser.
            if (e.decision.rule === DEFAULT_DENY_RULE) assert.equal(want.length, 0, at);
            else assert.ok(want.includes(e.decision.rule), at);
            assert.deepEqual(
              e.losers.map((l) => l.id),
              want.filter((id) => id !== e.decision.rule),
              at,
            );
            losers += e.losers.length;
          }
    }
    assert.ok(losers > 100, `only ${losers} losing rules seen: the generator does not make rules overlap`);
  });

  it('says why each matched rule lost: deny-override or an earlier rule', () => {
    const policy = policyOf(
      [
        `  - {id: reads, role: storefront, methods: [GET], paths: ['/orders/*']}`,
        `  - {id: reads-one, role: storefront, methods: [GET], paths: ['/orders/:id']}`,
        `  - {id: no-secret, effect: deny, subjects: ['*'], paths: [/orders/secret]}`,
        `  - {id: no-secret-2, effect: deny, subjects: ['*'], paths: ['/orders/:id']}`,
        '',
      ].join('\n'),
    );
    const e = createExplainer(policy).explain(WEB, 'GET', '/orders/secret?x=1');
    assert.equal(e.outcome, 'decided');
    if (e.outcome !== 'decided') return;
    assert.equal(e.path, '/orders/secret');
    assert.equal(e.decision.allow, false);
    assert.equal(e.decision.rule, 'no-secret');
    assert.deepEqual(e.losers, [
      { id: 'reads', effect: 'allow', lostTo: 'deny-override' },
      { id: 'reads-one', effect: 'allow', lostTo: 'deny-override' },
      { id: 'no-secret-2', effect: 'deny', lostTo: 'earlier-rule' },
    ]);
    const allowed = createExplainer(
      policyOf(`  - {id: a, role: storefront, paths: ['/*']}\n  - {id: b, role: storefront, paths: [/x]}\n`),
    ).explain(WEB, 'GET', '/x');
    assert.deepEqual(allowed.outcome === 'decided' && allowed.losers, [
      { id: 'b', effect: 'allow', lostTo: 'earlier-rule' },
    ]);
  });

  const refused: [string, string, RegExp][] = [
    ['GET', '/orders/../admin', /dot segment/],
    ['GET', '/orders%2F1', /encoded byte %2F/],
    ['GET', '/orders/%41', /unreserved/],
    ['GET', '//orders', /empty path segment/],
    ['GET', 'orders', /origin-form/],
    ['GET', '*', /asterisk-form/],
    ['CONNECT', '/orders', /CONNECT/],
    ['GET', '/orders;x=1', /";" not allowed/],
  ];
  for (const [method, target, why] of refused)
    it(`reports ${method} ${target} as refused by the request-target checks, before any rule`, () => {
      const e = createExplainer(policyOf(`  - {id: all, subjects: ['*'], paths: ['/*']}\n`)).explain(
        WEB,
        method,
        target,
      );
      assert.equal(e.outcome, 'refused');
      assert.equal(e.outcome === 'refused' && e.code, 'ERR_SIDECAR_PATH_AMBIGUOUS');
      assert.match(e.outcome === 'refused' ? e.reason : '', why);
    });
});

describe('policy test files', () => {
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), 'policy-tests-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, text: string) => {
    const f = join(dir, name);
    writeFileSync(f, text);
    return f;
  };

  it('has a test file beside every demo policy', () => {
    const tests = findPolicyFiles(['policies'], 'test').map(
      (f) => loadPolicyTestFile(f, registry).policyFile,
    );
    assert.deepEqual(tests, findPolicyFiles(['policies'], 'policy'));
  });

  it('passes the demo policies against their tests', () => {
    for (const file of findPolicyFiles(['policies'], 'test')) {
      const tests = loadPolicyTestFile(file, registry);
      const report = runPolicyTests(tests, loadPolicyFile(tests.policyFile));
      assert.equal(report.failed, 0, formatPolicyTestReport(report));
      assert.ok(report.passed >= 5);
    }
  });

  it('fails a case whose decision or rule differs, with a diff naming the case, caller and request', () => {
    write(
      'orders.yaml',
      `service: ${ORDERS}\nmode: enforce\nroles:\n  storefront: [${WEB}]\nrules:\n  - {id: reads, role: storefront, methods: [GET], paths: ['/orders/:id']}\n`,
    );
    const file = write(
      'orders.test.yaml',
      [
        'cases:',
        '  - {name: reads, caller: web, method: GET, path: /orders/1, expect: allow, rule: reads}',
        '  - {name: deletes, caller: web, method: DELETE, path: /orders/1, expect: allow, rule: reads}',
        '  - {name: wrong rule, caller: web, method: GET, path: /orders/1, expect: allow, rule: default-deny}',
        '  - {name: walks up, caller: web, method: GET, path: /orders/../x, expect: deny, rule: default-deny}',
        '',
      ].join('\n'),
    );
    const tests = loadPolicyTestFile(file, registry);
    const report = runPolicyTests(tests, loadPolicyFile(tests.policyFile));
    assert.equal(report.passed, 1);
    assert.equal(report.failed, 3);
    const text = formatPolicyTestReport(report);
    assert.match(
      text,
      /FAIL .*orders\.test\.yaml: cases\[1\] "deletes"\n\s+caller web \(spiffe:\/\/example\.org\/ns\/shop\/sa\/web\)\n\s+request DELETE \/orders\/1\n\s+- expected: allow by rule reads\n\s+\+ actual: {3}deny by rule default-deny/,
    );
    assert.match(
      text,
      /cases\[2\] "wrong rule"\n.*\n.*\n\s+- expected: allow by rule default-deny\n\s+\+ actual: {3}allow by rule reads\n/,
    );
    assert.match(text, /cases\[3\] "walks up"[^]*\+ actual: {3}refused by the request-target checks/);
    assert.match(text, /1 passed, 3 failed$/);
  });

  const bad: [string, string, RegExp][] = [
    ['malformed YAML', 'cases:\n  - name: [x\n', /bad\.test\.yaml: line \d+, column \d+: not valid YAML/],
    [
      'an unknown key',
      'cases:\n  - {name: x, caller: web, method: GET, path: /, expect: allow, rule: r, when: now}\n',
      /bad\.test\.yaml: cases\[0\]\.when: unknown key/,
    ],
    [
      'an unknown caller name',
      'cases:\n  - {name: x, caller: ghost, method: GET, path: /, expect: deny, rule: default-deny}\n',
      /bad\.test\.yaml: cases\[0\]\.caller: "ghost" is neither a workload name nor a SPIFFE ID in the registry/,
    ],
    [
      'an unregistered SPIFFE ID',
      `cases:\n  - {name: x, caller: 'spiffe://example.org/ns/x/sa/ghost', method: GET, path: /, expect: deny, rule: default-deny}\n`,
      /cases\[0\]\.caller: "spiffe:\/\/example\.org\/ns\/x\/sa\/ghost" is neither/,
    ],
    [
      'a lower-case method',
      'cases:\n  - {name: x, caller: web, method: get, path: /, expect: deny, rule: default-deny}\n',
      /cases\[0\]\.method: must be an upper-case HTTP method/,
    ],
    [
      'an unknown expectation',
      'cases:\n  - {name: x, caller: web, method: GET, path: /, expect: maybe, rule: default-deny}\n',
      /cases\[0\]\.expect: must be one of/,
    ],
    [
      'allow without a rule',
      'cases:\n  - {name: x, caller: web, method: GET, path: /, expect: allow}\n',
      /cases\[0\]: "expect: allow" needs "rule"/,
    ],
    [
      'refused with a rule',
      'cases:\n  - {name: x, caller: web, method: GET, path: //, expect: refused, rule: r}\n',
      /cases\[0\]\.rule: a refused request reaches no rule/,
    ],
    [
      'a duplicate name',
      'cases:\n  - {name: x, caller: web, method: GET, path: /, expect: refused}\n  - {name: x, caller: web, method: GET, path: /, expect: refused}\n',
      /cases\[1\]\.name: duplicate case name "x"/,
    ],
    ['no cases', 'cases: []\n', /bad\.test\.yaml: cases: /],
    ['an empty file', '', /bad\.test\.yaml: file is empty/],
  ];
  for (const [name, text, message] of bad)
    it(`refuses a test file with ${name} in one line naming the file and key`, () => {
      const file = write('bad.test.yaml', text);
      assert.throws(
        () => loadPolicyTestFile(file, registry),
        (err: unknown) =>
          err instanceof ConfigError && message.test(err.message) && !err.message.includes('\n'),
      );
    });

  it('refuses a case naming a rule the policy does not have, naming the key', () => {
    write(
      'p.yaml',
      `service: ${ORDERS}\nmode: enforce\nrules:\n  - {id: reads, subjects: ['*'], paths: [/x]}\n`,
    );
    const file = write(
      'p.test.yaml',
      'cases:\n  - {name: x, caller: web, method: GET, path: /x, expect: allow, rule: raeds}\n',
    );
    const tests = loadPolicyTestFile(file, registry);
    assert.throws(
      () => runPolicyTests(tests, loadPolicyFile(tests.policyFile)),
      /p\.test\.yaml: cases\[0\]\.rule: no rule "raeds"/,
    );
  });

  it('refuses a missing test file or directory, and a policy given where a test file is expected', () => {
    assert.throws(() => loadPolicyTestFile(join(dir, 'none.test.yaml'), registry), {
      code: 'ERR_CONFIG_NOT_FOUND',
    });
    assert.throws(
      () => findPolicyFiles([join(dir, 'nowhere')], 'test'),
      /nowhere: no such file or directory/,
    );
    assert.throws(() => findPolicyFiles(['policies/orders.yaml'], 'test'), /is not a policy test file/);
    assert.throws(
      () => findPolicyFiles(['policies/orders.test.yaml'], 'policy'),
      /is a policy test file, not a policy/,
    );
    assert.throws(() => findPolicyFiles(['identities'], 'test'), /holds no policy test files/);
  });
});

describe('policy lint', () => {
  const codes = (policy: Policy) =>
    lintPolicy(policy, registry).map((f) => `${f.severity} ${f.code} ${f.key}`);

  it('finds nothing in the demo policies', () => {
    for (const file of findPolicyFiles(['policies'], 'policy'))
      assert.deepEqual(codes(loadPolicyFile(file)), [], file);
  });

  const cases: [string, string, string, string[]][] = [
    [
      'identities absent from the registry',
      `  - {id: a, role: ghosts, paths: [/a]}\n  - {id: b, subjects: ['spiffe://example.org/ns/x/sa/nobody'], paths: [/b]}\n`,
      `roles:\n  ghosts: ['spiffe://example.org/ns/x/sa/ghost', ${WEB}]\n`,
      ['error POLICY_IDENTITY_UNKNOWN roles.ghosts', 'error POLICY_IDENTITY_UNKNOWN rules[1].subjects'],
    ],
    [
      'an allow rule every request of which a deny overrides',
      `  - {id: admin-reads, role: storefront, methods: [GET], paths: ['/admin/*']}\n  - {id: no-admin, effect: deny, subjects: ['*'], paths: [/admin, '/admin/*']}\n`,
      `roles:\n  storefront: [${WEB}]\n`,
      ['error POLICY_RULE_SHADOWED rules[0]'],
    ],
    [
      'one dead path of an otherwise live allow rule',
      `  - {id: reads, role: storefront, methods: [GET], paths: [/orders, '/admin/:x']}\n  - {id: no-admin, effect: deny, subjects: ['*'], paths: ['/admin/*']}\n`,
      `roles:\n  storefront: [${WEB}]\n`,
      ['error POLICY_RULE_SHADOWED rules[0].paths[1]'],
    ],
    [
      'a CONNECT-only rule, which the request-target checks always refuse',
      `  - {id: tunnel, role: storefront, methods: [CONNECT], paths: ['/*']}\n`,
      `roles:\n  storefront: [${WEB}]\n`,
      ['error POLICY_RULE_UNREACHABLE rules[0]'],
    ],
    [
      'an allow covered by an earlier, broader allow, and a deny covered by a broader deny',
      `  - {id: all, role: storefront, paths: ['/orders/*']}\n  - {id: one, role: storefront, methods: [GET], paths: ['/orders/:id']}\n  - {id: no-a, effect: deny, subjects: ['*'], paths: ['/a/*']}\n  - {id: no-ab, effect: deny, subjects: [${WEB}], methods: [GET], paths: [/a/b]}\n`,
      `roles:\n  storefront: [${WEB}]\n`,
      ['warning POLICY_RULE_REDUNDANT rules[1]', 'warning POLICY_RULE_REDUNDANT rules[3]'],
    ],
    [
      'an allow covered only by the union of three others',
      `  - {id: empty, subjects: [${WEB}], paths: [/x/]}\n  - {id: one, subjects: [${WEB}], paths: ['/x/:a']}\n  - {id: deeper, subjects: [${WEB}], paths: ['/x/:a/*']}\n  - {id: any, subjects: [${WEB}], methods: [GET], paths: ['/x/*']}\n`,
      '',
      ['warning POLICY_RULE_REDUNDANT rules[3]'],
    ],
    [
      'nothing when the union leaves a gap (no rule for /x/ itself)',
      `  - {id: one, subjects: [${WEB}], paths: ['/x/:a']}\n  - {id: deeper, subjects: [${WEB}], paths: ['/x/:a/*']}\n  - {id: any, subjects: [${WEB}], methods: [GET], paths: ['/x/*']}\n`,
      '',
      [],
    ],
    [
      'nothing when fixed-length rules cover every depth but one beyond them',
      `  - {id: any, subjects: [${WEB}], methods: [GET], paths: ['/x/*']}\n  - {id: cover, subjects: [${WEB}], paths: [/x/, '/x/:a', '/x/:a/', '/x/:a/:b', '/x/:a/:b/']}\n`,
      '',
      [],
    ],
    [
      'nothing when only a trailing-slash path is left uncovered',
      `  - {id: any, subjects: [${WEB}], methods: [GET], paths: ['/x/*']}\n  - {id: cover, subjects: [${WEB}], paths: [/x/, '/x/:a', '/x/:a/:b', '/x/:a/:b/*']}\n`,
      '',
      [],
    ],
    [
      'an allow covered once a deeper rule ends in *',
      `  - {id: any, subjects: [${WEB}], methods: [GET], paths: ['/x/*']}\n  - {id: cover, subjects: [${WEB}], paths: [/x/, '/x/:a', '/x/:a/', '/x/:a/*']}\n`,
      '',
      ['warning POLICY_RULE_REDUNDANT rules[0]'],
    ],
    [
      'a role no rule uses',
      `  - {id: a, subjects: [${WEB}], paths: [/a]}\n`,
      `roles:\n  idle: [${WEB}]\n`,
      ['warning POLICY_ROLE_UNUSED roles.idle'],
    ],
    [
      'nothing for rules that overlap only in part',
      `  - {id: reads, role: storefront, methods: [GET], paths: ['/orders/*']}\n  - {id: one, subjects: ['*'], methods: [GET], paths: ['/orders/:id']}\n  - {id: no-secret, effect: deny, subjects: ['*'], paths: [/orders/secret]}\n`,
      `roles:\n  storefront: [${WEB}]\n`,
      [],
    ],
  ];
  for (const [name, rules, roles, want] of cases)
    it(`reports ${name}`, () => assert.deepEqual(codes(policyOf(rules, roles)), want));

  it('says when a rule has too many combinations to check, rather than take long', () => {
    const paths = Array.from({ length: 600 }, (_, i) => `'/p${i}/*'`).join(', ');
    const methods = 'GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS, TRACE, PURGE, LINK';
    const started = performance.now();
    assert.deepEqual(
      codes(policyOf(`  - {id: wide, subjects: [${WEB}], methods: [${methods}], paths: [${paths}]}\n`, '')),
      ['warning POLICY_RULE_UNCHECKED rules[0]'],
    );
    assert.ok(performance.now() - started < 2000);
  });

  it('reports the service itself when it is not registered', () => {
    const p = parsePolicy(`service: spiffe://example.org/ns/x/sa/gone\nmode: enforce\nrules: []\n`, 'p.yaml');
    assert.deepEqual(codes(p), ['error POLICY_IDENTITY_UNKNOWN service']);
  });

  it('never calls a rule shadowed or redundant when removing it would change a decision (200 random policies)', () => {
    const rand = prng(1818);
    let found = 0;
    for (let p = 0; p < 200; p++) {
      const policy = randomPolicy(rand, 6);
      const before = compilePolicy(policy);
      for (const f of lintPolicy(policy, registry)) {
        const m = /^rules\[(\d+)\](?:\.paths\[(\d+)\])?$/.exec(f.key);
        if (!m || (f.code !== 'POLICY_RULE_SHADOWED' && f.code !== 'POLICY_RULE_REDUNDANT')) continue;
        found++;
        const i = Number(m[1]);
        const rule = policy.rules[i]!;
        // Without the rule (or without the one path named), every decision stays the same.
        const rest =
          m[2] === undefined
            ? policy.rules.filter((_, j) => j !== i)
            : policy.rules.map((r, j) =>
                j === i ? { ...r, paths: r.paths.filter((_, k) => k !== Number(m[2])) } : r,
              );
        const afterwards = compilePolicy({ ...policy, rules: rest });
        for (const s of SUBJECTS)
          for (const method of METHODS)
            for (const path of PATHS)
              assert.equal(
                afterwards.decide(s, method, path).allow,
                before.decide(s, method, path).allow,
                `policy ${p}, ${f.key} (${rule.id}) ${f.code}: ${s} ${method} ${path}`,
              );
      }
    }
    assert.ok(found > 50, `only ${found} findings: the property is barely exercised`);
  });
});

describe('policy replay', () => {
  const at = (s: number) => new Date(Date.UTC(2026, 11, 6, 10, 0, s)).toISOString();
  const ev = (over: Partial<AuditEvent>): AuditEvent => ({
    type: 'authz.decision',
    time: at(0),
    source: ORDERS,
    target: ORDERS,
    subject: WEB,
    decision: 'allow',
    reason: 'allowed',
    rule: 'reads',
    policyHash: 'sha256:old',
    ...over,
  });
  const proposed = policyOf(`  - {id: lists, role: storefront, methods: [GET], paths: [/orders]}\n`);

  async function recorded(events: AuditEvent[], seconds: number[]): Promise<AuditRecord[]> {
    let i = 0;
    const store = createMemoryStore({ clock: () => new Date(at(seconds[i++] ?? 0)) });
    const out: AuditRecord[] = [];
    for (const e of events) out.push(...(await store.append([e])));
    await store.close();
    return out;
  }
  async function* iterate(records: AuditRecord[]) {
    yield* records;
  }

  it("re-decides only the service's own policy decisions and counts what it cannot re-decide", async () => {
    const long = `/orders/1?${'q'.repeat(100)}…`;
    const events = [
      ev({ action: 'GET /orders' }), // unchanged
      ev({ action: 'GET /orders/1' }), // allowed→denied
      ev({ action: 'GET /orders/1?x=1' }), // same group, other example
      ev({
        action: 'POST /orders',
        decision: 'deny',
        reason: 'ERR_SIDECAR_POLICY_DENIED',
        rule: 'default-deny',
      }), // unchanged
      ev({ action: 'GET /orders', decision: 'deny', rule: 'old-deny', enforced: false }), // denied→allowed (audit mode)
      ev({ action: `GET ${long}` }), // path intact before the cut query: allowed→denied
      ev({ action: `GET /orders/${'x'.repeat(50)}…` }), // path cut: skipped
      ev({ action: 'GET /orders', rule: undefined, decision: 'deny', reason: 'ERR_SIDECAR_TOKEN_EXPIRED' }),
      ev({ action: 'GET /orders', subject: undefined }),
      ev({ action: 'GET' }),
      ev({ action: 'GET /orders', source: WEB }), // another workload speaking for orders
      ev({ action: 'GET /orders', target: WEB, source: WEB }), // web's own decisions
      ev({ type: 'token.issued', action: 'GET /orders' }),
    ];
    const report = await replayDecisions(proposed, iterate(await recorded(events, [])));
    assert.equal(report.considered, 10);
    assert.equal(report.replayed, 6);
    assert.equal(report.unchanged, 1);
    assert.equal(report.ruleChanged, 1);
    assert.equal(report.allowedToDenied, 3);
    assert.equal(report.deniedToAllowed, 1);
    assert.deepEqual(report.skipped, {
      'request target truncated in the record': 1,
      'refused before the policy (ERR_SIDECAR_TOKEN_EXPIRED)': 1,
      'no caller recorded': 1,
      'no request recorded (action)': 1,
    });
    assert.deepEqual(
      report.groups.map((g) => [
        g.change,
        g.method,
        g.path,
        g.recordedRule,
        g.proposedRule,
        g.count,
        g.examples.map((x) => x.seq),
      ]),
      [
        ['allowed→denied', 'GET', '/orders/1', 'reads', 'default-deny', 3, [1, 2, 5]],
        ['denied→allowed', 'GET', '/orders', 'old-deny', 'lists', 1, [4]],
      ],
    );
    assert.deepEqual(report.recordedPolicies, { 'sha256:old': 6 });
    const text = formatReplayReport(report, 1).split('\n');
    assert.deepEqual(text.slice(1, 8), [
      '  allowed→denied: 3   denied→allowed: 1   unchanged: 1   same decision, other rule: 1',
      '  not replayed: 1 request target truncated in the record',
      '  not replayed: 1 refused before the policy (ERR_SIDECAR_TOKEN_EXPIRED)',
      '  not replayed: 1 no caller recorded',
      '  not replayed: 1 no request recorded (action)',
      '  recorded under: sha256:old (6)',
      `allowed→denied       3  ${WEB} GET /orders/1  rule reads → default-deny`,
    ]);
    assert.match(text[8]!, /^ {24}e\.g\. seq 1 at 2026-12-06T10:00:00\.000Z: GET \/orders\/1$/);
    assert.equal(text.at(-1), '… and 1 more groups (use --json for all)');
  });

  it('replays a request the policy allowed and the sidecar refused afterwards (429, 408) as allowed', async () => {
    // The audit layer records these as `deny` with the allowing rule and the refusal's code.
    const events = [
      ev({ action: 'GET /orders', rule: 'lists', decision: 'deny', reason: 'ERR_SIDECAR_CALLER_OVER_LIMIT' }),
      ev({ action: 'GET /orders', rule: 'lists', decision: 'deny', reason: 'ERR_SIDECAR_BODY_TIMEOUT' }),
      ev({ action: 'GET /orders/1', decision: 'deny', reason: 'ERR_SIDECAR_CALLER_OVER_LIMIT' }),
    ];
    const report = await replayDecisions(proposed, iterate(await recorded(events, [])));
    assert.equal(report.replayed, 3);
    assert.equal(report.unchanged, 2, 'the same policy flips nothing');
    assert.equal(report.deniedToAllowed, 0);
    assert.deepEqual(
      report.groups.map((g) => [g.change, g.path, g.recordedRule, g.proposedRule]),
      [['allowed→denied', '/orders/1', 'reads', 'default-deny']],
    );
  });

  it('keeps three examples per group and counts the rest', async () => {
    const events = Array.from({ length: 10 }, (_, i) =>
      ev({ action: `DELETE /orders?i=${i}`, rule: 'deletes' }),
    );
    const report = await replayDecisions(proposed, iterate(await recorded(events, [])));
    assert.equal(report.groups.length, 1);
    assert.equal(report.groups[0]!.count, 10);
    assert.deepEqual(
      report.groups[0]!.examples.map((x) => x.target),
      ['/orders?i=0', '/orders?i=1', '/orders?i=2'],
    );
  });

  it('with since, replays only records appended at or after it', async () => {
    const events = [0, 1, 2, 3].map((i) => ev({ action: `GET /orders/${i}` }));
    const records = await recorded(events, [0, 10, 20, 30]);
    const report = await replayDecisions(proposed, iterate(records), { since: at(20) });
    assert.equal(report.considered, 2);
    assert.deepEqual(
      report.groups.map((g) => g.path),
      ['/orders/2', '/orders/3'],
    );
  });

  const since: [string, string | undefined][] = [
    ['24h', '2026-12-05T12:00:00.000Z'],
    ['90m', '2026-12-06T10:30:00.000Z'],
    ['2026-12-01T00:00:00Z', '2026-12-01T00:00:00.000Z'],
    ['2026-12-01T01:00:00+01:00', '2026-12-01T00:00:00.000Z'],
    ['yesterday', undefined],
    ['-5m', undefined],
    ['0s', undefined],
    ['2026-13-01T00:00:00Z', undefined],
    ['2026-12-01', undefined],
  ];
  for (const [input, want] of since)
    it(`reads --since ${input} as ${want ?? 'an error'}`, () =>
      assert.equal(resolveSince(input, Date.parse('2026-12-06T12:00:00Z')), want));

  it('refuses a source that is neither a store nor a collector, and an empty store', async () => {
    await assert.rejects(openDecisionSource('/no/such/dir', { service: ORDERS }), TypeError);
    await assert.rejects(
      openDecisionSource('policies', { service: ORDERS }),
      /policies: holds no audit records/,
    );
    await assert.rejects(openDecisionSource('https://127.0.0.1:1', { service: ORDERS }), TypeError);
  });
});
