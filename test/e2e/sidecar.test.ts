import assert from 'node:assert/strict';
import { request as httpsRequest } from 'node:https';
import { after, before, describe, it } from 'node:test';
import { writeFileSync } from 'node:fs';
import { CompactSign } from 'jose';
import type { AuditEvent } from '../../core/index.ts';
import { ADMIN, ISSUER, ORDERS, WEB, direct, startMesh, viaProxy } from './mesh.ts';
import type { Mesh } from './mesh.ts';
import { rawExchange } from '../helpers/raw-http.ts';

/** A token straight from the real STS, as `name` (client credentials over mTLS). */
function stsToken(mesh: Mesh, name: string, audience: string): Promise<string> {
  const leaf = mesh.pki.leaf(name);
  const body = new URLSearchParams({ grant_type: 'client_credentials', audience }).toString();
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      `${mesh.sts.url}/oauth2/token`,
      {
        method: 'POST',
        cert: leaf.certPem,
        key: leaf.keyPem,
        rejectUnauthorized: false,
        agent: false,
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'content-length': Buffer.byteLength(body),
        },
      },
      (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c));
        res.on('end', () =>
          res.statusCode === 200 ? resolve(JSON.parse(text).access_token) : reject(new Error(text)),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Signs claims with the STS's own current key, so that only the claim under test is wrong. */
async function signAsSts(
  mesh: Mesh,
  claims: Record<string, unknown>,
  header: Record<string, unknown> = {},
): Promise<string> {
  const signer = mesh.sts.keyring.signer();
  return new CompactSign(Buffer.from(JSON.stringify(claims)))
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: signer.kid, ...header })
    .sign(signer.key);
}

function claimsFor(mesh: Mesh, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: ISSUER,
    sub: WEB,
    aud: ORDERS,
    iat: now,
    nbf: now,
    exp: now + 60,
    jti: `t-${Math.random().toString(36).slice(2)}`,
    client_id: WEB,
    cnf: { 'x5t#S256': mesh.pki.leaf('web').thumbprint },
    ...overrides,
  };
}

function lastEvent(events: AuditEvent[]): AuditEvent {
  return events.at(-1)!;
}

