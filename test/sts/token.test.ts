// The token endpoint end to end: real PKI, real STS on port 0, real mTLS clients, openssl and curl as outside judges.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createPublicKey } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { certificateThumbprint, parseAuditEvent } from '../../core/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { ORDERS, WEB, call, decodeJwt, mtlsAgent, requestToken, startTestSts } from './helpers.ts';
import type { TestSts } from './helpers.ts';

const execFileAsync = promisify(execFile);
const ADMIN = 'spiffe://example.org/ns/ops/sa/admin-console';

/** JOSE ES256 signatures are raw r||s (RFC 7518 §3.4); openssl wants an ASN.1 DER ECDSA-Sig-Value. */
function rawToDer(raw: Buffer): Buffer {
  const int = (b: Buffer) => {
    let i = 0;
    while (i < b.length - 1 && b[i] === 0) i++;
    let v = b.subarray(i);
    if (v[0]! & 0x80) v = Buffer.concat([Buffer.from([0]), v]);
    return Buffer.concat([Buffer.from([0x02, v.length]), v]);
  };
  const body = Buffer.concat([int(raw.subarray(0, 32)), int(raw.subarray(32))]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}

describe('POST /oauth2/token', () => {
  let pki: TestPki;
  let sts: TestSts;
  let work: string;

  before(async () => {
    pki = await makeTestPki();
    sts = await startTestSts(pki);
    work = mkdtempSync(join(tmpdir(), 'sts-token-test-'));
  });
  after(async () => {
    // Every event the STS emitted must pass the core/ schema the audit collector enforces.
    assert.ok(sts.events.length > 20);
    for (const event of sts.events) parseAuditEvent(event);
    await sts.close();
    pki.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  test('issues a token that the openssl binary verifies against the key published in the JWKS', async () => {
    const web = pki.leaf('web');
    const agent = mtlsAgent({ cert: web.certPem, key: web.keyPem, ca: pki.rootPem });
    try {
      const res = await requestToken(agent, sts.url, { grant_type: 'client_credentials', audience: ORDERS });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.headers['cache-control'], 'no-store');
      assert.equal(res.json.token_type, 'Bearer');
      assert.equal(res.json.issued_token_type, 'urn:ietf:params:oauth:token-type:access_token');
      const token: string = res.json.access_token;
      const { header } = decodeJwt(token);
      assert.deepEqual(Object.keys(header).sort(), ['alg', 'kid', 'typ']);
      assert.equal(header.typ, 'at+jwt');
      assert.equal(header.alg, 'ES256');

      const jwks = await call(agent, `${sts.url}/.well-known/jwks.json`);
      const jwk = jwks.json.keys.find((k: { kid: string }) => k.kid === header.kid);
      assert.ok(jwk, 'the signing kid is published');
      assert.equal(jwk.d, undefined, 'no private part is published');
      const pem = createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
      const [h, p, s] = token.split('.');
      writeFileSync(join(work, 'pub.pem'), pem);
      writeFileSync(join(work, 'data'), `${h}.${p}`);
      writeFileSync(join(work, 'sig.der'), rawToDer(Buffer.from(s!, 'base64url')));
      const { stdout: out } = await execFileAsync('openssl', [
        'dgst',
        '-sha256',
        '-verify',
        join(work, 'pub.pem'),
        '-signature',
        join(work, 'sig.der'),
        join(work, 'data'),
      ]);
      assert.match(out, /Verified OK/);

      // The same check must fail on a token whose payload was altered.
      writeFileSync(join(work, 'data'), `${h}.${p}x`);
      await assert.rejects(
        execFileAsync('openssl', [
          'dgst',
          '-sha256',
          '-verify',
          join(work, 'pub.pem'),
          '-signature',
          join(work, 'sig.der'),
          join(work, 'data'),
        ]),
        (err: { stdout?: string }) => /Verification failure/.test(err.stdout ?? ''),
      );
    } finally {
      await agent.close();
    }
  });

  test('binds the token to the certificate, caps its lifetime at the entry TTL and gives each token a fresh jti', async () => {
    const web = pki.leaf('web');
    const agent = mtlsAgent({ cert: web.certPem, key: web.keyPem, ca: pki.rootPem });
    try {
      const a = await requestToken(agent, sts.url, { grant_type: 'client_credentials', audience: ORDERS });
      const b = await requestToken(agent, sts.url, { grant_type: 'client_credentials', audience: ORDERS });
      const pa = decodeJwt(a.json.access_token).payload;
      const pb = decodeJwt(b.json.access_token).payload;
      assert.equal(pa.cnf['x5t#S256'], certificateThumbprint(web.leafDer));
      assert.equal(pa.cnf['x5t#S256'], web.thumbprint);
      assert.ok(pa.exp - pa.iat <= 300, 'exp - iat is within the 5m tokenTtl of web');
      assert.equal(pa.exp - pa.iat, a.json.expires_in);
      assert.equal(pa.nbf, pa.iat);
      assert.notEqual(pa.jti, pb.jti);
      assert.match(pa.jti, /^[0-9a-f-]{36}$/);
      assert.deepEqual(
        { iss: pa.iss, sub: pa.sub, aud: pa.aud, client_id: pa.client_id },
        { iss: 'https://sts.portcullis.internal', sub: WEB, aud: ORDERS, client_id: WEB },
      );
      const issued = sts.events.filter((e) => e.type === 'token.issued' && e.jti === pa.jti);
      assert.equal(issued.length, 1);
      assert.equal(issued[0]!.subject, WEB);
      assert.equal(issued[0]!.target, ORDERS);
    } finally {
      await agent.close();
    }
  });

  test('answers the curl command of the acceptance criteria', async () => {
    const web = pki.leaf('web');
    // The generated certificate names localhost, not 127.0.0.1, so curl is pointed at 127.0.0.1 with --resolve.
    // curl runs asynchronously: the STS under test lives in this process's event loop.
    const res = await execFileAsync('curl', [
      '-sS',
      '--max-time',
      '10',
      '--resolve',
      `localhost:${sts.port}:127.0.0.1`,
      '--cert',
      web.certFile,
      '--key',
      web.keyFile,
      '--cacert',
      pki.rootFile,
      '-d',
      'grant_type=client_credentials',
      '-d',
      `audience=${ORDERS}`,
      `https://localhost:${sts.port}/oauth2/token`,
    ]);
    const body = JSON.parse(res.stdout);
    assert.equal(decodeJwt(body.access_token).payload.sub, WEB);
  });

  test('a requested expires_in within the entry TTL is honoured', async () => {
    const web = pki.leaf('web');
    const agent = mtlsAgent({ cert: web.certPem, key: web.keyPem, ca: pki.rootPem });
    try {
      const res = await requestToken(agent, sts.url, {
        grant_type: 'client_credentials',
        audience: ORDERS,
        expires_in: '60',
      });
      assert.equal(res.status, 200);
      const p = decodeJwt(res.json.access_token).payload;
      assert.equal(p.exp - p.iat, 60);
    } finally {
      await agent.close();
    }
  });

  test('the token-exchange grant without subject_token issues the same kind of token', async () => {
    const web = pki.leaf('web');
    const agent = mtlsAgent({ cert: web.certPem, key: web.keyPem, ca: pki.rootPem });
    try {
      const res = await requestToken(agent, sts.url, {
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        audience: ORDERS,
      });
      assert.equal(res.status, 200, res.text);
      assert.equal(decodeJwt(res.json.access_token).payload.sub, WEB);
    } finally {
      await agent.close();
    }
  });

  test('token exchange with a subject token issued to the caller yields a delegated token with act', async () => {
    const web = pki.leaf('web');
    const orders = pki.leaf('orders');
    const webAgent = mtlsAgent({ cert: web.certPem, key: web.keyPem, ca: pki.rootPem });
    // orders may not request tokens for anyone in the example registry, so a forged subject token is refused
    // and a real one is refused for the audience; the delegation path is checked on the subject token itself.
    const ordersAgent = mtlsAgent({ cert: orders.certPem, key: orders.keyPem, ca: pki.rootPem });
    try {
      const subject = (
        await requestToken(webAgent, sts.url, { grant_type: 'client_credentials', audience: ORDERS })
      ).json.access_token as string;
      const forged = `${subject.split('.').slice(0, 2).join('.')}.${'A'.repeat(86)}`;
      const bad = await requestToken(ordersAgent, sts.url, {
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        audience: WEB,
        subject_token: forged,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      });
      assert.equal(bad.status, 400);
      assert.equal(bad.json.error, 'invalid_grant');
      assert.equal(sts.events.at(-1)!.reason, 'ERR_STS_SUBJECT_TOKEN_INVALID');
      const notAllowed = await requestToken(ordersAgent, sts.url, {
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        audience: WEB,
        subject_token: subject,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      });
      assert.equal(notAllowed.status, 400);
      assert.equal(notAllowed.json.error, 'invalid_target');
    } finally {
      await webAgent.close();
      await ordersAgent.close();
    }
  });

  describe('refusals: status, RFC 6749 error and an audit event for each', () => {
    type Case = {
      name: string;
      creds: () => Promise<{ cert?: string; key?: string }>;
      path?: string;
      method?: string;
      form?: Record<string, string | string[]>;
      body?: string;
      contentType?: string;
      status: number;
      error: string;
      reason: string;
      type: string;
    };
    const web = () => Promise.resolve({ cert: pki.leaf('web').certPem, key: pki.leaf('web').keyPem });
    const cc = { grant_type: 'client_credentials', audience: ORDERS };
    const cases: Case[] = [
      {
        name: 'no client certificate',
        creds: async () => ({}),
        form: cc,
        status: 401,
        error: 'invalid_client',
        reason: 'ERR_CA_PEER_NO_CERT',
        type: 'token.denied',
      },
      {
        name: 'a certificate from another CA',
        creds: async () => {
          const m = await pki.mint({ signer: 'foreign' });
          return { cert: m.chainPem, key: m.keyPem };
        },
        form: cc,
        status: 401,
        error: 'invalid_client',
        reason: 'ERR_CA_CHAIN_UNTRUSTED',
        type: 'token.denied',
      },
      {
        name: 'an expired certificate',
        creds: async () => {
          const m = await pki.mint({
            notBefore: new Date(Date.now() - 7_200_000),
            notAfter: new Date(Date.now() - 3_600_000),
          });
          return { cert: m.chainPem, key: m.keyPem };
        },
        form: cc,
        status: 401,
        error: 'invalid_client',
        reason: 'ERR_CA_CERT_EXPIRED',
        type: 'token.denied',
      },
      {
        name: 'a revoked serial',
        creds: async () => {
          const m = await pki.mint({ uris: [WEB] });
          sts.denyList.revokeSerial(m.serial, Date.now() + 3_600_000);
          return { cert: m.chainPem, key: m.keyPem };
        },
        form: cc,
        status: 401,
        error: 'invalid_client',
        reason: 'ERR_CA_CERT_REVOKED',
        type: 'token.denied',
      },
      {
        name: 'an unregistered SPIFFE ID',
        creds: async () => {
          const m = await pki.mint({ uris: ['spiffe://example.org/ns/shop/sa/ghost'] });
          return { cert: m.chainPem, key: m.keyPem };
        },
        form: cc,
        status: 401,
        error: 'invalid_client',
        reason: 'ERR_STS_CLIENT_NOT_REGISTERED',
        type: 'token.denied',
      },
      {
        name: 'an audience not allowed',
        creds: web,
        form: { grant_type: 'client_credentials', audience: ADMIN },
        status: 400,
        error: 'invalid_target',
        reason: 'ERR_STS_AUDIENCE_NOT_ALLOWED',
        type: 'token.denied',
      },
      {
        name: 'two audiences',
        creds: web,
        form: { grant_type: 'client_credentials', audience: [ORDERS, ORDERS] },
        status: 400,
        error: 'invalid_target',
        reason: 'ERR_STS_AUDIENCE_MULTIPLE',
        type: 'token.denied',
      },
      {
        name: 'a missing audience',
        creds: web,
        form: { grant_type: 'client_credentials' },
        status: 400,
        error: 'invalid_request',
        reason: 'ERR_STS_AUDIENCE_MISSING',
        type: 'token.denied',
      },
      {
        name: 'an unknown grant_type',
        creds: web,
        form: { grant_type: 'password', audience: ORDERS },
        status: 400,
        error: 'unsupported_grant_type',
        reason: 'ERR_STS_GRANT_UNSUPPORTED',
        type: 'token.denied',
      },
      {
        name: 'a requested TTL above the entry TTL',
        creds: web,
        form: { ...cc, expires_in: '301' },
        status: 400,
        error: 'invalid_request',
        reason: 'ERR_STS_TTL_TOO_LONG',
        type: 'token.denied',
      },
      {
        name: 'a requested TTL above the global cap',
        creds: web,
        form: { ...cc, expires_in: '7200' },
        status: 400,
        error: 'invalid_request',
        reason: 'ERR_STS_TTL_TOO_LONG',
        type: 'token.denied',
      },
      {
        name: 'a client_id naming someone else',
        creds: web,
        form: { ...cc, client_id: ORDERS },
        status: 401,
        error: 'invalid_client',
        reason: 'ERR_STS_CLIENT_NOT_REGISTERED',
        type: 'token.denied',
      },
      {
        name: 'an oversized body',
        creds: web,
        body: `grant_type=client_credentials&audience=${encodeURIComponent(ORDERS)}&pad=${'x'.repeat(9000)}`,
        status: 413,
        error: 'invalid_request',
        reason: 'ERR_STS_BODY_TOO_LARGE',
        type: 'token.denied',
      },
      {
        name: 'a JSON body on the token endpoint',
        creds: web,
        body: JSON.stringify(cc),
        status: 415,
        error: 'invalid_request',
        reason: 'ERR_STS_MEDIA_TYPE_UNSUPPORTED',
        type: 'token.denied',
      },
      {
        name: 'a subject_token whose header is JSON null',
        creds: web,
        form: {
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          audience: ORDERS,
          subject_token: `${Buffer.from('null').toString('base64url')}.${Buffer.from('{}').toString('base64url')}.AA`,
          subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        },
        status: 400,
        error: 'invalid_grant',
        reason: 'ERR_STS_SUBJECT_TOKEN_INVALID',
        type: 'token.denied',
      },
      {
        name: 'a text/plain body on the token endpoint',
        creds: web,
        body: new URLSearchParams(cc).toString(),
        contentType: 'text/plain',
        status: 415,
        error: 'invalid_request',
        reason: 'ERR_STS_MEDIA_TYPE_UNSUPPORTED',
        type: 'token.denied',
      },
      {
        name: 'a non-admin calling an admin route',
        creds: web,
        path: '/v1/admin/keys',
        method: 'GET',
        status: 403,
        error: 'unauthorized_client',
        reason: 'ERR_STS_FORBIDDEN',
        type: 'admin.keys.list',
      },
      {
        name: 'a non-admin rotating keys',
        creds: web,
        path: '/v1/admin/keys/rotate',
        method: 'POST',
        body: '{}',
        status: 403,
        error: 'unauthorized_client',
        reason: 'ERR_STS_FORBIDDEN',
        type: 'admin.keys.rotate',
      },
      {
        name: 'no client certificate on the revocation list',
        creds: async () => ({}),
        path: '/v1/revocations',
        method: 'GET',
        status: 401,
        error: 'invalid_client',
        reason: 'ERR_CA_PEER_NO_CERT',
        type: 'authz.decision',
      },
    ];
    for (const c of cases) {
      test(`refuses ${c.name} with ${c.status} ${c.error}`, async () => {
        const agent = mtlsAgent({ ...(await c.creds()), ca: pki.rootPem });
        const before = sts.events.length;
        try {
          const isJson = c.body?.startsWith('{');
          const res = c.form
            ? await requestToken(agent, sts.url, c.form)
            : await call(agent, `${sts.url}${c.path ?? '/oauth2/token'}`, {
                method: c.method ?? 'POST',
                ...(c.body !== undefined ? { body: c.body } : {}),
                headers:
                  c.body !== undefined
                    ? {
                        'content-type':
                          c.contentType ??
                          (isJson ? 'application/json' : 'application/x-www-form-urlencoded'),
                      }
                    : {},
              });
          assert.equal(res.status, c.status, res.text);
          assert.equal(res.json.error, c.error);
          assert.equal(typeof res.json.error_description, 'string');
          assert.doesNotMatch(res.text, /at .*\.ts:\d+/, 'no stack trace');
          const event = sts.events.slice(before).find((e) => e.decision === 'deny');
          assert.ok(event, 'an audit event was emitted');
          assert.equal(event.reason, c.reason);
          assert.equal(event.type, c.type);
          assert.equal(event.status, c.status);
        } finally {
          await agent.close();
        }
      });
    }
  });
});
