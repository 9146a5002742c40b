// keepIdentity at start-up and on failure, against a real STS: a renewal interrupted between its
// two renames is finished, a missing certificate without a join token stops start-up with one
// clear line, a refused renewal leaves the files untouched, and the identity: section's bad
// values are refused by the config schema.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { keepIdentity } from '../../ca/index.ts';
import { createLogger, identityConfigSchema } from '../../core/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { startTestSts } from '../sts/helpers.ts';

const quiet = createLogger({ name: 'keep', level: 'silent' });
const timing = { renewAt: 0.5, jitter: 0, retryMinMs: 100, retryMaxMs: 1000, logger: quiet };

describe('keepIdentity', () => {
  test('finishes an interrupted renewal, renews on demand, and refuses to start without a usable pair', async () => {
    const pki = await makeTestPki();
    const sts = await startTestSts(pki, { ca: { dir: pki.ca.dir } });
    const dir = mkdtempSync(join(tmpdir(), 'keep-'));
    const files = {
      certFile: join(dir, 'cert.pem'),
      keyFile: join(dir, 'key.pem'),
      trustBundleFile: pki.rootFile,
    };
    try {
      copyFileSync(pki.leaf('web').certFile, files.certFile);
      copyFileSync(pki.leaf('web').keyFile, files.keyFile);
      const keeper = await keepIdentity({ estUrl: sts.url, ...files, bootstrap: 'files', ...timing });
      const before = new X509Certificate(readFileSync(files.certFile));
      const notAfter = await keeper.renewNow();
      keeper.stop();
      const after = new X509Certificate(readFileSync(files.certFile));
      assert.notEqual(after.serialNumber, before.serialNumber);
      assert.equal(after.validTo, new X509Certificate(readFileSync(files.certFile)).validTo);
      assert.ok(Math.abs(notAfter.getTime() - Date.parse(after.validTo)) < 1000);
      assert.equal(existsSync(`${files.keyFile}.next`), false);

      // A crash after the chain was written and before the key was moved: the old key is in place,
      // the new one waits as key.pem.next. The next start finishes the move.
      const newKey = readFileSync(files.keyFile);
      writeFileSync(`${files.keyFile}.next`, newKey, { mode: 0o600 });
      copyFileSync(pki.leaf('web').keyFile, files.keyFile);
      const restarted = await keepIdentity({ estUrl: sts.url, ...files, bootstrap: 'files', ...timing });
      restarted.stop();
      assert.deepEqual(readFileSync(files.keyFile), newKey);
      assert.equal(existsSync(`${files.keyFile}.next`), false);

      // A refused renewal (the STS does not know this certificate's key any more: it is revoked)
      // leaves both files as they were.
      const certBefore = readFileSync(files.certFile, 'utf8');
      sts.denyList.revokeSerial(after.serialNumber.toLowerCase().replace(/^0+/, ''), Date.now() + 60_000);
      const k = await keepIdentity({ estUrl: sts.url, ...files, bootstrap: 'files', ...timing });
      await assert.rejects(k.renewNow(), /HTTP 401 invalid_client/);
      k.stop();
      assert.equal(readFileSync(files.certFile, 'utf8'), certBefore);
      assert.deepEqual(readFileSync(files.keyFile), newKey);

      // Nothing usable on disk.
      rmSync(files.certFile);
      await assert.rejects(keepIdentity({ estUrl: sts.url, ...files, bootstrap: 'files', ...timing }), {
        code: 'ERR_CA_IDENTITY_MISSING',
      });
      await assert.rejects(
        keepIdentity({ estUrl: sts.url, ...files, bootstrap: { joinToken: '' }, ...timing }),
        (err: Error & { code?: string }) =>
          err.code === 'ERR_CA_IDENTITY_MISSING' && /no join token/.test(err.message),
      );
      await assert.rejects(
        keepIdentity({
          estUrl: 'https://127.0.0.1:1',
          ...files,
          bootstrap: { joinToken: 'pjt.x' },
          ...timing,
        }),
        { code: 'ERR_CA_ENROLMENT_FAILED' },
      );
    } finally {
      await sts.close();
      rmSync(dir, { recursive: true, force: true });
      pki.cleanup();
    }
  });

  test('the identity: section refuses bad values with a reason', () => {
    const bad: [unknown, RegExp][] = [
      [{ bootstrap: 'files', renewAt: '95%' }, /between 10% and 90%/],
      [{ bootstrap: 'files', renewAt: 'half' }, /percentage/],
      [{ bootstrap: 'token' }, /bootstrap/],
      [{ bootstrap: { joinTokenEnv: '1BAD' } }, /environment variable/],
      [{ bootstrap: 'files', est: 'http://sts' }, /https/],
      [{ bootstrap: 'files', jitter: 0.5 }, /jitter|0\.2/],
      [{ bootstrap: 'files', retryMin: 'soon' }, /retryMin|duration/],
    ];
    for (const [input, message] of bad) {
      const r = identityConfigSchema.safeParse(input);
      assert.equal(r.success, false, JSON.stringify(input));
      assert.match(JSON.stringify(r.error!.issues), message, JSON.stringify(input));
    }
    const ok = identityConfigSchema.parse({ bootstrap: { joinTokenFile: 't' }, renewAt: '66.6%' });
    assert.ok(Math.abs(ok.renewAt - 0.666) < 1e-9);
    assert.equal(identityConfigSchema.parse({ bootstrap: 'files' }).renewAt, 0.5);
  });
});
