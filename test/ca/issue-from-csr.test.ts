// issueFromCsr: the certificate it assembles matches the library-made profile field for field,
// and every kind of bad request is refused with its own code.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate as NodeX509 } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  certsOnlyPkcs7,
  initCaDirectory,
  issueCertificate,
  issueFromCsr,
  parseCertsOnlyPkcs7,
  x509,
} from '../../ca/index.ts';
import type { CaMaterial } from '../../ca/index.ts';
import { parseRegistry } from '../../core/index.ts';

const registry = parseRegistry([
  {
    file: 'test.yaml',
    text: `trustDomain: example.org
workloads:
  - name: web
    spiffeId: spiffe://example.org/ns/shop/sa/web
    dnsNames: [web.shop.internal]
    ipAddresses: [127.0.0.1, "::1"]
`,
  },
]);
const web = registry.byName('web')!;

type Alg = 'P-256' | 'P-384' | 'Ed25519' | 'RSA-2048' | 'RSA-1024';
async function makeCsr(alg: Alg, names: { type: 'url' | 'dns' | 'ip'; value: string }[] = []) {
  const params =
    alg === 'Ed25519'
      ? { gen: { name: 'Ed25519' }, sig: { name: 'Ed25519' } }
      : alg.startsWith('P-')
        ? {
            gen: { name: 'ECDSA', namedCurve: alg },
            sig: { name: 'ECDSA', hash: alg === 'P-256' ? 'SHA-256' : 'SHA-384' },
          }
        : {
            gen: {
              name: 'RSASSA-PKCS1-v1_5',
              modulusLength: alg === 'RSA-2048' ? 2048 : 1024,
              publicExponent: new Uint8Array([1, 0, 1]),
              hash: 'SHA-256',
            },
            sig: { name: 'RSASSA-PKCS1-v1_5' },
          };
  const keys = (await crypto.subtle.generateKey(params.gen as EcKeyGenParams, true, [
    'sign',
    'verify',
  ])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=anything',
    keys,
    signingAlgorithm: params.sig as EcdsaParams,
    ...(names.length ? { extensions: [new x509.SubjectAlternativeNameExtension(names)] } : {}),
  });
  return { der: new Uint8Array(csr.rawData), csr };
}

