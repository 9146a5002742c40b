// Discovery, revocations, admin, health and metrics routes over real mTLS.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { makeTestPki } from '../helpers/pki.ts';
import { rawExchange, rawJsonBody } from '../helpers/raw-http.ts';
import type { TestPki } from '../helpers/pki.ts';
import { parseAuditEvent } from '../../core/index.ts';
import type { AuditEvent, AuditSink } from '../../core/index.ts';
import { ORDERS, WEB, call, decodeJwt, mtlsAgent, requestToken, startTestSts } from './helpers.ts';
import type { TestSts } from './helpers.ts';

describe('STS routes', () => {
  let pki: TestPki;
  let sts: TestSts;
  const agents: { close(): Promise<void> }[] = [];
  const as = (name: string | undefined) => {
    const leaf = name ? pki.leaf(name) : undefined;
    const a = mtlsAgent({ ...(leaf ? { cert: leaf.certPem, key: leaf.keyPem } : {}), ca: pki.rootPem });
    agents.push(a);
    return a;
  };
  before(async () => {
    pki = await makeTestPki();
    sts = await startTestSts(pki);
  });
  after(async () => {
    for (const event of sts.events) parseAuditEvent(event);
    for (const a of agents) await a.close();
    await sts.close();
    pki.cleanup();
  });

  test('discovery needs no client certificate and advertises certificate-bound tokens (RFC 8414)', async () => {
    const res = await call(as(undefined), `${sts.url}/.well-known/oauth-authorization-server`);
    assert.equal(res.status, 200);
    assert.equal(res.json.issuer, 'https://sts.portcullis.internal');
    assert.equal(res.json.tls_client_certificate_bound_access_tokens, true);
    assert.equal(res.json.token_endpoint, 'https://sts.portcullis.internal/oauth2/token');
    assert.deepEqual(res.json.token_endpoint_auth_methods_supported, ['tls_client_auth']);
    assert.ok(res.json.grant_types_supported.includes('urn:ietf:params:oauth:grant-type:token-exchange'));
    // Only registered metadata names (IANA "OAuth Authorization Server Metadata": RFC 8414 §2, RFC 8705).
    const registered = new Set([
      ...['issuer', 'authorization_endpoint', 'token_endpoint', 'jwks_uri', 'registration_endpoint'],
      ...[
        'scopes_supported',
        'response_types_supported',
        'response_modes_supported',
        'grant_types_supported',
      ],
      ...['token_endpoint_auth_methods_supported', 'token_endpoint_auth_signing_alg_values_supported'],
      ...[
        'service_documentation',
        'ui_locales_supported',
        'op_policy_uri',
        'op_tos_uri',
        'revocation_endpoint',
      ],
      ...['introspection_endpoint', 'code_challenge_methods_supported'],
      ...['tls_client_certificate_bound_access_tokens', 'mtls_endpoint_aliases'],
    ]);
    for (const name of Object.keys(res.json))
      assert.ok(registered.has(name), `${name} is not a registered name`);
  });

  test('the JWKS holds public keys only, carries max-age and an ETag, and answers If-None-Match with 304', async () => {
    const agent = as(undefined);
    const res = await call(agent, `${sts.url}/.well-known/jwks.json`);
    assert.equal(res.status, 200);
    assert.equal(res.headers['cache-control'], 'public, max-age=300');
    assert.equal(res.json.keys.length, 2, 'current and next');
    for (const k of res.json.keys) {
      assert.deepEqual(Object.keys(k).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
    }
    const again = await call(agent, `${sts.url}/.well-known/jwks.json`, {
      headers: { 'if-none-match': String(res.headers.etag) },
    });
    assert.equal(again.status, 304);
    const stale = await call(agent, `${sts.url}/.well-known/jwks.json`, {
      headers: { 'if-none-match': '"other"' },
    });
    assert.equal(stale.status, 200);
  });

  test('an admin revokes a jti and a serial; workloads read the list with ETag; the revoked serial is refused', async () => {
    const admin = as('admin-console');
    const web = as('web');
    const empty = await call(web, `${sts.url}/v1/revocations`);
    assert.equal(empty.status, 200);
    assert.deepEqual(empty.json, { jtis: [], serials: [] });
    const minted = await pki.mint({ uris: [WEB] });
    const expiresAt = new Date(Date.now() + 600_000).toISOString();
    const r1 = await call(admin, `${sts.url}/v1/admin/revoke`, {
      method: 'POST',
      body: JSON.stringify({ jti: 'abc-123', expiresAt }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(r1.status, 200, r1.text);
    const r2 = await call(admin, `${sts.url}/v1/admin/revoke`, {
      method: 'POST',
      body: JSON.stringify({ serial: minted.serial.toUpperCase() }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(r2.status, 200, r2.text);
    assert.equal(r2.json.revoked.serial, minted.serial);
    const list = await call(web, `${sts.url}/v1/revocations`);
    assert.deepEqual(list.json.jtis, [{ jti: 'abc-123', expiresAt }]);
    assert.equal(list.json.serials[0].serial, minted.serial);
    assert.notEqual(list.headers.etag, empty.headers.etag);
    const notModified = await call(web, `${sts.url}/v1/revocations`, {
      headers: { 'if-none-match': String(list.headers.etag) },
    });
    assert.equal(notModified.status, 304);
    const revokedAgent = mtlsAgent({ cert: minted.chainPem, key: minted.keyPem, ca: pki.rootPem });
    agents.push(revokedAgent);
    const refused = await requestToken(revokedAgent, sts.url, {
      grant_type: 'client_credentials',
      audience: ORDERS,
    });
    assert.equal(refused.status, 401);
    const adminEvents = sts.events.filter((e) => e.type === 'admin.revoke' && e.decision === 'allow');
    assert.equal(adminEvents.length, 2);
  });

  test('a certificate revoked after use is refused on its open connection and on new ones', async () => {
    const minted = await pki.mint({ uris: [WEB] });
    const first = mtlsAgent({ cert: minted.chainPem, key: minted.keyPem, ca: pki.rootPem });
    const second = mtlsAgent({ cert: minted.chainPem, key: minted.keyPem, ca: pki.rootPem });
    agents.push(first, second);
    const form = { grant_type: 'client_credentials', audience: ORDERS };
    assert.equal((await requestToken(first, sts.url, form)).status, 200);
    assert.equal(
      (await requestToken(second, sts.url, form)).status,
      200,
      'verified once, reused across connections',
    );
    const revoke = await call(as('admin-console'), `${sts.url}/v1/admin/revoke`, {
      method: 'POST',
      body: JSON.stringify({ serial: minted.serial }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(revoke.status, 200);
    for (const agent of [
      first,
      second,
      mtlsAgent({ cert: minted.chainPem, key: minted.keyPem, ca: pki.rootPem }),
    ]) {
      const res = await requestToken(agent, sts.url, form);
      assert.equal(res.status, 401);
      assert.equal(sts.events.at(-1)!.reason, 'ERR_CA_CERT_REVOKED');
      if (!agents.includes(agent)) await agent.close();
    }
  });

  test('pipelined token requests on one connection are all answered, in order, with distinct tokens', async () => {
    const leaf = pki.leaf('web');
    const form = (i: number) =>
      `grant_type=client_credentials&audience=${encodeURIComponent(ORDERS)}&expires_in=${60 + i}`;
    const requests = Array.from({ length: 12 }, (_, i) => {
      const body = form(i);
      const close = i === 11 ? 'connection: close\r\n' : '';
      return `POST /oauth2/token HTTP/1.1\r\nhost: localhost\r\n${close}content-type: application/x-www-form-urlencoded\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
    });
    const answer = await rawExchange(
      {
        port: Number(new URL(sts.url).port),
        tls: { cert: leaf.certPem, key: leaf.keyPem, ca: pki.rootPem, servername: 'localhost' },
      },
      requests.join(''),
    );
    const bodies = [...answer.matchAll(/HTTP\/1\.1 (\d+) [^]*?\r\n\r\n(\{[^]*?\})(?=HTTP\/1\.1 |$)/g)];
    assert.equal(bodies.length, 12, answer);
    const jtis = new Set<string>();
    bodies.forEach(([, status, body], i) => {
      assert.equal(status, '200');
      const parsed = JSON.parse(body!) as { access_token: string; expires_in: number };
      assert.equal(parsed.expires_in, 60 + i, 'answers come back in request order');
      jtis.add(decodeJwt(parsed.access_token).payload.jti);
    });
    assert.equal(jtis.size, 12);
  });

  test('TLS 1.2 clients are refused at the handshake (TLS 1.3 minimum by default)', async () => {
    const web = pki.leaf('web');
    const old = mtlsAgent({ cert: web.certPem, key: web.keyPem, ca: pki.rootPem }, { maxVersion: 'TLSv1.2' });
    agents.push(old);
    await assert.rejects(call(old, `${sts.url}/.well-known/jwks.json`), /version|protocol|alert/i);
  });

  test('a refused peer is answered before its body is read: an oversized body from no certificate gets 401, not 413', async () => {
    const res = await call(as(undefined), `${sts.url}/oauth2/token`, {
      method: 'POST',
      body: `grant_type=client_credentials&pad=${'x'.repeat(100_000)}`,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    assert.equal(res.status, 401);
    assert.equal(res.json.error, 'invalid_client');
  });

  const badRevokes = [
    { name: 'prototype-poisoning JSON', body: '{"jti":"a","__proto__":{"polluted":true}}' },
    { name: 'constructor-poisoning JSON', body: '{"jti":"a","constructor":{"prototype":{"polluted":true}}}' },
    { name: 'both jti and serial', body: '{"jti":"a","serial":"0a"}' },
    { name: 'neither jti nor serial', body: '{}' },
    { name: 'an unknown key', body: '{"jti":"a","jtii":"b"}' },
    { name: 'an expiry in the past', body: '{"jti":"a","expiresAt":"2000-01-01T00:00:00Z"}' },
    { name: 'malformed JSON', body: '{"jti":' },
  ];
  for (const c of badRevokes) {
    test(`POST /v1/admin/revoke refuses ${c.name} with 400 invalid_request`, async () => {
      const before = sts.events.length;
      const res = await call(as('admin-console'), `${sts.url}/v1/admin/revoke`, {
        method: 'POST',
        body: c.body,
        headers: { 'content-type': 'application/json' },
      });
      assert.equal(res.status, 400, res.text);
      assert.equal(res.json.error, 'invalid_request');
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
      assert.equal(
        sts.events.slice(before).find((e) => e.decision === 'deny')?.reason,
        'ERR_STS_REQUEST_INVALID',
      );
    });
  }

  for (const [what, request, status] of [
    [
      'a chunked body with a bad chunk size',
      'POST /oauth2/token HTTP/1.1\r\nHost: sts\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n',
      400,
    ],
    [
      'Transfer-Encoding with Content-Length',
      'POST /oauth2/token HTTP/1.1\r\nHost: sts\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n',
      400,
    ],
    ['oversized headers', `GET /healthz HTTP/1.1\r\nHost: sts\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
  ] as const) {
    test(`what the HTTP parser refuses (${what}) gets ${status} with an RFC 6749 body and an audit event`, async () => {
      const before = sts.events.length;
      const leaf = pki.leaf('web');
      const answer = await rawExchange(
        {
          port: Number(new URL(sts.url).port),
          tls: { cert: leaf.certPem, key: leaf.keyPem, ca: pki.rootPem, servername: 'localhost' },
        },
        request,
      );
      assert.match(answer, new RegExp(`^HTTP/1\\.1 ${status} `), answer);
      const body = rawJsonBody(answer) as Record<string, string>;
      assert.equal(body.error, 'invalid_request');
      assert.equal(typeof body.error_description, 'string');
      const ev = sts.events.slice(before).find((e) => e.status === status);
      assert.equal(ev?.decision, 'deny');
      assert.equal(ev?.reason, 'ERR_STS_REQUEST_INVALID');
    });
  }

  test('an admin lists keys and rotates on demand; rotation waits for the publication lead', async () => {
    const admin = as('admin-console');
    const listed = await call(admin, `${sts.url}/v1/admin/keys`);
    assert.equal(listed.status, 200);
    assert.equal(listed.headers['cache-control'], 'no-store');
    assert.deepEqual(
      listed.json.keys.map((k: { state: string }) => k.state),
      ['current', 'next'],
    );
    assert.equal(JSON.stringify(listed.json).includes('"d"'), false);
    const rotated = await call(admin, `${sts.url}/v1/admin/keys/rotate`, {
      method: 'POST',
      body: '{}',
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(rotated.status, 200, rotated.text);
    // The next key was published moments ago: it may only sign after one cache period plus skew.
    assert.equal(rotated.json.rotated, false);
    assert.ok(Date.parse(rotated.json.activatesAt) >= Date.now() + 300_000);
    assert.ok(sts.events.some((e) => e.type === 'admin.keys.rotate' && e.decision === 'allow'));
  });

  test('health is open, readiness reflects the keyring and audit sink, and metrics need mTLS', async () => {
    assert.equal((await call(as(undefined), `${sts.url}/healthz`)).status, 200);
    assert.equal((await call(as(undefined), `${sts.url}/readyz`)).status, 200);
    assert.equal((await call(as(undefined), `${sts.url}/metrics`)).status, 401);
    const m = await call(as('web'), `${sts.url}/metrics`);
    assert.equal(m.status, 200);
    assert.match(m.text, /portcullis_sts_tokens_issued_total/);
    assert.match(m.text, /portcullis_sts_requests_refused_total\{reason="ERR_CA_PEER_NO_CERT"\} [1-9]/);
    assert.match(m.text, /portcullis_sts_key_age_seconds\{state="current"\}/);
  });

  test('unknown routes answer 404 invalid_request, after the peer check', async () => {
    assert.equal((await call(as(undefined), `${sts.url}/nope`)).status, 401);
    const res = await call(as('web'), `${sts.url}/nope`);
    assert.equal(res.status, 404);
    assert.equal(res.json.error, 'invalid_request');
  });
});

test('a caller over its rate gets 429 with Retry-After, keyed on its SPIFFE ID', async () => {
  const pki = await makeTestPki();
  const sts = await startTestSts(pki, { rateLimit: { perSecond: 0.5, burst: 2 } });
  const web = pki.leaf('web');
  const orders = pki.leaf('orders');
  const a = mtlsAgent({ cert: web.certPem, key: web.keyPem, ca: pki.rootPem });
  const b = mtlsAgent({ cert: orders.certPem, key: orders.keyPem, ca: pki.rootPem });
  try {
    const form = { grant_type: 'client_credentials', audience: ORDERS };
    assert.equal((await requestToken(a, sts.url, form)).status, 200);
    assert.equal((await requestToken(a, sts.url, form)).status, 200);
    const limited = await requestToken(a, sts.url, form);
    assert.equal(limited.status, 429);
    assert.equal(limited.json.error, 'temporarily_unavailable');
    assert.equal(limited.headers['retry-after'], '2');
    assert.equal(sts.events.at(-1)!.reason, 'ERR_STS_RATE_LIMITED');
    // Another identity has its own bucket.
    assert.equal((await call(b, `${sts.url}/v1/revocations`)).status, 200);
  } finally {
    await a.close();
    await b.close();
    await sts.close();
    pki.cleanup();
  }
});

test('when the audit sink stops accepting, requests are refused with 503 and readiness fails', async () => {
  const pki = await makeTestPki();
  const events: AuditEvent[] = [];
  let accepting = true;
  const audit: AuditSink = {
    emit: (e) => void events.push(e),
    record: async (e) => void events.push(e),
    accepting: () => accepting,
    flush: async () => {},
    close: async () => {},
  };
  const sts = await startTestSts(pki, {}, { audit });
  const web = pki.leaf('web');
  const agent = mtlsAgent({ cert: web.certPem, key: web.keyPem, ca: pki.rootPem });
  try {
    accepting = false;
    const res = await requestToken(agent, sts.url, { grant_type: 'client_credentials', audience: ORDERS });
    assert.equal(res.status, 503);
    assert.equal(res.json.error, 'temporarily_unavailable');
    assert.equal((await call(agent, `${sts.url}/readyz`)).status, 503);
  } finally {
    await agent.close();
    await sts.close();
    pki.cleanup();
  }
});
