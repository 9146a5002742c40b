// A start that fails part-way releases what it had opened: the certificate watcher (and, with an
// identity: section, the renewal) must not run on in the calling process after startSts rejects.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger } from '../../core/index.ts';
import { startSts } from '../../sts/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { MASTER_KEY, testConfig } from './helpers.ts';

test('an STS whose identities fail to load stops watching its certificate files before startSts rejects', async () => {
  const pki = await makeTestPki();
  const dir = mkdtempSync(join(tmpdir(), 'sts-start-failure-'));
  try {
    const cert = join(dir, 'sts.pem');
    const key = join(dir, 'sts-key.pem');
    copyFileSync(join(pki.certsDir, 'sts.pem'), cert);
    copyFileSync(join(pki.certsDir, 'sts-key.pem'), key);
    const identities = join(dir, 'identities');
    writeFileSync(identities, 'not a directory\n');
    const lines: { msg?: string }[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as { msg?: string });
        cb();
      },
    });
    const config = testConfig(
      pki,
      { identities, tls: { cert, key, trustBundle: pki.rootFile, reloadInterval: '20ms' } },
      join(dir, 'keys'),
    );
    await assert.rejects(
      startSts(config, {
        masterKey: MASTER_KEY,
        logger: createLogger({ name: 'sts-start-failure', level: 'info', destination }),
      }),
      { code: /^ERR_CONFIG/ },
    );
    // A watcher still running would see this and log that the files are unusable.
    writeFileSync(cert, 'garbage\n');
    await sleep(200);
    assert.deepEqual(
      lines.filter((l) => /certificate/.test(l.msg ?? '')),
      [],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
    pki.cleanup();
  }
});
