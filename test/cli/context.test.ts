// The context directory, black-box: which context a command reads (--context, then
// PORTCULLIS_CONTEXT, then ./.portcullis), flags winning over it, and one-line errors for a
// context that is missing or malformed. `keys list` is the probe: the STS URL it dials shows in
// its error when nothing listens there. (A running mesh is covered by test/e2e/up.test.ts.)
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';

const CLI = new URL('../../cli/portcullis.ts', import.meta.url).pathname;
const root = mkdtempSync(join(tmpdir(), 'portcullis-context-'));
let pki: TestPki;

before(async () => {
  pki = await makeTestPki();
});
after(() => {
  pki.cleanup();
  rmSync(root, { recursive: true, force: true });
});

/** A context whose STS is `https://127.0.0.1:<port>` (nothing listens on ports 1–3 here). */
function context(name: string, port: number, edit: (text: string) => string = (t) => t): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  const text = `trustDomain: example.org
trustBundle: ${pki.rootFile}
sts: { url: 'https://127.0.0.1:${port}', spiffeId: 'spiffe://example.org/ns/portcullis/sa/sts' }
collector: { url: 'https://127.0.0.1:8444', spiffeId: 'spiffe://example.org/ns/portcullis/sa/audit' }
operators:
  admin: { cert: ${join(pki.certsDir, 'admin-console.pem')}, key: ${join(pki.certsDir, 'admin-console-key.pem')} }
`;
  writeFileSync(join(dir, 'context.yaml'), edit(text));
  return dir;
}

function keysList(args: string[], cwd: string, env: Record<string, string> = {}) {
  const { PORTCULLIS_CONTEXT: _, ...rest } = process.env;
  const r = spawnSync(process.execPath, [CLI, 'keys', 'list', ...args], {
    cwd,
    encoding: 'utf8',
    timeout: 20_000,
    env: { ...rest, ...env },
  });
  return { code: r.status, stderr: r.stderr };
}

test('a command reads --context, else PORTCULLIS_CONTEXT, else ./.portcullis; a flag wins over all', () => {
  const a = context('a', 1);
  const b = context('b', 2);
  const cwd = join(root, 'cwd');
  mkdirSync(cwd);
  context('cwd/.portcullis', 3);
  const cases: [string, string[], Record<string, string>, string][] = [
    ['--context', ['--context', a], { PORTCULLIS_CONTEXT: b }, '127.0.0.1:1'],
    ['PORTCULLIS_CONTEXT', [], { PORTCULLIS_CONTEXT: b }, '127.0.0.1:2'],
    ['./.portcullis', [], {}, '127.0.0.1:3'],
    ['--sts over the context', ['--sts', 'https://127.0.0.1:4'], {}, '127.0.0.1:4'],
  ];
  for (const [name, args, env, dialled] of cases) {
    const r = keysList(args, cwd, env);
    assert.equal(r.code, 1, name);
    assert.match(
      r.stderr,
      new RegExp(`^portcullis: GET /v1/admin/keys: connect ECONNREFUSED ${dialled.replace(/\./g, '\\.')}`),
      name,
    );
  }
});

test('a named context that is missing or malformed is one line naming the file and key, exit 1', () => {
  const cases: [string, string | undefined, RegExp][] = [
    ['missing', undefined, /missing\/context\.yaml: no such file \[ERR_CONFIG_NOT_FOUND\]/],
    ['typo', 'trustBundel', /typo\/context\.yaml: trustBundel: unknown key \(did you mean "trustBundle"\?\)/],
    ['http', 'http', /http\/context\.yaml: sts\.url: must be an https URL/],
    ['yaml', 'yaml', /yaml\/context\.yaml: line \d+, column \d+: not valid YAML/],
  ];
  for (const [name, kind, message] of cases) {
    const dir =
      kind === undefined
        ? join(root, name)
        : context(name, 1, (t) =>
            kind === 'trustBundel'
              ? t.replace('trustBundle', 'trustBundel')
              : kind === 'http'
                ? t.replace("'https://127.0.0.1:1'", "'http://127.0.0.1:1'")
                : `${t}sts: [\n`,
          );
    const r = keysList(['--context', dir], root);
    assert.equal(r.code, 1, name);
    assert.match(r.stderr, message, name);
    assert.equal(r.stderr.trim().split('\n').length, 1, `${name}: one line`);
  }
});

/** Runs the CLI in `cwd` with no PORTCULLIS_CONTEXT but `env`. */
function cli(args: string[], cwd: string, env: Record<string, string> = {}) {
  const { PORTCULLIS_CONTEXT: _, ...rest } = process.env;
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd,
    encoding: 'utf8',
    timeout: 20_000,
    env: { ...rest, ...env },
  });
  return { code: r.status, stderr: r.stderr, stdout: r.stdout };
}

test('every admin and audit command takes its connection from the context; flags still win', () => {
  // The STS of this context listens on port 5 and the collector on port 6: nothing answers there,
  // so each command's error names the address it dialled.
  const dir = context('all', 5, (t) =>
    t
      .replace("'https://127.0.0.1:8444'", "'https://127.0.0.1:6'")
      .concat(
        `  auditReader: { cert: ${join(pki.certsDir, 'security-console.pem')}, key: ${join(pki.certsDir, 'security-console-key.pem')} }\n`,
      )
      .replace(
        "spiffeId: 'spiffe://example.org/ns/portcullis/sa/audit' }",
        `spiffeId: 'spiffe://example.org/ns/portcullis/sa/audit', verifierKey: ${join(root, 'all', 'vkey')}, checkpoint: ${join(root, 'all', 'cp', 'latest')} }`,
      ),
  );
  writeFileSync(join(dir, 'vkey'), 'example.org/portcullis/audit+0a1b2c3d+AQ==\n');
  const cases: [string[], RegExp][] = [
    [['tokens', 'revoke', '--jti', 'j1'], /ECONNREFUSED 127\.0\.0\.1:5/],
    [['certs', 'revoke', '--serial', '0a'], /ECONNREFUSED 127\.0\.0\.1:5/],
    [['join-token', 'create', '--workload', 'web'], /ECONNREFUSED 127\.0\.0\.1:5/],
    [['tokens', 'revoke', '--jti', 'j1', '--sts', 'https://127.0.0.1:7'], /ECONNREFUSED 127\.0\.0\.1:7/],
    [['audit', 'query'], /ECONNREFUSED 127\.0\.0\.1:6/],
    [['audit', 'query', '--url', 'https://127.0.0.1:7'], /ECONNREFUSED 127\.0\.0\.1:7/],
    [['audit', 'checkpoint'], /ECONNREFUSED 127\.0\.0\.1:6/],
    // prove reads the saved checkpoint first: the context names one that is not there yet.
    [['audit', 'prove', '--seq', '0'], /all\/cp\/latest: --checkpoint: cannot be read/],
    // verify: the context names no store.
    [['audit', 'verify'], /audit verify: --store is required: .*all\/context\.yaml names none/],
  ];
  for (const [args, message] of cases) {
    const r = cli([...args, '--context', dir], root);
    assert.equal(r.code === 1 || r.code === 2, true, `${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one line`);
  }
  // Without a context the old defaults hold (certs/…, relative to the working directory).
  const bare = cli(['tokens', 'revoke', '--jti', 'j1'], root);
  assert.equal(bare.code, 1);
  assert.match(bare.stderr, /certs\/admin-console\.pem: --cert: cannot be read/);
  const noCtx = cli(['audit', 'checkpoint'], root);
  assert.equal(noCtx.code, 2);
  assert.match(noCtx.stderr, /audit checkpoint: --out is required, or a context/);
});
