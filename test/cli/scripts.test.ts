import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SCRIPT = new URL('../../scripts/renew-certs.sh', import.meta.url).pathname;
const IDENTITIES = new URL('../../identities', import.meta.url).pathname;

test('the cron renewal script issues what is missing, then has nothing to do', () => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-renew-'));
  try {
    const env = { ...process.env, IDENTITIES, CA_DIR: join(dir, 'ca'), OUT_DIR: join(dir, 'certs') };
    const init = spawnSync(
      process.execPath,
      [
        new URL('../../cli/portcullis.ts', import.meta.url).pathname,
        'ca',
        'init',
        '--trust-domain',
        'example.org',
        '--out',
        join(dir, 'ca'),
      ],
      { encoding: 'utf8' },
    );
    assert.equal(init.status, 0, init.stderr);
    const first = spawnSync('bash', [SCRIPT], { env, encoding: 'utf8', timeout: 60_000 });
    assert.equal(first.status, 0, first.stderr);
    assert.match(first.stdout, /6 issued, 0 renewed, 0 unchanged/);
    const second = spawnSync('bash', [SCRIPT], { env, encoding: 'utf8', timeout: 60_000 });
    assert.equal(second.status, 0, second.stderr);
    assert.match(second.stdout, /nothing to do/);
    // Where `npm run certs` left a PKCS#12 passphrase file, the bundles are kept up to date too.
    writeFileSync(join(dir, 'certs', 'p12-passphrase'), 'correct horse battery staple\n', { mode: 0o600 });
    const withP12 = spawnSync('bash', [SCRIPT], { env, encoding: 'utf8', timeout: 60_000 });
    assert.equal(withP12.status, 0, withP12.stderr);
    assert.ok(existsSync(join(dir, 'certs', 'web.p12')), withP12.stdout);
    const bad = spawnSync('bash', [SCRIPT], {
      env: { ...env, RENEW_WITHIN: 'soon' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--renew-within: "soon" is not a duration/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