describe('issueFromCsr', () => {
  let dir: string;
  let ca: CaMaterial;
  const issue = (csrDer: Uint8Array, validityMs = 3_600_000) =>
    issueFromCsr({
      csrDer,
      workload: web,
      issuer: ca.intermediate,
      trustDomain: 'example.org',
      validityMs,
      deps: { now: () => new Date() },
    });

  test('the assembled certificate has the library profile: same names, extensions, issuer; its own key, serial and SKI', async () => {
    dir = mkdtempSync(join(tmpdir(), 'csr-'));
    ca = await initCaDirectory(join(dir, 'ca'), { trustDomain: 'example.org' });
    const { der, csr } = await makeCsr('P-256');
    const issued = await issue(der);
    const cert = new x509.X509Certificate(new Uint8Array(issued.certDer));
    const lib = await issueCertificate({
      role: 'leaf',
      subject: 'O=example.org, CN=web',
      publicKey: csr.publicKey,
      issuer: ca.intermediate,
      names: { spiffeId: web.spiffeId.uri, dnsNames: web.dnsNames, ipAddresses: web.ipAddresses },
      validityMs: 3_600_000,
      deps: { now: () => new Date() },
    });
    assert.equal(cert.subject, lib.subject);
    assert.equal(cert.issuer, lib.issuer);
    assert.deepEqual(
      cert.extensions.map((e) => [e.type, e.critical, Buffer.from(e.value).toString('hex')]),
      lib.extensions.map((e) => [e.type, e.critical, Buffer.from(e.value).toString('hex')]),
    );
    assert.equal(
      Buffer.from(cert.publicKey.rawData).toString('hex'),
      Buffer.from(csr.publicKey.rawData).toString('hex'),
    );
    assert.equal(cert.serialNumber.toLowerCase().replace(/^0+/, ''), issued.serial);
    const node = new NodeX509(issued.certDer);
    assert.ok(node.verify(new NodeX509(ca.intermediatePem).publicKey), 'signed by the intermediate');
    assert.ok(node.checkIssued(new NodeX509(ca.intermediatePem)));
    assert.equal(Date.parse(node.validTo) - Date.parse(node.validFrom), 3_600_000 + 60_000);
    assert.ok(await cert.verify({ publicKey: ca.intermediate.cert.publicKey, signatureOnly: true }));
    assert.match(issued.keyThumbprint, /^[A-Za-z0-9_-]{43}$/);
    // Two issuances: two serials.
    assert.notEqual((await issue(der)).serial, issued.serial);
  });

  test('accepts ECDSA P-256 and P-384, Ed25519 and RSA-2048 requests, and one naming only the entry', async () => {
    for (const alg of ['P-384', 'Ed25519', 'RSA-2048'] as const) {
      const issued = await issue((await makeCsr(alg)).der);
      assert.ok(new NodeX509(issued.certDer).verify(new NodeX509(ca.intermediatePem).publicKey), alg);
    }
    const own = await makeCsr('P-256', [
      { type: 'url', value: web.spiffeId.uri },
      { type: 'dns', value: 'web.shop.internal' },
      { type: 'ip', value: '::1' },
    ]);
    assert.match(
      new NodeX509((await issue(own.der)).certDer).subjectAltName!,
      /URI:spiffe:\/\/example\.org\/ns\/shop\/sa\/web/,
    );
  });

  test('caps the lifetime at the issuer’s end', async () => {
    const issued = await issue((await makeCsr('P-256')).der, 100 * 365 * 86_400_000);
    assert.ok(issued.notAfter.getTime() <= ca.intermediate.cert.notAfter.getTime());
  });

  test('refuses every kind of bad request with its code', async () => {
    const good = (await makeCsr('P-256')).der;
    const tampered = Buffer.from(good);
    tampered[tampered.length - 3] = tampered[tampered.length - 3]! ^ 0xff;
    const cases: [string, Uint8Array | Promise<Uint8Array>, string][] = [
      ['empty', new Uint8Array(0), 'ERR_CA_CSR_INVALID'],
      ['garbage', Buffer.from('hello world, not DER'), 'ERR_CA_CSR_INVALID'],
      ['trailing bytes', Buffer.concat([good, Buffer.from([0])]), 'ERR_CA_CSR_INVALID'],
      ['truncated', good.subarray(0, good.length - 10), 'ERR_CA_CSR_INVALID'],
      ['a certificate, not a CSR', new NodeX509(ca.intermediatePem).raw, 'ERR_CA_CSR_INVALID'],
      ['too large', new Uint8Array(20_000), 'ERR_CA_CSR_INVALID'],
      ['tampered signature', tampered, 'ERR_CA_CSR_SIGNATURE'],
      ['RSA-1024', makeCsr('RSA-1024').then((c) => c.der), 'ERR_CA_KEY_TOO_WEAK'],
      [
        'another SPIFFE ID',
        makeCsr('P-256', [{ type: 'url', value: 'spiffe://example.org/ns/ops/sa/admin' }]).then((c) => c.der),
        'ERR_CA_CSR_IDENTITY',
      ],
      [
        'another trust domain',
        makeCsr('P-256', [{ type: 'url', value: 'spiffe://evil.org/ns/shop/sa/web' }]).then((c) => c.der),
        'ERR_CA_CSR_IDENTITY',
      ],
      [
        'a DNS name not in the entry',
        makeCsr('P-256', [{ type: 'dns', value: 'bank.example.com' }]).then((c) => c.der),
        'ERR_CA_CSR_IDENTITY',
      ],
      [
        'an IP not in the entry',
        makeCsr('P-256', [{ type: 'ip', value: '10.0.0.1' }]).then((c) => c.der),
        'ERR_CA_CSR_IDENTITY',
      ],
    ];
    for (const [name, der, code] of cases) {
      await assert.rejects(issue(await der), (err: Error & { code?: string }) => {
        assert.equal(err.code, code, `${name}: ${err.message}`);
        return true;
      });
    }
  });

  test('certs-only PKCS#7 round-trips through @peculiar/x509 in order', async () => {
    const issued = await issue((await makeCsr('P-256')).der);
    const pems = parseCertsOnlyPkcs7(
      Buffer.from(certsOnlyPkcs7([issued.certDer, new NodeX509(ca.intermediatePem).raw])).toString('base64'),
    );
    assert.equal(pems.length, 2);
    assert.equal(new NodeX509(pems[0]!).serialNumber, new NodeX509(issued.certDer).serialNumber);
    assert.equal(new NodeX509(pems[1]!).subject, new NodeX509(ca.intermediatePem).subject);
    assert.throws(() => parseCertsOnlyPkcs7('bm90IHBrY3M3'), { code: 'ERR_CA_CERT_MALFORMED' });
    rmSync(dir, { recursive: true, force: true });
  });
});
