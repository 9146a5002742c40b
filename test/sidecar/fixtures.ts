// Fixtures of the sidecar unit tests: a small HTTPS server standing where the STS would be
// (serving a JWKS and a revocation list the test controls), and tokens signed in the test.
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { newEnforcer, newModelFromString } from 'casbin';
import { CompactSign, exportJWK, generateKeyPair } from 'jose';
import { createPeerVerifier } from '../../ca/index.ts';
import { createLogger } from '../../core/index.ts';
import { CASBIN_MODEL, translatePolicy } from '../../sidecar/policy/translate.ts';
import type { Policy } from '../../sidecar/policy/parse.ts';
import { createStsClient } from '../../sidecar/sts-client.ts';
import type { StsClient } from '../../sidecar/sts-client.ts';
import type { TestPki } from '../helpers/pki.ts';

export const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';
export const WEB = 'spiffe://example.org/ns/shop/sa/web';
export const STS_ID = 'spiffe://example.org/ns/portcullis/sa/sts';
export const ISSUER = 'https://sts.test';
export const quiet = () => createLogger({ name: 'sidecar-test', level: 'silent' });

/** A Casbin enforcer loaded with the policy's translated rows: the reference the compiled policy is held to. */
export async function casbinFor(policy: Policy) {
  const e = await newEnforcer(newModelFromString(CASBIN_MODEL));
  const rows = translatePolicy(policy);
  if (rows.policies.length) await e.addPolicies(rows.policies);
  if (rows.groupings.length) await e.addGroupingPolicies(rows.groupings);
  return e;
}

/** A signing key of the test "STS": its private key and public JWK. */
export interface TestKey {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly jwk: Record<string, unknown>;
}

/** Mints an ES256 key with a kid. */
export async function makeKey(kid: string): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' } };
}

/** Signs claims as a JWS with `key` (header overridable). */
export function sign(
  key: TestKey,
  claims: Record<string, unknown>,
  header: Record<string, unknown> = {},
): Promise<string> {
  return new CompactSign(Buffer.from(JSON.stringify(claims)))
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: key.kid, ...header })
    .sign(key.privateKey);
}

/** Claims that pass every check for (web → orders) at `nowMs`. */
export function goodClaims(nowMs: number, thumbprint: string, extra: Record<string, unknown> = {}) {
  const now = Math.floor(nowMs / 1000);
  return {
    iss: ISSUER,
    sub: WEB,
    aud: ORDERS,
    iat: now,
    nbf: now,
    exp: now + 300,
    jti: 'jti-1',
    client_id: WEB,
    cnf: { 'x5t#S256': thumbprint },
    ...extra,
  };
}

/** What the fake STS serves; tests change it between calls. */
export interface FakeStsState {
  jwks: { status: number; body: string };
  revocations: { status: number; body: string; etag: string };
  jwksHits: number;
  revocationHits: number;
  lastIfNoneMatch: string | undefined;
}

/** An HTTPS server with the STS's certificate that serves `state`; plus a real StsClient to it. */
export async function startFakeSts(
  pki: TestPki,
): Promise<{ server: Server; url: string; state: FakeStsState; client: StsClient; close(): Promise<void> }> {
  const sts = pki.leaf('sts');
  const state: FakeStsState = {
    jwks: { status: 200, body: JSON.stringify({ keys: [] }) },
    revocations: { status: 200, body: JSON.stringify({ jtis: [], serials: [] }), etag: '"v1"' },
    jwksHits: 0,
    revocationHits: 0,
    lastIfNoneMatch: undefined,
  };
  const server = createServer(
    { cert: sts.certPem, key: sts.keyPem, requestCert: true, rejectUnauthorized: false },
    (req, res) => {
      if (req.url === '/.well-known/jwks.json') {
        state.jwksHits++;
        res.writeHead(state.jwks.status, { 'content-type': 'application/json' }).end(state.jwks.body);
      } else if (req.url === '/v1/revocations') {
        state.revocationHits++;
        state.lastIfNoneMatch = req.headers['if-none-match'];
        if (req.headers['if-none-match'] === state.revocations.etag) return void res.writeHead(304).end();
        res
          .writeHead(state.revocations.status, {
            'content-type': 'application/json',
            etag: state.revocations.etag,
          })
          .end(state.revocations.body);
      } else res.writeHead(404).end();
    },
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const web = pki.leaf('web');
  const verifier = createPeerVerifier({
    trustAnchorsPem: pki.rootPem,
    intermediatesPem: pki.intermediatePem,
    trustDomain: 'example.org',
    purpose: 'serverAuth',
  });
  const material = { cert: web.certPem, key: web.keyPem, ca: pki.rootPem };
  const client = createStsClient({
    url,
    spiffeId: STS_ID,
    material: () => material,
    verifier: () => verifier,
    timeoutMs: 1000,
    clock: Date.now,
  });
  return {
    server,
    url,
    state,
    client,
    async close() {
      await client.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
