import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { CONTEXT_FILE, findContext, fromContext } from '../../cli/lib/context.ts';
import { UsageError } from '../../cli/lib/command.ts';

const root = mkdtempSync(join(tmpdir(), 'portcullis-context-'));
after(() => rmSync(root, { recursive: true, force: true }));

const GOOD = `trustDomain: example.org
trustBundle: certs/root.pem
sts: { url: 'https://127.0.0.1:8443', spiffeId: 'spiffe://example.org/ns/portcullis/sa/sts' }
collector:
  url: 'https://127.0.0.1:8444'
  spiffeId: 'spiffe://example.org/ns/portcullis/sa/audit'
  store: file:audit/log
  verifierKey: audit/checkpoint.vkey
operators:
  admin: { cert: certs/admin-console.pem, key: /abs/admin-key.pem }
`;

function contextDir(name: string, text: string): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, CONTEXT_FILE), text);
  return dir;
}

test('the context comes from --context, else PORTCULLIS_CONTEXT, else ./.portcullis; paths resolve against it', () => {
  const a = contextDir('a', GOOD);
  const b = contextDir('b', GOOD.replace('8443', '9443'));
  const cwd = join(root, 'cwd');
  contextDir('cwd/.portcullis', GOOD.replace('8443', '7443'));
  assert.equal(findContext(a, { PORTCULLIS_CONTEXT: b }, cwd)!.sts.url, 'https://127.0.0.1:8443');
  assert.equal(findContext(undefined, { PORTCULLIS_CONTEXT: b }, cwd)!.sts.url, 'https://127.0.0.1:9443');
  const local = findContext(undefined, {}, cwd)!;
  assert.equal(local.sts.url, 'https://127.0.0.1:7443');
  assert.equal(local.trustBundle, join(cwd, '.portcullis', 'certs/root.pem'));
  assert.equal(local.collector.store, `file:${join(cwd, '.portcullis', 'audit/log')}`);
  assert.equal(local.operators.admin!.key, '/abs/admin-key.pem', 'absolute paths stay');
  assert.equal(local.operators.auditReader, undefined);
  assert.equal(findContext(undefined, {}, join(root, 'a')), undefined, 'no ./.portcullis: no context');
});

test('a named context that is missing or malformed is one line naming the file and key', () => {
  const cases: [string, string | undefined, RegExp][] = [
    ['missing', undefined, /missing\/context\.yaml: no such file/],
    [
      'typo',
      GOOD.replace('trustBundle', 'trustBundel'),
      /typo\/context\.yaml: trustBundel: unknown key \(did you mean "trustBundle"\?\)/,
    ],
    [
      'http',
      GOOD.replace("'https://127.0.0.1:8443'", "'http://127.0.0.1:8443'"),
      /http\/context\.yaml: sts\.url: must be an https URL/,
    ],
    ['yaml', 'sts: [', /yaml\/context\.yaml: line \d+, column \d+: not valid YAML/],
  ];
  for (const [name, text, message] of cases) {
    const dir = text === undefined ? join(root, name) : contextDir(name, text);
    assert.throws(() => findContext(dir, {}, root), message, name);
  }
});

test('a setting comes from the flag, else the context, else the fallback, else a usage error saying where to get one', () => {
  const ctx = findContext(contextDir('f', GOOD), {}, root)!;
  assert.equal(
    fromContext('flag', 'sts', 'keys list', ctx, (c) => c.sts.url),
    'flag',
  );
  assert.equal(
    fromContext(undefined, 'sts', 'keys list', ctx, (c) => c.sts.url),
    'https://127.0.0.1:8443',
  );
  assert.equal(
    fromContext(undefined, 'cert', 'x', ctx, (c) => c.operators.auditReader?.cert, 'fb'),
    'fb',
  );
  assert.throws(
    () => fromContext(undefined, 'cert', 'audit query', ctx, (c) => c.operators.auditReader?.cert),
    (err: Error) =>
      err instanceof UsageError &&
      /^audit query: --cert is required: .*f\/context\.yaml names none$/.test(err.message),
  );
  assert.throws(
    () => fromContext(undefined, 'url', 'audit query', undefined, () => undefined),
    (err: Error) =>
      err instanceof UsageError && /--url is required, or a context: .*--context DIR/.test(err.message),
  );
});
