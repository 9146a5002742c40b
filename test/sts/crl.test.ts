// A CRL written by `portcullis certs revoke` (ca/revokeCertificate) feeds the STS deny-list.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { revokeCertificate } from '../../ca/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { ORDERS, WEB, call, mtlsAgent, requestToken, startTestSts } from './helpers.ts';

test(
  'serials on the CRL are refused and published; a CRL revoked later is picked up by polling',
  { timeout: 30_000 },
  async () => {
    const pki = await makeTestPki();
    const out = mkdtempSync(join(tmpdir(), 'sts-crl-'));
    const early = await pki.mint({ uris: [WEB] });
    const late = await pki.mint({ uris: [WEB] });
    await revokeCertificate({
      ca: pki.ca,
      outDir: out,
      serial: early.serial,
      deps: { now: () => new Date() },
    });
    const sts = await startTestSts(pki, { revocation: { crl: join(out, 'crl.pem'), pollInterval: '100ms' } });
    const form = { grant_type: 'client_credentials', audience: ORDERS };
    const a = mtlsAgent({ cert: early.chainPem, key: early.keyPem, ca: pki.rootPem });
    const b = mtlsAgent({ cert: late.chainPem, key: late.keyPem, ca: pki.rootPem });
    try {
      const refused = await requestToken(a, sts.url, form);
      assert.equal(refused.status, 401);
      assert.equal(sts.events.at(-1)!.reason, 'ERR_CA_CERT_REVOKED');
      const list = await call(b, `${sts.url}/v1/revocations`);
      assert.deepEqual(
        list.json.serials.map((s: { serial: string }) => s.serial),
        [early.serial],
      );
      assert.equal((await requestToken(b, sts.url, form)).status, 200);
      await revokeCertificate({
        ca: pki.ca,
        outDir: out,
        serial: late.serial,
        deps: { now: () => new Date() },
      });
      const deadline = Date.now() + 10_000;
      let status = 200;
      while (status === 200 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        status = (await requestToken(b, sts.url, form)).status;
      }
      assert.equal(status, 401);
    } finally {
      await a.close();
      await b.close();
      await sts.close();
      pki.cleanup();
      rmSync(out, { recursive: true, force: true });
    }
  },
);

test('a CRL that is not signed by the intermediate stops start-up with ERR_STS_CRL_INVALID', async () => {
  const pki = await makeTestPki();
  const out = mkdtempSync(join(tmpdir(), 'sts-crl-'));
  try {
    writeFileSync(join(out, 'garbage.pem'), '-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n');
    await assert.rejects(startTestSts(pki, { revocation: { crl: join(out, 'garbage.pem') } }), {
      code: 'ERR_STS_CRL_INVALID',
      message: /garbage\.pem: /,
    });
    await assert.rejects(startTestSts(pki, { revocation: { crl: join(out, 'missing.pem') } }), {
      code: 'ERR_STS_CRL_INVALID',
      message: /missing\.pem: cannot be read \(ENOENT\)/,
    });
  } finally {
    pki.cleanup();
    rmSync(out, { recursive: true, force: true });
  }
});
