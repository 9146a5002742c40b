// `portcullis sts` and `portcullis keys`, black-box: spawned as a user would run them.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { MASTER_KEY } from './helpers.ts';

const CLI = new URL('../../cli/portcullis.ts', import.meta.url).pathname;

function run(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { ...process.env, ...env }, timeout: 20_000 },
      (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

describe('portcullis sts and keys', () => {
  let pki: TestPki;
  let dir: string;
  let config: string;
  before(async () => {
    pki = await makeTestPki();
    dir = mkdtempSync(join(tmpdir(), 'sts-cli-'));
    config = join(dir, 'sts.yaml');
    writeFileSync(
      config,
      [
        'listen: { host: 127.0.0.1, port: 0 }',
        `tls: { cert: ${pki.certsDir}/sts.pem, key: ${pki.certsDir}/sts-key.pem, trustBundle: ${pki.rootFile} }`,
        `identities: ${pki.identitiesDir}`,
        'issuer: https://sts.portcullis.internal',
        'keystore: { type: file, dir: keys }',
        'audit: { sink: log }',
      ].join('\n'),
    );
  });
  after(() => {
    pki.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  const usage = [
    { args: ['--version'], code: 0, out: /^portcullis \d+\.\d+\.\d+ \(node v24\.\d+\.\d+\)\n$/ },
    { args: ['sts', '--help'], code: 0, out: /usage: portcullis sts --config FILE/ },
    { args: ['keys', 'list', '--help'], code: 0, out: /usage: portcullis keys list/ },
    { args: ['keys', 'rotate', '--help'], code: 0, out: /usage: portcullis keys rotate/ },
    { args: ['sts'], code: 2, err: /^portcullis: sts: --config is required/ },
    {
      args: ['sts', '--config'],
      code: 2,
      err: /^portcullis: sts: Option '--config <value>' argument missing/,
    },
    { args: ['sts', '--bogus'], code: 2, err: /^portcullis: sts: Unknown option '--bogus'/ },
    {
      args: ['keys', 'list', '--cert', '/nonexistent.pem'],
      code: 1,
      err: /^portcullis: \/nonexistent.pem: --cert: cannot be read \(ENOENT\)/,
    },
    {
      args: ['keys', 'list', '--sts', 'not a url'],
      code: 1,
      err: /^portcullis: --sts: "not a url" is not a URL/,
    },
  ];
  for (const u of usage) {
    test(`"portcullis ${u.args.join(' ')}" exits ${u.code}`, async () => {
      const r = await run(u.args);
      assert.equal(r.code, u.code, r.stderr);
      if (u.out) assert.match(r.stdout, u.out);
      if (u.err) {
        assert.match(r.stderr, u.err);
        assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
      }
    });
  }

  test('an STS whose port is taken exits 1 with one line saying what to do', async () => {
    const squatter = createServer();
    await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = squatter.address() as AddressInfo;
      const taken = join(dir, 'taken.yaml');
      writeFileSync(taken, readFileSync(config, 'utf8').replace('port: 0', `port: ${port}`));
      const r = await run(['sts', '--config', taken], { PORTCULLIS_MASTER_KEY: MASTER_KEY });
      assert.equal(r.code, 1, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(
          `^portcullis: listen EADDRINUSE: address already in use 127\\.0\\.0\\.1:${port} \\(another process is listening there`,
        ),
      );
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    } finally {
      squatter.close();
    }
  });

  test('a bad PORTCULLIS_LOG_LEVEL exits 1 naming the variable and the levels', async () => {
    const r = await run(['sts', '--config', config], {
      PORTCULLIS_MASTER_KEY: MASTER_KEY,
      PORTCULLIS_LOG_LEVEL: 'loud',
    });
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^portcullis: PORTCULLIS_LOG_LEVEL: must be one of trace, debug, info, warn, error, fatal, silent; got "loud" \[ERR_CONFIG_INVALID\]\n$/,
    );
  });

  test('a config with a misspelled key exits 1 naming file, key and problem', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'listn: {}\n');
    const r = await run(['sts', '--config', bad]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /bad\.yaml: listn: unknown key \(did you mean "listen"\?\) \[ERR_CONFIG_INVALID\]/,
    );
  });

  test('without a master key the STS refuses to start and says why', async () => {
    const r = await run(['sts', '--config', config], { PORTCULLIS_MASTER_KEY: '' });
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /PORTCULLIS_MASTER_KEY is not set.*openssl rand -base64 32.*\[ERR_STS_MASTER_KEY_MISSING\]/,
    );
  });

  test(
    'a running STS answers keys list and keys rotate for the admin console and refuses others',
    { timeout: 60_000 },
    async () => {
      const child: ChildProcess = spawn(process.execPath, [CLI, 'sts', '--config', config], {
        env: { ...process.env, PORTCULLIS_MASTER_KEY: MASTER_KEY, PORTCULLIS_LOG_LEVEL: 'warn' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      try {
        const url = await new Promise<string>((resolve, reject) => {
          let err = '';
          child.stderr!.on('data', (d: Buffer) => {
            err += d.toString();
            const m = /listening on https:\/\/127\.0\.0\.1:(\d+)/.exec(err);
            if (m) resolve(`https://localhost:${m[1]}`);
          });
          child.once('exit', (code) => reject(new Error(`sts exited ${code}: ${err}`)));
          setTimeout(() => reject(new Error(`no listening line: ${err}`)), 20_000).unref();
        });
        const admin = [
          '--sts',
          url,
          '--cert',
          join(pki.certsDir, 'admin-console.pem'),
          '--key',
          join(pki.certsDir, 'admin-console-key.pem'),
          '--ca',
          pki.rootFile,
        ];
        const list = await run(['keys', 'list', ...admin]);
        assert.equal(list.code, 0, list.stderr);
        assert.match(list.stdout, /^STATE\s+KID\s+ALG\s+SINCE\s+UNTIL\ncurrent\s+\S{43}\s+ES256/);
        const json = await run(['keys', 'list', '--json', ...admin]);
        assert.deepEqual(
          JSON.parse(json.stdout).keys.map((k: { state: string }) => k.state),
          ['current', 'next'],
        );
        const rotate = await run(['keys', 'rotate', ...admin]);
        assert.equal(rotate.code, 0, rotate.stderr);
        assert.match(
          rotate.stdout,
          /rotation scheduled: the next key signs at \S+ \(still \S{43} until then\)/,
        );
        const web = [
          '--sts',
          url,
          '--cert',
          join(pki.certsDir, 'web.pem'),
          '--key',
          join(pki.certsDir, 'web-key.pem'),
          '--cacert', // the spelling of every admin command; --ca above is keys' older one
          pki.rootFile,
        ];
        const refused = await run(['keys', 'list', ...web]);
        assert.equal(refused.code, 1);
        assert.match(
          refused.stderr,
          /HTTP 403 unauthorized_client: this route needs role admin \[ERR_STS_ADMIN_CALL_FAILED\]/,
        );
      } finally {
        const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
        child.kill('SIGTERM');
        assert.equal(await exited, 0, 'graceful stop on SIGTERM');
      }
    },
  );
});
