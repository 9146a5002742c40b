// EST (RFC 7030) enrolment and renewal over a real STS, driven by openssl and curl alone on the
// client side, plus the refusals: replayed, expired, unknown and malformed join tokens, CSRs that
// ask for another identity or fail proof of possession, renewal with a revoked certificate.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { X509Certificate } from 'node:crypto';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { parseAuditEvent } from '../../core/index.ts';
import { WEB, call, mtlsAgent, startTestSts } from './helpers.ts';
import type { TestSts } from './helpers.ts';

const run = promisify(execFile);

describe('EST enrolment with openssl and curl', () => {
  let pki: TestPki;
  let sts: TestSts;
  let dir: string;
  let now = Date.now();
  const agents: { close(): Promise<void> }[] = [];
  const admin = () => {
    const leaf = pki.leaf('admin-console');
    const a = mtlsAgent({ cert: leaf.certPem, key: leaf.keyPem, ca: pki.rootPem });
    agents.push(a);
    return a;
  };
  const joinToken = async (workload: string, ttl?: string) => {
    const res = await call(admin(), `${sts.url}/v1/admin/join-tokens`, {
      method: 'POST',
      body: JSON.stringify({ workload, ...(ttl ? { ttl } : {}) }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(res.status, 200, res.text);
    return res.json as { token: string; expiresAt: string; spiffeId: string };
  };
  const sh = async (cmd: string, args: string[]) =>
    (await run(cmd, args, { cwd: dir, timeout: 10_000 })).stdout;
  /** openssl req: a P-256 key and a base64 DER CSR naming `uri` (if any). */
  const csr = async (name: string, uri?: string) => {
    await sh('openssl', [
      'req',
      '-new',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      `${name}-key.pem`,
      '-subj',
      `/CN=${name}`,
      '-outform',
      'DER',
      '-out',
      `${name}.der`,
      ...(uri ? ['-addext', `subjectAltName=URI:${uri}`] : []),
    ]);
    writeFileSync(join(dir, `${name}.b64`), readFileSync(join(dir, `${name}.der`)).toString('base64'));
  };
  /** curl a POST with a base64 CSR; returns the HTTP status and writes the body to `out`. */
  const curl = async (path: string, csrName: string, out: string, extra: string[]) => {
    const status = await sh('curl', [
      '-sS',
      '-o',
      out,
      '-w',
      '%{http_code}',
      '--cacert',
      pki.rootFile,
      '-H',
      'Content-Type: application/pkcs10',
      '--data-binary',
      `@${csrName}.b64`,
      ...extra,
      `${sts.url}${path}`,
    ]);
    return Number(status);
  };
  const printCerts = async (b64File: string, pemFile: string) => {
    writeFileSync(
      join(dir, `${b64File}.der`),
      Buffer.from(readFileSync(join(dir, b64File), 'utf8'), 'base64'),
    );
    await sh('openssl', [
      'pkcs7',
      '-inform',
      'DER',
      '-in',
      `${b64File}.der`,
      '-print_certs',
      '-out',
      pemFile,
    ]);
    return readFileSync(join(dir, pemFile), 'utf8');
  };

  before(async () => {
    pki = await makeTestPki();
    dir = mkdtempSync(join(tmpdir(), 'est-'));
    writeFileSync(join(dir, 'root.pem'), pki.rootPem);
    sts = await startTestSts(
      pki,
      { ca: { dir: pki.ca.dir, perSecond: 50, burst: 50 } },
      { clock: { now: () => now } },
    );
  });
  after(async () => {
    for (const e of sts.events) parseAuditEvent(e);
    for (const a of agents) await a.close();
    await sts.close();
    pki.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  test('cacerts is a certs-only PKCS#7 of the trust anchor and the intermediate, without a client certificate', async () => {
    const status = await sh('curl', [
      '-sS',
      '-o',
      'cacerts.b64',
      '-w',
      '%{http_code}',
      '--cacert',
      pki.rootFile,
      `${sts.url}/.well-known/est/cacerts`,
    ]);
    assert.equal(status, '200');
    const pem = await printCerts('cacerts.b64', 'cacerts.pem');
    const subjects = [...pem.matchAll(/subject=([^\n]+)/g)].map((m) => m[1]);
    assert.equal(subjects.length, 2, pem);
    assert.ok(subjects.some((s) => s!.includes('Root CA')));
    assert.ok(subjects.some((s) => s!.includes('Intermediate CA')));
  });

  test('enrol with a join token, then re-enrol over mTLS: both pass openssl verify -x509_strict and name the registry ID', async () => {
    const { token } = await joinToken('web');
    await csr('web1', WEB);
    assert.equal(
      await curl('/.well-known/est/simpleenroll', 'web1', 'web1.p7', [
        '-H',
        `Authorization: Bearer ${token}`,
      ]),
      200,
    );
    const chain = await printCerts('web1.p7', 'web1.pem');
    await sh('openssl', [
      'verify',
      '-x509_strict',
      '-CAfile',
      'root.pem',
      '-untrusted',
      'web1.pem',
      'web1.pem',
    ]);
    const leaf = new X509Certificate(chain);
    assert.match(leaf.subjectAltName!, /URI:spiffe:\/\/example\.org\/ns\/shop\/sa\/web/);
    assert.equal(leaf.subjectAltName!.match(/URI:/g)!.length, 1);
    const life = Date.parse(leaf.validTo) - Date.parse(leaf.validFrom);
    assert.ok(life <= 3_600_000 + 61_000 && life >= 3_600_000 - 1000, `1h default svidTtl, got ${life}`);
    // The key never left the client: the certificate holds the CSR's key.
    const key = readFileSync(join(dir, 'web1-key.pem'), 'utf8');
    assert.ok(leaf.checkPrivateKey((await import('node:crypto')).createPrivateKey(key)));

    await csr('web2');
    const status = await curl('/.well-known/est/simplereenroll', 'web2', 'web2.p7', [
      '--cert',
      'web1.pem',
      '--key',
      'web1-key.pem',
    ]);
    assert.equal(status, 200, readFileSync(join(dir, 'web2.p7'), 'utf8'));
    const renewed = new X509Certificate(await printCerts('web2.p7', 'web2.pem'));
    await sh('openssl', [
      'verify',
      '-x509_strict',
      '-CAfile',
      'root.pem',
      '-untrusted',
      'web2.pem',
      'web2.pem',
    ]);
    assert.match(renewed.subjectAltName!, /^URI:spiffe:\/\/example\.org\/ns\/shop\/sa\/web/);
    assert.notEqual(renewed.serialNumber, leaf.serialNumber);

    const issued = sts.events.filter((e) => e.type === 'cert.issued');
    assert.equal(issued.length, 2);
    assert.equal(issued[0]!.subject, WEB);
    assert.equal(issued[0]!.attributes!.auth, 'join-token');
    assert.equal(issued[0]!.attributes!.serial, leaf.serialNumber.toLowerCase().replace(/^0+/, ''));
    assert.match(String(issued[0]!.attributes!.keyThumbprint), /^[A-Za-z0-9_-]{43}$/);
    assert.equal(issued[1]!.attributes!.auth, 'mtls');
    assert.equal(issued[1]!.attributes!.previousSerial, issued[0]!.attributes!.serial);
    assert.ok(!JSON.stringify(sts.events).includes(token), 'the token text is never in the audit log');
  });

  test('a join token used twice is refused with 401 and the refusal is audited', async () => {
    const { token } = await joinToken('orders');
    await csr('o1');
    assert.equal(
      await curl('/.well-known/est/simpleenroll', 'o1', 'o1.p7', ['-H', `Authorization: Bearer ${token}`]),
      200,
    );
    assert.equal(
      await curl('/.well-known/est/simpleenroll', 'o1', 'o1b.p7', ['-H', `Authorization: Bearer ${token}`]),
      401,
    );
    const refusal = sts.events.at(-1)!;
    assert.equal(refusal.decision, 'deny');
    assert.equal(refusal.reason, 'ERR_STS_JOIN_TOKEN_USED');
    assert.equal(refusal.subject, 'spiffe://example.org/ns/shop/sa/orders');
  });

  test('an expired join token is refused with 401 and audited', async () => {
    const { token } = await joinToken('orders', '1m');
    now += 61_000;
    await csr('o2');
    assert.equal(
      await curl('/.well-known/est/simpleenroll', 'o2', 'o2.p7', ['-H', `Authorization: Bearer ${token}`]),
      401,
    );
    assert.equal(sts.events.at(-1)!.reason, 'ERR_STS_JOIN_TOKEN_EXPIRED');
  });

  test('bad join tokens of every shape are refused with 401, each with its reason', async () => {
    await csr('bad');
    const cases: [string[], string][] = [
      [[], 'ERR_STS_JOIN_TOKEN_MISSING'],
      [['-H', 'Authorization: Basic dXNlcjpwYXNz'], 'ERR_STS_JOIN_TOKEN_MISSING'],
      [['-H', 'Authorization: Bearer not-a-token'], 'ERR_STS_JOIN_TOKEN_MALFORMED'],
      [['-H', `Authorization: Bearer pjt.${'A'.repeat(43)}`], 'ERR_STS_JOIN_TOKEN_UNKNOWN'],
    ];
    for (const [headers, reason] of cases) {
      assert.equal(await curl('/.well-known/est/simpleenroll', 'bad', 'bad.p7', headers), 401, reason);
      assert.equal(sts.events.at(-1)!.reason, reason);
      assert.equal(sts.events.at(-1)!.type, 'authz.decision');
    }
  });

  test('a CSR asking for another SPIFFE ID is refused (403), audited, and does not spend the token', async () => {
    const { token } = await joinToken('web');
    await csr('evil', 'spiffe://example.org/ns/ops/sa/admin-console');
    assert.equal(
      await curl('/.well-known/est/simpleenroll', 'evil', 'evil.p7', [
        '-H',
        `Authorization: Bearer ${token}`,
      ]),
      403,
    );
    const refusal = sts.events.at(-1)!;
    assert.equal(refusal.reason, 'ERR_CA_CSR_IDENTITY');
    assert.equal(refusal.subject, WEB);
    // A DNS name the entry does not hold is another identity too.
    writeFileSync(join(dir, 'dns.cnf'), '');
    await sh('openssl', [
      'req',
      '-new',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      'dns-key.pem',
      '-subj',
      '/CN=x',
      '-outform',
      'DER',
      '-out',
      'dns.der',
      '-addext',
      'subjectAltName=DNS:bank.example.com',
    ]);
    writeFileSync(join(dir, 'dns.b64'), readFileSync(join(dir, 'dns.der')).toString('base64'));
    assert.equal(
      await curl('/.well-known/est/simpleenroll', 'dns', 'dns.p7', ['-H', `Authorization: Bearer ${token}`]),
      403,
    );
    // The token still enrols an honest request.
    await csr('honest');
    assert.equal(
      await curl('/.well-known/est/simpleenroll', 'honest', 'honest.p7', [
        '-H',
        `Authorization: Bearer ${token}`,
      ]),
      200,
    );
  });

  test('bodies that are not a valid CSR are refused with 4xx and a reason, never a stack trace', async () => {
    const { token } = await joinToken('web');
    await csr('good', WEB);
    const der = readFileSync(join(dir, 'good.der'));
    const tampered = Buffer.from(der);
    tampered[tampered.length - 5] = tampered[tampered.length - 5]! ^ 0x01; // inside the signature: proof of possession fails
    const cases: [string, string, number, string][] = [
      ['not base64 !!!', 'application/pkcs10', 400, 'ERR_STS_CSR_INVALID'],
      ['', 'application/pkcs10', 400, 'ERR_STS_CSR_INVALID'],
      [Buffer.from('hello world').toString('base64'), 'application/pkcs10', 400, 'ERR_CA_CSR_INVALID'],
      [tampered.toString('base64'), 'application/pkcs10', 400, 'ERR_CA_CSR_SIGNATURE'],
      [der.toString('base64'), 'text/plain', 415, 'ERR_STS_MEDIA_TYPE_UNSUPPORTED'],
    ];
    for (const [body, type, status, reason] of cases) {
      writeFileSync(join(dir, 'case.b64'), body);
      const got = await sh('curl', [
        '-sS',
        '-o',
        'case.out',
        '-w',
        '%{http_code}',
        '--cacert',
        pki.rootFile,
        '-H',
        `Content-Type: ${type}`,
        '-H',
        `Authorization: Bearer ${token}`,
        '--data-binary',
        '@case.b64',
        `${sts.url}/.well-known/est/simpleenroll`,
      ]);
      assert.equal(Number(got), status, `${reason}: ${readFileSync(join(dir, 'case.out'), 'utf8')}`);
      const answer = JSON.parse(readFileSync(join(dir, 'case.out'), 'utf8'));
      assert.ok(!/at .*\.ts/.test(answer.error_description), 'no stack trace');
      assert.equal(sts.events.at(-1)!.reason, reason);
    }
    // None of them spent the token.
    assert.equal(
      await curl('/.well-known/est/simpleenroll', 'good', 'good.p7', [
        '-H',
        `Authorization: Bearer ${token}`,
      ]),
      200,
    );
  });

  test('renewal is refused without a client certificate and with a revoked one', async () => {
    await csr('r');
    assert.equal(await curl('/.well-known/est/simplereenroll', 'r', 'r.p7', []), 401);
    const minted = await pki.mint({ uris: [WEB] });
    writeFileSync(join(dir, 'minted.pem'), minted.chainPem);
    writeFileSync(join(dir, 'minted-key.pem'), minted.keyPem);
    assert.equal(
      await curl('/.well-known/est/simplereenroll', 'r', 'r.p7', [
        '--cert',
        'minted.pem',
        '--key',
        'minted-key.pem',
      ]),
      200,
    );
    const revoke = await call(admin(), `${sts.url}/v1/admin/revoke`, {
      method: 'POST',
      body: JSON.stringify({ serial: minted.serial }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(revoke.status, 200);
    assert.equal(
      await curl('/.well-known/est/simplereenroll', 'r', 'r.p7', [
        '--cert',
        'minted.pem',
        '--key',
        'minted-key.pem',
      ]),
      401,
    );
    assert.equal(sts.events.at(-1)!.reason, 'ERR_CA_CERT_REVOKED');
    // A workload no longer in the registry (a valid certificate for an ID the registry lacks).
    const gone = await pki.mint({ uris: ['spiffe://example.org/ns/gone/sa/old'] });
    writeFileSync(join(dir, 'gone.pem'), gone.chainPem);
    writeFileSync(join(dir, 'gone-key.pem'), gone.keyPem);
    assert.equal(
      await curl('/.well-known/est/simplereenroll', 'r', 'r.p7', [
        '--cert',
        'gone.pem',
        '--key',
        'gone-key.pem',
      ]),
      401,
    );
    assert.equal(sts.events.at(-1)!.reason, 'ERR_STS_CLIENT_NOT_REGISTERED');
  });

  test('join tokens are created by admins only, for registry entries only, within the ttl cap', async () => {
    const web = pki.leaf('web');
    const notAdmin = mtlsAgent({ cert: web.certPem, key: web.keyPem, ca: pki.rootPem });
    agents.push(notAdmin);
    const post = (agent: ReturnType<typeof admin>, body: unknown) =>
      call(agent, `${sts.url}/v1/admin/join-tokens`, {
        method: 'POST',
        body: JSON.stringify(body),
        headers: { 'content-type': 'application/json' },
      });
    assert.equal((await post(notAdmin, { workload: 'web' })).status, 403);
    assert.equal((await post(admin(), { workload: 'nobody' })).status, 400);
    assert.equal((await post(admin(), { workload: 'web', ttl: '48h' })).status, 400);
    assert.equal((await post(admin(), { workload: 'web', ttl: 'soon' })).status, 400);
    assert.equal((await post(admin(), { workload: 'web', extra: 1 })).status, 400);
    const created = sts.events.filter((e) => e.type === 'admin.join-token.create');
    assert.ok(created.some((e) => e.decision === 'allow' && e.target === WEB));
    assert.ok(created.some((e) => e.decision === 'deny' && e.status === 403));
  });
});