describe('two sidecars, a real STS and two apps on loopback', () => {
  let mesh: Mesh;
  let web: { cert: string; key: string };
  let admin: { cert: string; key: string };
  before(async () => {
    mesh = await startMesh({ webTtl: '5s' });
    const w = mesh.pki.leaf('web');
    const a = mesh.pki.leaf('admin-console');
    web = { cert: w.certPem, key: w.keyPem };
    admin = { cert: a.certPem, key: a.keyPem };
  });
  after(async () => {
    await mesh?.close();
  });

  it("carries web's GET /orders/1 through both sidecars to orders' app, which sees web's verified identity", async () => {
    const r = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/orders/1', {
      'x-portcullis-peer': 'spiffe://example.org/ns/evil',
      'X-Forwarded-Client-Cert': 'By=spiffe://example.org/ns/evil',
    });
    assert.equal(r.status, 200, r.body);
    const seen = r.json();
    assert.equal(seen.app, 'orders');
    assert.equal(seen.url, '/orders/1');
    assert.equal(seen.headers['x-portcullis-peer'], WEB);
    assert.equal(seen.headers['x-forwarded-client-cert'], undefined);
    assert.equal(seen.headers.authorization, undefined);
    assert.match(seen.headers.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    const ev = lastEvent(mesh.ordersEvents);
    assert.equal(ev.decision, 'allow');
    assert.equal(ev.rule, 'storefront-reads-orders');
    assert.equal(ev.subject, WEB);
    assert.equal(ev.status, 200);
    assert.match(ev.policyHash!, /^sha256:/);
    assert.ok(ev.jti);
  });

  it('routes by name too (origin-form with Host: orders.shop.internal)', async () => {
    const r = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders.shop.internal/orders');
    assert.equal(r.status, 200, r.body);
  });

  it('a request with Expect: 100-continue reaches the app through both sidecars (200, not 502 ERR_SIDECAR_UPSTREAM_UNAVAILABLE)', async () => {
    const proxied = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/orders/1', {
      expect: '100-continue',
    });
    assert.equal(proxied.status, 200, proxied.body);
    const token = await stsToken(mesh, 'web', ORDERS);
    const straight = await direct(mesh.orders.inbound.port, web, 'GET', '/orders/1', [
      'Authorization',
      `Bearer ${token}`,
      'Expect',
      '100-continue',
    ]);
    assert.equal(straight.status, 200, straight.body);
    assert.equal(straight.json().headers.expect, undefined);
  });

  it('CONNECT is answered 400 on both sides, not dropped, and the inbound refusal is an audit event', async () => {
    const request = 'CONNECT orders:443 HTTP/1.1\r\nHost: orders:443\r\n\r\n';
    const out = await rawExchange({ port: mesh.web.outbound!.port }, request);
    assert.match(out, /^HTTP\/1\.1 400 /, out);
    assert.match(out, /ERR_SIDECAR_PATH_AMBIGUOUS/);
    const before = mesh.ordersEvents.length;
    const inb = await rawExchange({ port: mesh.orders.inbound.port, tls: web }, request);
    assert.match(inb, /^HTTP\/1\.1 400 /, inb);
    assert.match(inb, /ERR_SIDECAR_REQUEST_MALFORMED/);
    const ev = mesh.ordersEvents.slice(before).find((e) => e.status === 400);
    assert.ok(ev, 'the refused CONNECT is in the audit log');
    assert.equal(ev.decision, 'deny');
    assert.equal(ev.reason, 'ERR_SIDECAR_REQUEST_MALFORMED');
  });

  for (const [what, request, status, code] of [
    [
      'an Upgrade to h2c',
      'GET /orders/1 HTTP/1.1\r\nHost: orders\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n',
      400,
      'ERR_SIDECAR_UPGRADE_REFUSED',
    ],
    [
      'a WebSocket handshake without Sec-WebSocket-Key',
      'GET /orders/1 HTTP/1.1\r\nHost: orders\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n',
      400,
      'ERR_SIDECAR_UPGRADE_REFUSED',
    ],
    [
      'an Expect other than 100-continue',
      'GET /orders/1 HTTP/1.1\r\nHost: orders\r\nExpect: foo\r\n\r\n',
      417,
      'ERR_SIDECAR_REQUEST_MALFORMED',
    ],
  ] as const) {
    it(`${what} is answered ${status} at the inbound side, never forwarded, and is an audit event`, async () => {
      const before = mesh.ordersEvents.length;
      const seenBefore = mesh.ordersApp.seen.length;
      const answer = await rawExchange({ port: mesh.orders.inbound.port, tls: web }, request);
      assert.match(answer, new RegExp(`^HTTP/1\\.1 ${status} `), answer);
      assert.match(answer, new RegExp(code));
      assert.equal(mesh.ordersApp.seen.length, seenBefore);
      const ev = mesh.ordersEvents.slice(before).find((e) => e.status === status);
      assert.ok(
        ev,
        `the refused request is in the audit log: ${JSON.stringify(mesh.ordersEvents.slice(before))}`,
      );
      assert.equal(ev.decision, 'deny');
      assert.equal(ev.reason, code);
      // A request the listener parsed (the 417) is named; one its parser refused has no action.
      if (status === 417) assert.equal(ev.action, 'GET /orders/1');
    });
  }

  it("what the outbound listener's HTTP parser refuses gets the sidecar's JSON error, 400 or 431", async () => {
    const ask = (request: string) => rawExchange({ port: mesh.web.outbound!.port }, request);
    const bad = await ask('GET http://orders/orders/1 HTTP/1.1\r\nHost: orders\r\nX-A: a\u0000b\r\n\r\n');
    assert.match(bad, /^HTTP\/1\.1 400 /, bad);
    assert.match(bad, /"error":"ERR_SIDECAR_REQUEST_MALFORMED"/);
    const big = await ask(
      `GET http://orders/orders/1 HTTP/1.1\r\nHost: orders\r\nX-Big: ${'a'.repeat(70_000)}\r\n\r\n`,
    );
    assert.match(big, /^HTTP\/1\.1 431 /, big);
    assert.match(big, /request headers too large/);
  });

  it('an HTTP/1.1 request without Host is refused with 400 by the sidecar itself on both sides, inbound with an audit event', async () => {
    const t = await stsToken(mesh, 'web', ORDERS);
    const before = mesh.ordersEvents.length;
    const seenBefore = mesh.ordersApp.seen.length;
    const answer = await rawExchange(
      { port: mesh.orders.inbound.port, tls: web },
      `GET /orders/1 HTTP/1.1\r\nAuthorization: Bearer ${t}\r\nConnection: close\r\n\r\n`,
    );
    assert.match(answer, /^HTTP\/1\.1 400 /, answer);
    assert.match(answer, /"error":"ERR_SIDECAR_REQUEST_MALFORMED"/);
    assert.equal(mesh.ordersApp.seen.length, seenBefore);
    const ev = mesh.ordersEvents.slice(before).find((e) => e.status === 400);
    assert.equal(ev?.reason, 'ERR_SIDECAR_REQUEST_MALFORMED');
    const out = await rawExchange(
      { port: mesh.web.outbound!.port },
      'GET /orders/1 HTTP/1.1\r\nConnection: close\r\n\r\n',
    );
    assert.match(out, /^HTTP\/1\.1 400 /, out);
    assert.match(out, /"error":"ERR_SIDECAR_REQUEST_MALFORMED"/, out);
  });

  it('refuses POST /orders/1 with 403 and an audit event naming the rule', async () => {
    const before = mesh.ordersApp.seen.length;
    const r = await viaProxy(
      mesh.web.outbound!.port,
      'POST',
      'http://orders/orders/1',
      { 'content-type': 'text/plain' },
      'x',
    );
    assert.equal(r.status, 403);
    assert.equal(r.json().error, 'ERR_SIDECAR_POLICY_DENIED');
    assert.equal(mesh.ordersApp.seen.length, before);
    const ev = lastEvent(mesh.ordersEvents);
    assert.equal(ev.decision, 'deny');
    assert.equal(ev.enforced, true);
    assert.equal(ev.rule, 'default-deny');
    assert.equal(ev.reason, 'ERR_SIDECAR_POLICY_DENIED');
    assert.equal(ev.action, 'POST /orders/1');
  });

  it('refuses GET /admin/x by the explicit deny rule', async () => {
    const r = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/admin/x');
    assert.equal(r.status, 403);
    assert.equal(lastEvent(mesh.ordersEvents).rule, 'nobody-touches-admin');
  });

  it('answers an unknown route with 404 ERR_SIDECAR_ROUTE_UNKNOWN', async () => {
    const r = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://payments/x');
    assert.equal(r.status, 404);
    assert.equal(r.json().error, 'ERR_SIDECAR_ROUTE_UNKNOWN');
  });

  describe("refusals at orders' inbound, never forwarded", () => {
    const cases: [
      string,
      () => Promise<{ creds: 'web' | 'admin' | 'none'; method?: string; target?: string; headers: string[] }>,
      number,
      string,
    ][] = [];
    const bearer = (t: string) => ['Authorization', `Bearer ${t}`];
    const good = async () => stsToken(mesh, 'web', ORDERS);
    cases.push(['no token', async () => ({ creds: 'web', headers: [] }), 401, 'ERR_SIDECAR_TOKEN_MISSING']);
    cases.push([
      'two tokens',
      async () => {
        const t = await good();
        return { creds: 'web', headers: [...bearer(t), ...bearer(t)] };
      },
      400,
      'ERR_SIDECAR_TOKEN_MULTIPLE',
    ]);
    cases.push([
      'an expired token',
      async () => {
        const now = Math.floor(Date.now() / 1000);
        return {
          creds: 'web',
          headers: bearer(
            await signAsSts(mesh, claimsFor(mesh, { iat: now - 120, nbf: now - 120, exp: now - 60 })),
          ),
        };
      },
      401,
      'ERR_SIDECAR_TOKEN_EXPIRED',
    ]);
    cases.push([
      'a token without exp',
      async () => {
        const c = claimsFor(mesh);
        delete c.exp;
        return { creds: 'web', headers: bearer(await signAsSts(mesh, c)) };
      },
      401,
      'ERR_SIDECAR_TOKEN_CLAIMS_INVALID',
    ]);
    cases.push([
      'a token for another audience',
      async () => ({ creds: 'web', headers: bearer(await signAsSts(mesh, claimsFor(mesh, { aud: WEB }))) }),
      401,
      'ERR_SIDECAR_TOKEN_AUDIENCE_INVALID',
    ]);
    cases.push([
      'a token whose aud is an array holding orders and another service',
      async () => ({
        creds: 'web',
        headers: bearer(await signAsSts(mesh, claimsFor(mesh, { aud: [ORDERS, WEB] }))),
      }),
      401,
      'ERR_SIDECAR_TOKEN_AUDIENCE_INVALID',
    ]);
    cases.push([
      'a token signed by an unknown key',
      async () => {
        const { generateKeyPair } = await import('jose');
        const { privateKey } = await generateKeyPair('ES256');
        const t = await new CompactSign(Buffer.from(JSON.stringify(claimsFor(mesh))))
          .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'attacker-key' })
          .sign(privateKey);
        return { creds: 'web', headers: bearer(t) };
      },
      401,
      'ERR_SIDECAR_TOKEN_KEY_UNKNOWN',
    ]);
    cases.push([
      'alg: none',
      async () => {
        const h = Buffer.from(
          JSON.stringify({ alg: 'none', typ: 'at+jwt', kid: mesh.sts.keyring.signer().kid }),
        ).toString('base64url');
        const p = Buffer.from(JSON.stringify(claimsFor(mesh))).toString('base64url');
        return { creds: 'web', headers: bearer(`${h}.${p}.`) };
      },
      401,
      'ERR_SIDECAR_TOKEN_ALG_REFUSED',
    ]);
    cases.push([
      'HS256 signed with the STS public key',
      async () => {
        const signer = mesh.sts.keyring.signer();
        const pub = mesh.sts.keyring.publicKey(signer.kid)!.export({ format: 'pem', type: 'spki' });
        const t = await new CompactSign(Buffer.from(JSON.stringify(claimsFor(mesh))))
          .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: signer.kid })
          .sign(Buffer.from(pub));
        return { creds: 'web', headers: bearer(t) };
      },
      401,
      'ERR_SIDECAR_TOKEN_ALG_REFUSED',
    ]);
    cases.push([
      "a valid token for web on the admin console's mTLS connection",
      async () => ({ creds: 'admin', headers: bearer(await good()) }),
      401,
      'ERR_SIDECAR_TOKEN_NOT_BOUND',
    ]);
    for (const target of [
      '/orders/%2e%2e/admin',
      '/orders/..%2fadmin',
      '//admin',
      '/admin;x=1',
      '/orders\\..\\admin',
      '/admin%00',
      'http://orders/admin',
    ]) {
      cases.push([
        `GET ${target}`,
        async () => ({ creds: 'web', target, headers: bearer(await good()) }),
        400,
        'ERR_SIDECAR_PATH_AMBIGUOUS',
      ]);
    }
    cases.push([
      'two Host headers',
      async () => ({ creds: 'web', headers: ['Host', 'orders', 'Host', 'admin', ...bearer(await good())] }),
      400,
      'ERR_SIDECAR_REQUEST_MALFORMED',
    ]);
    cases.push([
      'no client certificate',
      async () => ({ creds: 'none', headers: bearer(await good()) }),
      403,
      'ERR_SIDECAR_PEER_UNVERIFIED',
    ]);

    for (const [name, make, status, code] of cases) {
      it(`refuses ${name} with ${status} ${code} and an audit event`, async () => {
        const c = await make();
        const forwarded = mesh.ordersApp.seen.length;
        const events = mesh.ordersEvents.length;
        const creds = c.creds === 'web' ? web : c.creds === 'admin' ? admin : undefined;
        const r = await direct(
          mesh.orders.inbound.port,
          creds,
          c.method ?? 'GET',
          c.target ?? '/orders/1',
          c.headers,
        );
        assert.equal(r.status, status, r.body);
        assert.equal(r.json().error, code);
        assert.equal(mesh.ordersApp.seen.length, forwarded, 'never forwarded');
        assert.equal(mesh.ordersEvents.length, events + 1);
        const ev = lastEvent(mesh.ordersEvents);
        assert.equal(ev.decision, 'deny');
        assert.equal(ev.reason, code);
        assert.equal(ev.status, status);
        if (status === 401)
          assert.match(String(r.headers['www-authenticate']), /^Bearer error="invalid_token"/);
      });
    }
  });

  it('strips spoofed identity headers on the inbound side: the app sees only the verified identity', async () => {
    const t = await stsToken(mesh, 'web', ORDERS);
    const r = await direct(mesh.orders.inbound.port, web, 'GET', '/orders/7', [
      'Authorization',
      `Bearer ${t}`,
      'X-Portcullis-Peer',
      ADMIN,
      'x_portcullis_peer',
      ADMIN,
      'X-Forwarded-Client-Cert',
      `By=${ADMIN}`,
      'X-HTTP-Method-Override',
      'DELETE',
      'Connection',
      'keep-alive, X-Drop-Me',
      'X-Drop-Me',
      '1',
    ]);
    assert.equal(r.status, 200, r.body);
    const seen = r.json();
    assert.equal(seen.headers['x-portcullis-peer'], WEB);
    assert.equal(seen.headers['x_portcullis_peer'], undefined);
    assert.equal(seen.headers['x-forwarded-client-cert'], undefined);
    assert.equal(seen.headers['x-http-method-override'], undefined);
    assert.equal(seen.headers['x-drop-me'], undefined);
    assert.equal(seen.method, 'GET');
  });

  it("continues a caller's well-formed trace on the inbound side and starts a new one for a malformed traceparent", async () => {
    const t = await stsToken(mesh, 'web', ORDERS);
    const traceId = '0af7651916cd43dd8448eb211c80319c';
    const seenTrace = async (traceparent: string) => {
      const r = await direct(mesh.orders.inbound.port, web, 'GET', '/orders/7', [
        'Authorization',
        `Bearer ${t}`,
        'traceparent',
        traceparent,
      ]);
      assert.equal(r.status, 200, r.body);
      const seen = r.json().headers.traceparent as string;
      assert.match(seen, /^00-[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-01$/);
      assert.equal(lastEvent(mesh.ordersEvents).traceId, seen.slice(3, 35));
      return seen.slice(3, 35);
    };
    assert.equal(await seenTrace(`00-${traceId}-b7ad6b7169203331-01`), traceId);
    // An all-zero parent span id is invalid (W3C trace context §3.2.2.4): not a trace to join.
    assert.notEqual(await seenTrace(`00-${traceId}-0000000000000000-01`), traceId);
    assert.notEqual(await seenTrace(`00-${traceId.toUpperCase()}-b7ad6b7169203331-01`), traceId);
  });

  it('lets a denied request through in mode: audit and records decision deny, enforced false (policy hot reload)', async () => {
    const previous = mesh.orders.policy.current().policy.hash;
    writeFileSync(
      mesh.ordersPolicyFile,
      'service: spiffe://example.org/ns/shop/sa/orders\nmode: audit\nrules: []\n',
    );
    assert.equal(mesh.orders.policy.reload(), true);
    assert.notEqual(mesh.orders.policy.current().policy.hash, previous);
    const r = await viaProxy(mesh.web.outbound!.port, 'POST', 'http://orders/orders/1', {}, 'x');
    assert.equal(r.status, 200, r.body);
    const ev = lastEvent(mesh.ordersEvents);
    assert.equal(ev.decision, 'deny');
    assert.equal(ev.enforced, false);
    assert.equal(ev.rule, 'default-deny');
    // An invalid file keeps the audit-mode policy in force and counts a failure.
    const failures = mesh.orders.policy.stats.failures;
    writeFileSync(
      mesh.ordersPolicyFile,
      'service: spiffe://example.org/ns/shop/sa/orders\nmode: sometimes\nrules: []\n',
    );
    assert.equal(mesh.orders.policy.reload(), false);
    assert.equal(mesh.orders.policy.stats.failures, failures + 1);
    assert.match(mesh.orders.policy.stats.lastError!, /mode: must be one of/);
    assert.equal(mesh.orders.policy.current().policy.mode, 'audit');
    const metrics = await (await fetch(mesh.orders.metricsUrl!)).text();
    assert.match(
      metrics,
      new RegExp(`^portcullis_sidecar_policy_reload_failures_total ${failures + 1}$`, 'm'),
    );
    assert.match(
      metrics,
      /^portcullis_sidecar_decisions_total\{decision="deny",reason="ERR_SIDECAR_POLICY_DENIED",rule="default-deny"\} \d+$/m,
    );
    assert.match(
      metrics,
      /^portcullis_sidecar_decisions_total\{decision="allow",reason="allowed",rule="storefront-reads-orders"\} \d+$/m,
    );
    assert.match(metrics, /^portcullis_sidecar_jwks_age_seconds \d/m);
    writeFileSync(
      mesh.ordersPolicyFile,
      'service: spiffe://example.org/ns/shop/sa/orders\nmode: enforce\nroles:\n  storefront: [spiffe://example.org/ns/shop/sa/web]\nrules:\n  - {id: storefront-reads-orders, role: storefront, methods: [GET], paths: [/orders, /orders/:id]}\n',
    );
    assert.equal(mesh.orders.policy.reload(), true);
  });

  it('keeps serving on cached keys and tokens with the STS stopped, then fails fast with 503 once the token expires', async () => {
    // Fresh token in web's cache, then the STS goes away.
    mesh.web.tokens!.invalidate();
    const first = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/orders/1');
    assert.equal(first.status, 200, first.body);
    await mesh.sts.close();
    const stoppedAt = Date.now();
    let lastOk = stoppedAt;
    let failure: Awaited<ReturnType<typeof viaProxy>> | undefined;
    while (Date.now() - stoppedAt < 10_000) {
      const r = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/orders/1');
      if (r.status === 200) lastOk = Date.now();
      else {
        failure = r;
        break;
      }
      await new Promise((res) => setTimeout(res, 250));
    }
    assert.ok(failure, 'calls eventually fail');
    assert.ok(
      lastOk - stoppedAt >= 1_500,
      `calls kept succeeding for a while after the STS stopped (${lastOk - stoppedAt} ms)`,
    );
    assert.equal(failure.status, 503);
    assert.equal(failure.json().error, 'ERR_SIDECAR_TOKEN_UNAVAILABLE');
    const t0 = Date.now();
    const again = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders/orders/1');
    assert.equal(again.status, 503);
    assert.ok(Date.now() - t0 < 1_500, 'fails fast, never hangs');
  });
});
