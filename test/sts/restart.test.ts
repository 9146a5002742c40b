// Restarting on the same keystore keeps the keys; a wrong or short master key stops start-up and touches nothing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { FileKeystore, parseMasterKey } from '../../sts/index.ts';
import { ORDERS, call, decodeJwt, mtlsAgent, requestToken, startTestSts } from './helpers.ts';

/** Hash of every file's name, mode, size, mtime and content under `dir`. */
function hashDir(dir: string): string {
  const h = createHash('sha256');
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    const s = statSync(p);
    h.update(`${name}:${s.mode}:${s.size}:${s.mtimeMs}\n`);
    if (s.isFile()) h.update(readFileSync(p));
  }
  return h.digest('hex');
}

describe('restart and master key', () => {
  let pki: TestPki;
  let dir: string;
  before(async () => {
    pki = await makeTestPki();
    dir = mkdtempSync(join(tmpdir(), 'sts-restart-'));
  });
  after(() => {
    pki.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a restarted STS on the same keystore serves the same JWKS and signs with the same kid', async () => {
    const web = pki.leaf('web');
    const keys = join(dir, 'keys');
    const tokenKid = async (url: string) => {
      const agent = mtlsAgent({ cert: web.certPem, key: web.keyPem, ca: pki.rootPem });
      try {
        const jwks = (await call(agent, `${url}/.well-known/jwks.json`)).text;
        const token = (await requestToken(agent, url, { grant_type: 'client_credentials', audience: ORDERS }))
          .json.access_token;
        return { jwks, kid: decodeJwt(token).header.kid as string };
      } finally {
        await agent.close();
      }
    };
    const first = await startTestSts(pki, {}, {}, keys);
    const a = await tokenKid(first.url);
    await first.close();
    const before = hashDir(keys);
    const second = await startTestSts(pki, {}, {}, keys);
    const b = await tokenKid(second.url);
    await second.close();
    assert.equal(b.jwks, a.jwks);
    assert.equal(b.kid, a.kid);
    assert.equal(hashDir(keys), before, 'a restart with nothing due writes nothing');
  });

  test('a wrong master key stops start-up with ERR_STS_MASTER_KEY_WRONG and changes nothing on disk', async () => {
    const keys = join(dir, 'keys-wrong');
    const sts = await startTestSts(pki, {}, {}, keys);
    await sts.close();
    const before = hashDir(keys);
    await assert.rejects(
      startTestSts(pki, {}, { masterKey: randomBytes(32).toString('base64') }, keys),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_STS_MASTER_KEY_WRONG');
        assert.match(
          err.message,
          /PORTCULLIS_MASTER_KEY is not the master key this keystore was sealed with/,
        );
        return true;
      },
    );
    assert.equal(hashDir(keys), before);
  });

  const refusals = [
    { name: 'missing', value: undefined, code: 'ERR_STS_MASTER_KEY_MISSING', message: /is not set/ },
    { name: 'empty', value: '  ', code: 'ERR_STS_MASTER_KEY_MISSING', message: /is not set/ },
    {
      name: '31 bytes',
      value: randomBytes(31).toString('base64'),
      code: 'ERR_STS_MASTER_KEY_INVALID',
      message: /decodes to 31 bytes; at least 32/,
    },
    {
      name: 'not base64',
      value: 'this is not base64!'.repeat(4),
      code: 'ERR_STS_MASTER_KEY_INVALID',
      message: /not base64/,
    },
  ];
  for (const r of refusals) {
    test(`refuses to start with a ${r.name} master key (${r.code}) without creating the keystore`, async () => {
      const keys = join(dir, `keys-${r.name.replace(/\W/g, '')}`);
      await assert.rejects(
        startTestSts(pki, {}, { masterKey: undefined, env: { PORTCULLIS_MASTER_KEY: r.value } }, keys),
        {
          code: r.code,
          message: r.message,
        },
      );
      assert.throws(() => statSync(keys), { code: 'ENOENT' });
    });
  }

  test('parseMasterKey accepts standard and URL-safe base64 of 32 bytes and never echoes the value', () => {
    const raw = randomBytes(48);
    assert.deepEqual(Buffer.from(parseMasterKey(raw.toString('base64'))), raw);
    assert.deepEqual(Buffer.from(parseMasterKey(raw.toString('base64url'))), raw);
    const secret = randomBytes(16).toString('base64');
    assert.throws(
      () => parseMasterKey(secret),
      (err: Error) => !err.message.includes(secret),
    );
  });

  test('a file keystore whose sealed key was altered is refused as a wrong key, not used', async () => {
    const keys = join(dir, 'keys-tamper');
    const masterKey = randomBytes(32);
    const ks = new FileKeystore({ dir: keys, masterKey });
    const sts = await startTestSts(pki, {}, { keystore: ks });
    await sts.close();
    const file = join(keys, 'keyring.json');
    const doc = JSON.parse(readFileSync(file, 'utf8'));
    doc.keys[0].sealed.ciphertext = Buffer.from(randomBytes(40)).toString('base64url');
    (await import('node:fs')).writeFileSync(file, JSON.stringify(doc));
    await assert.rejects(new FileKeystore({ dir: keys, masterKey }).read(), {
      code: 'ERR_STS_MASTER_KEY_WRONG',
    });
  });
});
