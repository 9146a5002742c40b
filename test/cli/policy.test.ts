// `portcullis policy …` as a user runs it: the demo policies' table tests pass (this is how
// `npm test` runs them), failures print a diff and exit 1, and every kind of bad input gets one
// line naming the file and key (or the flag) and a non-zero exit.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';
/** Runs `portcullis policy …`; resolves with its exit code and output (never rejects on a non-zero exit). */
const cli = (...args: string[]) =>
  new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      ['cli/portcullis.ts', 'policy', ...args],
      { encoding: 'utf8', timeout: 20_000 },
      (err, stdout, stderr) =>
        resolve({ status: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr }),
    );
  });

// Each case is its own process; three at a time keep the file short on a two-core machine.
describe('portcullis policy', { concurrency: 3 }, () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'policy-cli-'));
    mkdirSync(join(dir, 'store'));
    writeFileSync(join(dir, 'bad-yaml.yaml'), `service: ${ORDERS}\nmode: enforce\nrules:\n  - id: [x\n`);
    writeFileSync(join(dir, 'unknown-key.yaml'), `service: ${ORDERS}\nmode: enforce\nrulez: []\n`);
    writeFileSync(
      join(dir, 'ghost.yaml'),
      `service: ${ORDERS}\nmode: enforce\nroles:\n  r: ['spiffe://example.org/ns/x/sa/ghost']\nrules:\n  - {id: a, role: r, paths: [/a]}\n`,
    );
    writeFileSync(
      join(dir, 'ghost.test.yaml'),
      `cases:\n  - {name: x, caller: ghost, method: GET, path: /a, expect: deny, rule: default-deny}\n`,
    );
    writeFileSync(
      join(dir, 'orphan.test.yaml'),
      `cases:\n  - {name: x, caller: web, method: GET, path: /a, expect: deny, rule: default-deny}\n`,
    );
    writeFileSync(
      join(dir, 'overlap.yaml'),
      `service: ${ORDERS}\nmode: audit\nrules:\n  - {id: reads, subjects: ['*'], methods: [GET], paths: ['/orders/*']}\n  - {id: reads-one, subjects: ['*'], paths: ['/orders/:id']}\n  - {id: no-secret, effect: deny, subjects: ['*'], paths: [/orders/secret]}\n`,
    );
    writeFileSync(
      join(dir, 'wrong.yaml'),
      `service: ${ORDERS}\nmode: enforce\nrules:\n  - {id: reads, subjects: ['*'], methods: [GET], paths: ['/orders/:id']}\n`,
    );
    writeFileSync(
      join(dir, 'wrong.test.yaml'),
      `cases:\n  - {name: web deletes an order, caller: web, method: DELETE, path: /orders/1, expect: allow, rule: reads}\n`,
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("passes the demo policies' table tests", async () => {
    const r = await cli('test');
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /^ok +policies\/orders\.test\.yaml \(policy policies\/orders\.yaml\): \d+ passed, 0 failed$/m,
    );
    assert.match(
      r.stdout,
      /^ok +policies\/web\.test\.yaml \(policy policies\/web\.yaml\): \d+ passed, 0 failed$/m,
    );
  });

  it('lints the demo policies clean', async () => {
    const r = await cli('lint');
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.stdout, 'policies/orders.yaml: ok\npolicies/web.yaml: ok\n');
  });

  it('exits 1 with a diff for a failing case', async () => {
    const r = await cli('test', join(dir, 'wrong.test.yaml'));
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stdout, /FAIL .*wrong\.test\.yaml: cases\[0\] "web deletes an order"/);
    assert.match(r.stdout, /- expected: allow by rule reads\n\s+\+ actual: {3}deny by rule default-deny/);
    assert.match(r.stdout, /0 passed, 1 failed/);
  });

  it('exits 1 on lint errors, one line per finding', async () => {
    const r = await cli('lint', join(dir, 'ghost.yaml'), '--json');
    assert.equal(r.status, 1, r.stderr);
    const findings = r.stdout
      .trim()
      .split('\n')
      .map((l: string) => JSON.parse(l) as { code: string; key: string });
    assert.deepEqual(
      findings.map((f: { code: string; key: string }) => `${f.code} ${f.key}`),
      ['POLICY_IDENTITY_UNKNOWN roles.r'],
    );
  });

  it('explains a decision with the rules that lost', async () => {
    const r = await cli(
      'explain',
      '--policy',
      'policies/orders.yaml',
      '--caller',
      'web',
      '--method',
      'GET',
      '--path',
      '/admin/x',
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stdout,
      /^deny by rule nobody-touches-admin \(policies\/orders\.yaml, mode enforce, sha256:[0-9a-f]{64}\)/,
    );
    const o = await cli(
      'explain',
      '--policy',
      join(dir, 'overlap.yaml'),
      '--caller',
      'spiffe://example.org/ns/shop/sa/web',
      '--method',
      'GET',
      '--path',
      '/orders/secret?x=1',
    );
    assert.equal(o.status, 0, o.stderr);
    assert.equal(
      o.stdout.replace(/sha256:[0-9a-f]{64}/, 'HASH'),
      [
        `deny by rule no-secret (${join(dir, 'overlap.yaml')}, mode audit, HASH)`,
        '  request: spiffe://example.org/ns/shop/sa/web GET /orders/secret',
        '  mode audit: the deny is recorded, not enforced',
        '  also matched: reads (allow) — lost to deny-override by no-secret',
        '  also matched: reads-one (allow) — lost to deny-override by no-secret',
        '',
      ].join('\n'),
    );
    const j = await cli(
      'explain',
      '--policy',
      'policies/orders.yaml',
      '--caller',
      'web',
      '--method',
      'GET',
      '--path',
      '/orders/%2e%2e/admin',
      '--json',
    );
    assert.equal(JSON.parse(j.stdout).outcome, 'refused');
  });

  // [what, args, exit code, the one line on stderr]
  const bad: [string, () => string[], number, RegExp][] = [
    [
      'test: a missing directory',
      () => ['test', join(dir, 'nope')],
      1,
      /nope: no such file or directory \[ERR_CONFIG_NOT_FOUND\]/,
    ],
    [
      'test: a policy given as a test file',
      () => ['test', 'policies/orders.yaml'],
      1,
      /orders\.yaml: is not a policy test file/,
    ],
    [
      'test: an unknown caller',
      () => ['test', join(dir, 'ghost.test.yaml')],
      1,
      /ghost\.test\.yaml: cases\[0\]\.caller: "ghost" is neither/,
    ],
    [
      'test: the policy beside it is missing',
      () => ['test', join(dir, 'orphan.test.yaml')],
      1,
      /orphan\.yaml: .*orphan\.test\.yaml: policy: cannot be read \(ENOENT\)/,
    ],
    [
      'test: a missing registry',
      () => ['test', '--registry', join(dir, 'noreg')],
      1,
      /noreg: no such file or directory/,
    ],
    ['test: an unknown flag', () => ['test', '--verbose'], 2, /policy test: Unknown option '--verbose'/],
    [
      'lint: malformed YAML',
      () => ['lint', join(dir, 'bad-yaml.yaml')],
      1,
      /bad-yaml\.yaml: line \d+, column \d+: not valid YAML/,
    ],
    [
      'lint: an unknown key',
      () => ['lint', join(dir, 'unknown-key.yaml')],
      1,
      /unknown-key\.yaml: rulez: unknown key \(did you mean "rules"\?\)/,
    ],
    [
      'lint: a test file given as a policy',
      () => ['lint', 'policies/orders.test.yaml'],
      1,
      /is a policy test file, not a policy/,
    ],
    [
      'explain: no --policy',
      () => ['explain', '--caller', 'web', '--method', 'GET', '--path', '/'],
      2,
      /policy explain: --policy is required/,
    ],
    [
      'explain: a missing policy file',
      () => [
        'explain',
        '--policy',
        join(dir, 'none.yaml'),
        '--caller',
        'web',
        '--method',
        'GET',
        '--path',
        '/',
      ],
      1,
      /none\.yaml: --policy: cannot be read \(ENOENT\)/,
    ],
    [
      'explain: an unknown caller',
      () => [
        'explain',
        '--policy',
        'policies/orders.yaml',
        '--caller',
        'ghost',
        '--method',
        'GET',
        '--path',
        '/',
      ],
      1,
      /identities: --caller: "ghost" is neither/,
    ],
    [
      'explain: a lower-case method',
      () => [
        'explain',
        '--policy',
        'policies/orders.yaml',
        '--caller',
        'web',
        '--method',
        'get',
        '--path',
        '/',
      ],
      2,
      /--method must be an upper-case HTTP method/,
    ],
    [
      'explain: malformed policy YAML',
      () => [
        'explain',
        '--policy',
        join(dir, 'bad-yaml.yaml'),
        '--caller',
        'web',
        '--method',
        'GET',
        '--path',
        '/',
      ],
      1,
      /bad-yaml\.yaml: line \d+, column \d+: not valid YAML/,
    ],
    [
      'replay: no --from',
      () => ['replay', '--policy', 'policies/orders.yaml'],
      2,
      /policy replay: --from is required/,
    ],
    [
      'replay: a --from that is no store',
      () => ['replay', '--policy', 'policies/orders.yaml', '--from', join(dir, 'nope')],
      2,
      /--from ".*nope" is not a file store directory, file:DIR, postgres:\/\/… or https:\/\/… collector URL/,
    ],
    [
      'replay: an unsupported URL',
      () => ['replay', '--policy', 'policies/orders.yaml', '--from', 'http://127.0.0.1:1'],
      2,
      /--from must be a store directory/,
    ],
    [
      'replay: an empty directory',
      () => ['replay', '--policy', 'policies/orders.yaml', '--from', join(dir, 'store')],
      1,
      /store: holds no audit records/,
    ],
    [
      'replay: a bad --since',
      () => [
        'replay',
        '--policy',
        'policies/orders.yaml',
        '--from',
        join(dir, 'store'),
        '--since',
        'yesterday',
      ],
      2,
      /--since must be a duration \(24h, 7d\) or an RFC 3339 time, not "yesterday"/,
    ],
    [
      'replay: a collector without --cert',
      () => ['replay', '--policy', 'policies/orders.yaml', '--from', 'https://127.0.0.1:1'],
      2,
      /policy replay: --cert is required/,
    ],
    [
      'replay: --cert for a store',
      () => ['replay', '--policy', 'policies/orders.yaml', '--from', join(dir, 'store'), '--cert', 'x'],
      2,
      /--cert is only for an https:\/\/ collector --from/,
    ],
    [
      'replay: an unreachable PostgreSQL, password not shown',
      () => ['replay', '--policy', 'policies/orders.yaml', '--from', 'postgres://u:s3cret@127.0.0.1:1/x'],
      1,
      /PostgreSQL unavailable/,
    ],
    [
      'replay: a missing policy',
      () => ['replay', '--policy', join(dir, 'none.yaml'), '--from', join(dir, 'store')],
      1,
      /none\.yaml: --policy: cannot be read/,
    ],
    [
      'replay: --page-size for a store',
      () => ['replay', '--policy', 'policies/orders.yaml', '--from', join(dir, 'store'), '--page-size', '10'],
      2,
      /--page-size is only for an https:\/\/ collector --from/,
    ],
    [
      'replay: a --page-size above the collector maximum',
      () => [
        'replay',
        '--policy',
        'policies/orders.yaml',
        '--from',
        'https://127.0.0.1:1',
        '--page-size',
        '100001',
      ],
      2,
      /--page-size must be an integer from 1 to 100000/,
    ],
    [
      'replay: a bad --max-groups',
      () => ['replay', '--policy', 'policies/orders.yaml', '--from', join(dir, 'store'), '--max-groups', '0'],
      2,
      /--max-groups must be a positive integer/,
    ],
  ];
  for (const [name, args, code, line] of bad)
    it(`${name}: exits ${code} with one line`, async () => {
      const r = await cli(...args());
      assert.equal(r.status, code, r.stdout + r.stderr);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, line);
      assert.doesNotMatch(r.stderr, /s3cret| {4}at /);
    });
});
