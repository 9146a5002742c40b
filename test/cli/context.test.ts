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
