// `portcullis join-token create`, `tokens revoke` and `certs revoke --sts`, spawned as a user would
// run them against a real STS; the refusals exit non-zero with one line.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { JOIN_TOKEN } from '../../sts/index.ts';
import { WEB, startTestSts } from './helpers.ts';
import type { TestSts } from './helpers.ts';

const CLI = new URL('../../cli/portcullis.ts', import.meta.url).pathname;

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('identity commands against a running STS', () => {
  let pki: TestPki;
  let sts: TestSts;
  let admin: string[];
  before(async () => {
    pki = await makeTestPki();
    sts = await startTestSts(pki, { ca: { dir: pki.ca.dir } });
    const leaf = pki.leaf('admin-console');
    admin = ['--sts', sts.url, '--cert', leaf.certFile, '--key', leaf.keyFile, '--cacert', pki.rootFile];
  });
  after(async () => {
    await sts.close();
    pki.cleanup();
  });

  test('join-token create prints a token for the entry; --json prints the whole answer', async () => {
    const plain = await run(['join-token', 'create', '--workload', 'web', ...admin]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout.trim(), JOIN_TOKEN);
    assert.match(plain.stderr, /single use, expires/);
    const json = await run([
      'join-token',
      'create',
      '--workload',
      'orders',
      '--ttl',
      '2m',
      '--json',
      ...admin,
    ]);
    assert.equal(json.code, 0, json.stderr);
    const res = JSON.parse(json.stdout);
    assert.equal(res.spiffeId, 'spiffe://example.org/ns/shop/sa/orders');
    assert.ok(Date.parse(res.expiresAt) - Date.now() <= 120_000);
    const created = sts.events.filter((e) => e.type === 'admin.join-token.create' && e.decision === 'allow');
    assert.equal(created.length, 2);
  });

  test('join-token create refuses a missing workload, an unknown one, a bad ttl and a non-admin certificate', async () => {
    const web = pki.leaf('web');
    const cases: [string[], number, RegExp][] = [
      [['join-token', 'create', ...admin], 2, /--workload is required/],
      [['join-token', 'create', '--workload', 'nobody', ...admin], 1, /not a registry entry/],
      [['join-token', 'create', '--workload', 'web', '--ttl', 'forever', ...admin], 1, /ttl/],
      [
        [
          'join-token',
          'create',
          '--workload',
          'web',
          '--sts',
          sts.url,
          '--cert',
          web.certFile,
          '--key',
          web.keyFile,
          '--cacert',
          pki.rootFile,
        ],
        1,
        /403 unauthorized_client/,
      ],
      [['join-token', 'create', '--workload', 'web', '--sts', 'not a url'], 1, /not a URL/],
    ];
    for (const [args, code, message] of cases) {
      const r = await run(args);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line, no stack trace');
    }
  });

  test('tokens revoke --jti and certs revoke --serial --sts put entries on the STS deny-list', async () => {
    const t = await run(['tokens', 'revoke', '--jti', 'jti-from-cli', ...admin]);
    assert.equal(t.code, 0, t.stderr);
    assert.ok(sts.denyList.isJtiRevoked('jti-from-cli'));
    const minted = await pki.mint({ uris: [WEB] });
    const c = await run(['certs', 'revoke', '--serial', minted.serial.toUpperCase(), ...admin]);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, new RegExp(`revoked serial ${minted.serial}`));
    assert.ok(sts.denyList.isSerialRevoked(minted.serial));
    const bad = await run(['certs', 'revoke', '--serial', 'xyz', ...admin]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /hex serial/);
    const noJti = await run(['tokens', 'revoke', ...admin]);
    assert.equal(noJti.code, 2);
  });
});
