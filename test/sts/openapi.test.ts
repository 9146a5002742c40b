// The STS's OpenAPI 3.1 document (GET /openapi.json): kept in docs/api/sts.json, a schema for every
// response of every route, and real answers of every route, allowed and refused, valid against it.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import type { Agent } from 'undici';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import {
  assertEveryResponseHasASchema,
  assertKeptDocument,
  assertResponsesMatch,
} from '../helpers/openapi.ts';
import type { ApiCase, OpenApiDocument } from '../helpers/openapi.ts';
import { ORDERS, call, mtlsAgent, startTestSts } from './helpers.ts';
import type { TestSts } from './helpers.ts';

const run = promisify(execFile);
let pki: TestPki;
let sts: TestSts;
let noCa: TestSts;
let dir: string;
const agents: Agent[] = [];
const agent = (name?: string) => {
  const leaf = name ? pki.leaf(name) : undefined;
  const a = mtlsAgent({ ca: pki.rootPem, ...(leaf ? { cert: leaf.certPem, key: leaf.keyPem } : {}) });
  agents.push(a);
  return a;
};

before(async () => {
  pki = await makeTestPki();
  dir = mkdtempSync(join(tmpdir(), 'sts-openapi-'));
  sts = await startTestSts(pki, { ca: { dir: pki.ca.dir, perSecond: 50, burst: 50 } });
  noCa = await startTestSts(pki);
});
after(async () => {
  for (const a of agents) await a.close();
  await sts?.close();
  await noCa?.close();
  pki?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

/** A base64 DER CSR for a fresh P-256 key, made with openssl as an EST client would. */
async function csr(name: string): Promise<string> {
  await run(
    'openssl',
    ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'].concat([
      '-keyout',
      `${name}-key.pem`,
      '-subj',
      `/CN=${name}`,
      '-outform',
      'DER',
      '-out',
      `${name}.der`,
    ]),
    { cwd: dir, timeout: 10_000 },
  );
  return readFileSync(join(dir, `${name}.der`)).toString('base64');
}

test('the STS serves its OpenAPI 3.1 document, as kept in docs/api/sts.json', async () => {
  const res = await call(agent(), `${sts.url}/openapi.json`);
  assert.equal(res.status, 200);
  const doc = res.json as OpenApiDocument;
  assertKeptDocument(doc, 'sts.json');
  assertEveryResponseHasASchema(doc);
  // The same routes whatever the config: the STS without a CA serves the same document.
  assert.deepEqual((await call(agent(), `${noCa.url}/openapi.json`)).json, doc);
});

test('every STS route answers, allowed and refused, as its OpenAPI document says', async () => {
  const doc = (await call(agent(), `${sts.url}/openapi.json`)).json as OpenApiDocument;
  const anonymous = agent();
  const web = agent('web');
  const admin = agent('admin-console');
  const form = { 'content-type': 'application/x-www-form-urlencoded' };
  const json = { 'content-type': 'application/json' };
  const pkcs10 = { 'content-type': 'application/pkcs10' };
  const jwks = await call(anonymous, `${sts.url}/.well-known/jwks.json`);
  const revocations = await call(web, `${sts.url}/v1/revocations`);
  const joinToken = (
    await call(admin, `${sts.url}/v1/admin/join-tokens`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ workload: 'web' }),
    })
  ).json.token as string;
  const ok = (name: string, dispatcher: Agent, status = 200, extra: Partial<ApiCase> = {}): ApiCase => ({
    name,
    dispatcher,
    status,
    ...extra,
  });
  const table: Record<string, ApiCase[]> = {
    'POST /oauth2/token': [
      ok('client credentials', web, 200, {
        headers: form,
        body: `grant_type=client_credentials&audience=${ORDERS}`,
      }),
      ok('no audience', web, 400, { headers: form, body: 'grant_type=client_credentials' }),
      ok('no client certificate', anonymous, 401, {
        headers: form,
        body: `grant_type=client_credentials&audience=${ORDERS}`,
      }),
    ],
    'GET /.well-known/jwks.json': [
      ok('anyone', anonymous),
      ok('unchanged', anonymous, 304, { headers: { 'if-none-match': String(jwks.headers.etag) } }),
    ],
    'GET /.well-known/oauth-authorization-server': [ok('anyone', anonymous)],
    'GET /v1/revocations': [
      ok('a workload', web),
      ok('unchanged', web, 304, { headers: { 'if-none-match': String(revocations.headers.etag) } }),
      ok('no client certificate', anonymous, 401),
    ],
    'GET /v1/admin/keys': [ok('admin', admin), ok('not admin', web, 403)],
    'POST /v1/admin/keys/rotate': [ok('admin', admin), ok('not admin', web, 403)],
    'POST /v1/admin/revoke': [
      ok('a jti', admin, 200, { headers: json, body: JSON.stringify({ jti: 'openapi-test' }) }),
      ok('a serial', admin, 200, { headers: json, body: JSON.stringify({ serial: '0a:1b' }) }),
      ok('an unknown field', admin, 400, { headers: json, body: JSON.stringify({ jti: 'x', extra: 1 }) }),
      ok('not admin', web, 403, { headers: json, body: JSON.stringify({ jti: 'x' }) }),
    ],
    'POST /v1/admin/join-tokens': [
      ok('admin', admin, 200, { headers: json, body: JSON.stringify({ workload: 'orders', ttl: '5m' }) }),
      ok('an unknown workload', admin, 400, { headers: json, body: JSON.stringify({ workload: 'nobody' }) }),
    ],
    'GET /.well-known/est/cacerts': [
      ok('anyone', anonymous),
      ok('an STS without a CA', anonymous, 404, { baseUrl: noCa.url }),
    ],
    'POST /.well-known/est/simpleenroll': [
      ok('a join token', anonymous, 200, {
        headers: { ...pkcs10, authorization: `Bearer ${joinToken}` },
        body: await csr('web'),
      }),
      ok('no join token', anonymous, 401, { headers: pkcs10, body: await csr('web2') }),
    ],
    'POST /.well-known/est/simplereenroll': [
      ok('the current certificate', web, 200, { headers: pkcs10, body: await csr('web3') }),
      ok('not base64', web, 400, { headers: pkcs10, body: '%%%' }),
    ],
    'GET /healthz': [ok('anyone', anonymous)],
    'GET /readyz': [ok('anyone', anonymous)],
    'GET /metrics': [ok('a workload', web), ok('no client certificate', anonymous, 401)],
    'GET /openapi.json': [ok('anyone', anonymous)],
  };
  const checked = await assertResponsesMatch(doc, sts.url, table);
  assert.ok(checked >= 30, `${checked} requests`);
});
