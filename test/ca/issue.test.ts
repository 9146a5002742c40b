import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { loadRegistry } from '../../core/index.ts';
import {
  createPeerVerifier,
  exportPkcs12,
  initCaDirectory,
  issueWorkloadCertificates,
  loadCaDirectory,
  parseCrl,
  revokeCertificate,
  splitPemBundle,
} from '../../ca/index.ts';
import type { CaMaterial, KeyAlgorithm } from '../../ca/index.ts';
import type { Registry } from '../../core/index.ts';

const identities = new URL('../../identities', import.meta.url).pathname;
const openssl = (...args: string[]) =>
  execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** Runs `fn` over a fresh CA and certificates for the example identities in a temp dir. */
async function withIssued(
  options: { keyAlgorithm?: KeyAlgorithm; p12Passphrase?: string },
  fn: (t: { dir: string; ca: CaMaterial; out: string; registry: Registry }) => Promise<void>,
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-ca-'));
  try {
    const registry = loadRegistry(identities);
    const keyAlgorithm = options.keyAlgorithm ?? 'ecdsa-p256';
    const ca = await initCaDirectory(join(dir, 'ca'), { trustDomain: 'example.org', keyAlgorithm });
    const out = join(dir, 'certs');
    await issueWorkloadCertificates({
      registry,
      ca,
      outDir: out,
      validityMs: 86_400_000,
      renewWithinMs: 3_600_000,
      keyAlgorithm,
      ...(options.p12Passphrase ? { p12Passphrase: options.p12Passphrase } : {}),
      deps: { now: () => new Date() },
    });
    await fn({ dir, ca, out, registry });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const alg of ['ecdsa-p256', 'ed25519', 'rsa-3072'] as KeyAlgorithm[]) {
  test(`${alg}: every leaf passes openssl verify -x509_strict and names exactly its SPIFFE ID`, async () => {
    await withIssued({ keyAlgorithm: alg }, async ({ dir, out, registry }) => {
      for (const w of registry.workloads) {
        const file = join(out, `${w.name}.pem`);
        assert.match(
          openssl(
            'verify',
            '-x509_strict',
            '-CAfile',
            join(out, 'root.pem'),
            '-untrusted',
            join(out, 'intermediate.pem'),
            file,
          ),
          /: OK/,
        );
        const san = openssl('x509', '-in', file, '-noout', '-ext', 'subjectAltName');
        const expected = [
          `URI:${w.spiffeId.uri}`,
          ...w.dnsNames.map((d) => `DNS:${d}`),
          ...w.ipAddresses.map((ip) => `IP Address:${ip}`),
        ].join(', ');
        assert.equal(san.trim().split('\n').pop()!.trim(), expected);
        assert.equal(statSync(join(out, `${w.name}-key.pem`)).mode & 0o777, 0o600);
        const leaf = new X509Certificate(readFileSync(file));
        assert.equal(leaf.ca, false);
        assert.equal(BigInt(`0x${leaf.serialNumber}`) < 2n ** 128n, true);
        assert.ok(new Date(leaf.validTo).getTime() - Date.now() <= 86_400_000);
      }
      const text = openssl('x509', '-in', join(out, 'intermediate.pem'), '-noout', '-text');
      assert.match(text, /CA:TRUE, pathlen:0/);
      assert.match(text, /Permitted:\s+URI:example\.org/);
      assert.equal(statSync(join(dir, 'ca', 'root-key.pem')).mode & 0o777, 0o600);
    });
  });
}

test('serials are random: 200 leaves, 200 distinct 128-bit serials', async () => {
  const { randomSerial } = await import('../../ca/index.ts');
  const serials = new Set(Array.from({ length: 200 }, () => randomSerial()));
  assert.equal(serials.size, 200);
  for (const s of serials) assert.match(s, /^[4-7][0-9a-f]{31}$/);
});

test('PKCS#12 bundles open in openssl with the passphrase and not without it', async () => {
  await withIssued({ p12Passphrase: 'correct horse' }, async ({ dir, out }) => {
    writeFileSync(join(dir, 'pass'), 'correct horse\n');
    const p12 = join(out, 'web.p12');
    assert.equal(statSync(p12).mode & 0o777, 0o600);
    const info = execFileSync(
      'openssl',
      ['pkcs12', '-info', '-in', p12, '-passin', `file:${join(dir, 'pass')}`, '-nodes'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
    assert.match(info, /BEGIN PRIVATE KEY/);
    assert.equal((info.match(/BEGIN CERTIFICATE/g) ?? []).length, 2);
    assert.match(info, /friendlyName: web/);
    assert.throws(() =>
      execFileSync('openssl', ['pkcs12', '-info', '-in', p12, '-passin', 'pass:wrong', '-nodes'], {
        stdio: 'pipe',
      }),
    );
    assert.throws(
      () => exportPkcs12({ chainDer: [], privateKeyPem: '', passphrase: 'x', friendlyName: 'x' }),
      TypeError,
    );
  });
});

test('revocation re-signs the CRL with the next number; openssl sees the serial revoked', async () => {
  await withIssued({}, async ({ dir, ca, out }) => {
    const orders = new X509Certificate(readFileSync(join(out, 'orders.pem')));
    const r = await revokeCertificate({
      ca,
      outDir: out,
      serial: orders.serialNumber,
      reason: 'keyCompromise',
      deps: { now: () => new Date() },
    });
    assert.equal(r.workload, 'orders');
    assert.equal(r.crl.number, 2);
    const again = await revokeCertificate({
      ca,
      outDir: out,
      serial: orders.serialNumber.toLowerCase(),
      deps: { now: () => new Date() },
    });
    assert.equal(again.alreadyRevoked, true);
    assert.throws(
      () =>
        execFileSync(
          'openssl',
          [
            'verify',
            '-crl_check',
            '-CRLfile',
            join(out, 'crl.pem'),
            '-CAfile',
            join(out, 'root.pem'),
            '-untrusted',
            join(out, 'intermediate.pem'),
            join(out, 'orders.pem'),
          ],
          { stdio: 'pipe' },
        ),
      /certificate revoked/,
    );
    const crl = await parseCrl(readFileSync(join(out, 'crl.pem'), 'utf8'), ca.intermediate.cert);
    const v = createPeerVerifier({
      trustAnchorsPem: ca.rootPem,
      intermediatesPem: ca.intermediatePem,
      trustDomain: 'example.org',
      isRevoked: (s) => crl.entries.some((e) => e.serial === s),
      purpose: 'clientAuth',
    });
    assert.throws(() => v.verifyChain(splitPemBundle(readFileSync(join(out, 'orders.pem'), 'utf8'))), {
      code: 'ERR_CA_CERT_REVOKED',
    });
    const other = await initCaDirectory(join(dir, 'other'), { trustDomain: 'example.org' });
    await assert.rejects(parseCrl(readFileSync(join(out, 'crl.pem'), 'utf8'), other.intermediate.cert), {
      code: 'ERR_CA_CRL_INVALID',
    });
    await assert.rejects(
      revokeCertificate({ ca, outDir: out, serial: 'xyz', deps: { now: () => new Date() } }),
      { code: 'ERR_CA_SERIAL_INVALID' },
    );
  });
});

test('a CA directory is never overwritten without force, and a broken one is named', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-cadir-'));
  try {
    await initCaDirectory(join(dir, 'ca'), { trustDomain: 'example.org' });
    const before = readFileSync(join(dir, 'ca', 'root.pem'), 'utf8');
    await assert.rejects(initCaDirectory(join(dir, 'ca'), { trustDomain: 'example.org' }), {
      code: 'ERR_CA_EXISTS',
    });
    assert.equal(readFileSync(join(dir, 'ca', 'root.pem'), 'utf8'), before);
    await initCaDirectory(join(dir, 'ca'), { trustDomain: 'example.org', force: true });
    assert.notEqual(readFileSync(join(dir, 'ca', 'root.pem'), 'utf8'), before);
    await assert.rejects(loadCaDirectory(join(dir, 'nope')), { code: 'ERR_CA_NOT_FOUND' });
    writeFileSync(join(dir, 'ca', 'intermediate-key.pem'), readFileSync(join(dir, 'ca', 'root-key.pem')));
    await assert.rejects(loadCaDirectory(join(dir, 'ca')), {
      code: 'ERR_CA_INVALID',
      message: /intermediate-key\.pem: does not match its certificate/,
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
