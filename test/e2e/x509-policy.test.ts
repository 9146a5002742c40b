// One X.509-SVID peer policy everywhere: each certificate case is presented to every part that
// accepts mTLS (the real STS, the real sidecar's inbound listener, the real audit collector) and
// put on a server that every mTLS dialer meets (the real sidecar's outbound route, the audit
// client, the STS admin client of `portcullis keys`). Every part gives the same verdict with the same ca/ code, and the verdicts agree with
// `openssl verify -x509_strict -auth_level 2 -purpose sslclient|sslserver` wherever openssl has one.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import type { Server as HttpsServer } from 'node:https';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createCollectorApi, startCollector } from '../../audit/index.ts';
import type { RunningCollector } from '../../audit/index.ts';
import { x509 } from '../../ca/index.ts';
import { MemoryAuditSink, createLogger } from '../../core/index.ts';
import { parseSidecarConfig, startSidecar } from '../../sidecar/index.ts';
import type { RunningSidecar } from '../../sidecar/index.ts';
import { createStsAdminClient, parseStsConfig, startSts } from '../../sts/index.ts';
import type { RunningSts } from '../../sts/index.ts';
import { collectorConfig } from '../audit/collector-harness.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { MintOptions, MintedCa, MintedCert, TestPki } from '../helpers/pki.ts';
import { startEchoApp } from './mesh.ts';

const run = promisify(execFile);
const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';
const WEB = 'spiffe://example.org/ns/shop/sa/web';
const STS_ID = 'spiffe://example.org/ns/portcullis/sa/sts';
const ISSUER = 'https://sts.portcullis.internal';
const HOUR = 3_600_000;
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
// The test clients and the dialers' test server must be able to load the weak certificates at
// all: OpenSSL's default security level refuses to present a SHA-1 or RSA-1024 certificate.
const ANY_STRENGTH = 'DEFAULT:@SECLEVEL=0';
const quiet = createLogger({ name: 'x509-policy', level: 'silent' });

type Verdict = 'ok' | `ERR_CA_${string}`;
interface Case {
  readonly name: string;
  readonly mint: (pki: TestPki, odd: OddCas) => MintOptions;
  /** The verdict when the certificate is a client's (listeners) and a server's (dialers). */
  readonly asClient: Verdict;
  readonly asServer: Verdict;
  /** Where the X509-SVID profile is stricter than RFC 5280 and openssl accepts what we refuse. */
  readonly opensslAccepts?: readonly ('client' | 'server')[];
}
interface OddCas {
  /** An intermediate with an unknown critical extension, in every part's trust bundle. */
  readonly knownBadIntermediate: MintedCa;
  /** The same flaw, in an intermediate only the peer sends. */
  readonly sentBadIntermediate: MintedCa;
  /** A known intermediate whose extKeyUsage names serverAuth only. */
  readonly serverOnlyIntermediate: MintedCa;
}

const unknownCritical = () => new x509.Extension('1.3.6.1.4.1.55555.1', true, new Uint8Array([5, 0]));
const ago = (ms: number) => new Date(Date.now() - ms);

const CASES: readonly Case[] = [
  { name: 'a good X.509-SVID (ECDSA P-256)', mint: () => ({}), asClient: 'ok', asServer: 'ok' },
  { name: 'a good Ed25519 leaf', mint: () => ({ keyAlgorithm: 'ed25519' }), asClient: 'ok', asServer: 'ok' },
  {
    name: 'a good RSA-2048 leaf',
    mint: () => ({ keyAlgorithm: 'rsa-2048' }),
    asClient: 'ok',
    asServer: 'ok',
  },
  {
    name: 'an empty subject with a critical SAN',
    mint: () => ({ subject: '', sanCritical: true }),
    asClient: 'ok',
    asServer: 'ok',
  },
  {
    name: 'no keyUsage and no extKeyUsage at all',
    mint: () => ({ keyUsageOmitted: true, extKeyUsages: null }),
    asClient: 'ok',
    asServer: 'ok',
  },
  {
    name: 'an unknown critical extension on the leaf',
    mint: () => ({ extraExtensions: [unknownCritical()] }),
    asClient: 'ERR_CA_CRITICAL_EXTENSION_UNKNOWN',
    asServer: 'ERR_CA_CRITICAL_EXTENSION_UNKNOWN',
  },
  {
    // RFC 5280 §4.2: a critical extension the relying party does not process refuses the
    // certificate; openssl processes certificate policies, the X.509-SVID policy does not.
    name: 'a critical certificatePolicies extension',
    mint: () => ({
      extraExtensions: [
        new x509.Extension(
          '2.5.29.32',
          true,
          new Uint8Array([0x30, 0x06, 0x30, 0x04, 0x06, 0x02, 0x55, 0x1d]),
        ),
      ],
    }),
    asClient: 'ERR_CA_CRITICAL_EXTENSION_UNKNOWN',
    asServer: 'ERR_CA_CRITICAL_EXTENSION_UNKNOWN',
    opensslAccepts: ['client', 'server'],
  },
  {
    name: 'an unknown critical extension on a known intermediate',
    mint: (_p, odd) => ({ signer: odd.knownBadIntermediate }),
    asClient: 'ERR_CA_CRITICAL_EXTENSION_UNKNOWN',
    asServer: 'ERR_CA_CRITICAL_EXTENSION_UNKNOWN',
  },
  {
    name: 'an unknown critical extension on an intermediate only the peer sends',
    mint: (_p, odd) => ({ signer: odd.sentBadIntermediate }),
    asClient: 'ERR_CA_CHAIN_UNTRUSTED',
    asServer: 'ERR_CA_CHAIN_UNTRUSTED',
  },
  {
    name: 'an intermediate whose extKeyUsage is serverAuth only',
    mint: (_p, o) => ({ signer: o.serverOnlyIntermediate }),
    asClient: 'ERR_CA_CHAIN_INVALID',
    asServer: 'ok',
  },
  {
    name: 'a SHA-1 signature',
    mint: () => ({ signatureHash: 'SHA-1' }),
    asClient: 'ERR_CA_SIGNATURE_ALGORITHM',
    asServer: 'ERR_CA_SIGNATURE_ALGORITHM',
  },
  {
    name: 'an empty subject with a non-critical SAN',
    mint: () => ({ subject: '' }),
    asClient: 'ERR_CA_EMPTY_SUBJECT_SAN_NOT_CRITICAL',
    asServer: 'ERR_CA_EMPTY_SUBJECT_SAN_NOT_CRITICAL',
  },
  {
    name: 'a serverAuth-only EKU',
    mint: () => ({ extKeyUsages: [SERVER_AUTH] }),
    asClient: 'ERR_CA_LEAF_EXTENDED_KEY_USAGE',
    asServer: 'ok',
  },
  {
    name: 'a clientAuth-only EKU',
    mint: () => ({ extKeyUsages: [CLIENT_AUTH] }),
    asClient: 'ok',
    asServer: 'ERR_CA_LEAF_EXTENDED_KEY_USAGE',
  },
  {
    name: 'anyExtendedKeyUsage alone',
    mint: () => ({ extKeyUsages: ['2.5.29.37.0'] }),
    asClient: 'ERR_CA_LEAF_EXTENDED_KEY_USAGE',
    asServer: 'ERR_CA_LEAF_EXTENDED_KEY_USAGE',
  },
  {
    name: 'a leaf sent without its intermediate',
    mint: () => ({ withIntermediate: false }),
    asClient: 'ERR_CA_CHAIN_INCOMPLETE',
    asServer: 'ERR_CA_CHAIN_INCOMPLETE',
  },
  {
    name: 'an expired leaf',
    mint: () => ({ notBefore: ago(2 * HOUR), notAfter: ago(HOUR) }),
    asClient: 'ERR_CA_CERT_EXPIRED',
    asServer: 'ERR_CA_CERT_EXPIRED',
  },
  {
    name: 'a leaf not yet valid',
    mint: () => ({ notBefore: ago(-HOUR), notAfter: ago(-2 * HOUR) }),
    asClient: 'ERR_CA_CERT_NOT_YET_VALID',
    asServer: 'ERR_CA_CERT_NOT_YET_VALID',
  },
  {
    name: 'a CA:true leaf',
    mint: () => ({ ca: true }),
    asClient: 'ERR_CA_LEAF_IS_CA',
    asServer: 'ERR_CA_LEAF_IS_CA',
    opensslAccepts: ['client', 'server'],
  },
  {
    name: 'two URI SANs',
    mint: () => ({ uris: [ORDERS, 'spiffe://example.org/ns/shop/sa/other'] }),
    asClient: 'ERR_CA_SPIFFE_ID_MULTIPLE',
    asServer: 'ERR_CA_SPIFFE_ID_MULTIPLE',
    opensslAccepts: ['client', 'server'],
  },
  ...[
    'spiffe://example.org/ns/../sa/orders',
    'spiffe://EXAMPLE.org/ns/shop/sa/orders',
    'spiffe://example.org/ns/shop/sa/orders?x=1',
    'spiffe://example.org/ns/shop/sa/orders#f',
    'spiffe://example.org/ns//sa/orders',
    'https://example.org/ns/shop/sa/orders',
    'spiffe://example.org',
    'spiffe://example.org:8443/ns/shop/sa/orders',
  ].map((uri): Case => ({
    name: `a malformed SPIFFE ID ${uri}`,
    mint: () => ({ uris: [uri] }),
    asClient: 'ERR_CA_SPIFFE_ID_INVALID',
    asServer: 'ERR_CA_SPIFFE_ID_INVALID',
    opensslAccepts: ['client', 'server'],
  })),
  {
    name: 'a foreign trust domain',
    mint: () => ({ uris: ['spiffe://evil.org/ns/shop/sa/orders'] }),
    asClient: 'ERR_CA_FOREIGN_TRUST_DOMAIN',
    asServer: 'ERR_CA_FOREIGN_TRUST_DOMAIN',
  },
  {
    name: 'a certificate of another CA',
    mint: () => ({ signer: 'foreign' }),
    asClient: 'ERR_CA_CHAIN_UNTRUSTED',
    asServer: 'ERR_CA_CHAIN_UNTRUSTED',
  },
  {
    name: 'keyUsage keyEncipherment without digitalSignature',
    mint: () => ({ keyUsage: x509.KeyUsageFlags.keyEncipherment }),
    asClient: 'ERR_CA_LEAF_KEY_USAGE',
    asServer: 'ERR_CA_LEAF_KEY_USAGE',
    // openssl's ssl_server purpose also takes keyEncipherment (RSA key transport, gone in TLS 1.3).
    opensslAccepts: ['server'],
  },
  {
    name: 'keyUsage nonRepudiation only',
    mint: () => ({ keyUsage: x509.KeyUsageFlags.nonRepudiation }),
    asClient: 'ERR_CA_LEAF_KEY_USAGE',
    asServer: 'ERR_CA_LEAF_KEY_USAGE',
  },
  {
    name: 'keyUsage keyCertSign on a leaf',
    mint: () => ({ keyUsage: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign }),
    asClient: 'ERR_CA_LEAF_KEY_USAGE',
    asServer: 'ERR_CA_LEAF_KEY_USAGE',
  },
  {
    name: 'a weak RSA-1024 key',
    mint: () => ({ keyAlgorithm: 'rsa-1024' }),
    asClient: 'ERR_CA_KEY_TOO_WEAK',
    asServer: 'ERR_CA_KEY_TOO_WEAK',
  },
  {
    name: 'an ECDSA P-521 key (outside the allow-list)',
    mint: () => ({ keyAlgorithm: 'ecdsa-p521' }),
    asClient: 'ERR_CA_KEY_UNSUPPORTED',
    asServer: 'ERR_CA_KEY_UNSUPPORTED',
    opensslAccepts: ['client', 'server'],
  },
];

let pki: TestPki;
let dir: string;
let bundleFile: string;
let odd: OddCas;
let sts: RunningSts;
let stsEvents: MemoryAuditSink;
let collector: RunningCollector;
let sidecar: RunningSidecar;
let sidecarEvents: MemoryAuditSink;
let app: Awaited<ReturnType<typeof startEchoApp>>;
/** The server every dialer meets; its certificate is swapped for each case. */
let badServer: HttpsServer;
let badUrl: string;

before(async () => {
  pki = await makeTestPki();
  dir = mkdtempSync(join(tmpdir(), 'x509-policy-'));
  odd = {
    knownBadIntermediate: await pki.mintIntermediate({ extraExtensions: [unknownCritical()] }),
    sentBadIntermediate: await pki.mintIntermediate({ extraExtensions: [unknownCritical()] }),
    serverOnlyIntermediate: await pki.mintIntermediate({
      extraExtensions: [new x509.ExtendedKeyUsageExtension([SERVER_AUTH])],
    }),
  };
  // Every part trusts the same bundle: the root, plus an intermediate it knows (and must still judge).
  bundleFile = join(dir, 'bundle.pem');
  writeFileSync(bundleFile, pki.rootPem + odd.knownBadIntermediate.pem + odd.serverOnlyIntermediate.pem);
  const tlsOf = (name: string) => ({
    cert: join(pki.certsDir, `${name}.pem`),
    key: join(pki.certsDir, `${name}-key.pem`),
    trustBundle: bundleFile,
    reloadInterval: '1h',
  });
  stsEvents = new MemoryAuditSink();
  sts = await startSts(
    parseStsConfig(
      {
        listen: { host: '127.0.0.1', port: 0 },
        tls: tlsOf('sts'),
        identities: pki.identitiesDir,
        issuer: ISSUER,
        keystore: { type: 'file', dir: join(dir, 'keys') },
        audit: { sink: 'memory' },
      },
      'x509 sts',
    ),
    { masterKey: randomBytes(32).toString('base64'), audit: stsEvents, logger: quiet },
  );
  collector = await startCollector(collectorConfig(pki, dir, { tls: tlsOf('audit') }), { logger: quiet });
  badServer = createHttpsServer(
    { ...(await present(await pki.mint())), ciphers: ANY_STRENGTH },
    // The admin client reads JSON; the other dialers only need an answer.
    (req, res) =>
      req.url === '/v1/admin/keys'
        ? res.writeHead(200, { connection: 'close', 'content-type': 'application/json' }).end('{"keys":[]}')
        : res.writeHead(200, { connection: 'close', 'content-type': 'text/plain' }).end('reached'),
  );
  await new Promise<void>((r) => badServer.listen(0, '127.0.0.1', r));
  badUrl = `https://127.0.0.1:${(badServer.address() as AddressInfo).port}`;
  app = await startEchoApp('web');
  const policyFile = join(dir, 'web-policy.yaml');
  writeFileSync(policyFile, readFileSync('policies/web.yaml', 'utf8'));
  sidecarEvents = new MemoryAuditSink();
  sidecar = await startSidecar(
    parseSidecarConfig(
      {
        service: WEB,
        trustDomain: 'example.org',
        tls: tlsOf('web'),
        sts: { url: sts.url, spiffeId: STS_ID, issuer: ISSUER, timeout: '2s' },
        inbound: { listen: { host: '127.0.0.1', port: 0 }, app: app.url, policy: policyFile },
        outbound: {
          listen: { host: '127.0.0.1', port: 0 },
          routes: [
            {
              name: 'orders',
              hosts: ['orders.shop.internal'],
              address: badUrl.slice('https://'.length),
              spiffeId: ORDERS,
            },
          ],
        },
      },
      'x509 sidecar',
    ),
    { sink: sidecarEvents, logger: quiet, defaultMetrics: false },
  );
});

after(async () => {
  await sidecar?.close();
  await sts?.close();
  await collector?.close();
  await new Promise((r) => badServer?.close(r));
  await new Promise((r) => app?.server.close(r));
  rmSync(dir, { recursive: true, force: true });
  pki?.cleanup();
});

async function present(m: MintedCert): Promise<{ cert: string; key: string }> {
  return { cert: m.chainPem, key: m.keyPem };
}

/** GET `url` over TLS presenting `m`; status and body. The server is judged elsewhere. */
function getAs(m: MintedCert, url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      url,
      {
        cert: m.chainPem,
        key: m.keyPem,
        ca: pki.rootPem,
        rejectUnauthorized: false,
        ciphers: ANY_STRENGTH,
        agent: false,
        timeout: 5_000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${url}: no answer`)));
    req.on('error', reject);
    req.end();
  });
}

const codeIn = (text: string): Verdict | undefined => /\b(ERR_CA_[A-Z_]+)\b/.exec(text)?.[1] as Verdict;

/** The STS: a workload route; a refusal is 401 invalid_client and an audit event with the ca/ code. */
async function stsVerdict(m: MintedCert): Promise<Verdict> {
  const seen = stsEvents.events.length;
  const res = await getAs(m, `${sts.url}/v1/revocations`);
  if (res.status !== 401) return 'ok';
  const reason = stsEvents.events.slice(seen).find((e) => e.decision === 'deny')?.reason ?? '';
  return codeIn(reason) ?? assert.fail(`STS refused without a ca/ code: ${res.body} ${reason}`);
}

/** The sidecar inbound listener: ERR_SIDECAR_PEER_UNVERIFIED with the ca/ code in the audit event. */
async function sidecarInboundVerdict(m: MintedCert): Promise<Verdict> {
  const seen = sidecarEvents.events.length;
  const res = await getAs(m, `${sidecar.inbound.url}/healthz`);
  if (!res.body.includes('ERR_SIDECAR_PEER_UNVERIFIED')) return 'ok';
  const event = sidecarEvents.events.slice(seen).find((e) => e.reason === 'ERR_SIDECAR_PEER_UNVERIFIED');
  const code = String(event?.attributes?.peerError ?? '');
  return codeIn(code) ?? assert.fail(`sidecar refused without a ca/ code: ${res.body}`);
}

/** The collector: ERR_AUDIT_PEER_REFUSED naming the ca/ code. */
async function collectorVerdict(m: MintedCert): Promise<Verdict> {
  const res = await getAs(m, `${collector.url}/v1/checkpoints/latest`);
  if (!res.body.includes('ERR_AUDIT_PEER_REFUSED')) return 'ok';
  return codeIn(res.body) ?? assert.fail(`collector refused without a ca/ code: ${res.body}`);
}

/** The sidecar's outbound dialer, through its loopback proxy: 502 naming the ca/ code, or the server's answer. */
function sidecarOutboundVerdict(): Promise<Verdict> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      `${sidecar.outbound!.url}/anything`,
      { headers: { host: 'orders.shop.internal' }, agent: false, timeout: 5_000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => {
          if (res.statusCode === 200 && body === 'reached') return resolve('ok');
          const code = codeIn(body);
          if (res.statusCode === 502 && code) return resolve(code);
          reject(new Error(`outbound answered ${res.statusCode}: ${body}`));
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('outbound: no answer')));
    req.on('error', reject);
    req.end();
  });
}

/** The audit client's dialer (the collector API shares it with the event sink). */
async function auditClientVerdict(): Promise<Verdict> {
  const web = pki.leaf('web');
  const api = createCollectorApi({
    url: badUrl,
    tls: { cert: web.certFile, key: web.keyFile, trustBundle: bundleFile },
    collectorId: ORDERS,
    timeoutMs: 5_000,
  });
  try {
    await api.latestCheckpoint();
    return 'ok';
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    return codeIn(cause?.code ?? '') ?? assert.fail(`audit client failed without a ca/ code: ${String(err)}`);
  } finally {
    await api.close();
  }
}

/** The STS admin client (`portcullis keys`): the policy, then the host name. */
async function adminClientVerdict(): Promise<Verdict> {
  const admin = pki.leaf('admin-console');
  const client = createStsAdminClient({
    url: badUrl,
    cert: admin.certPem,
    key: admin.keyPem,
    ca: readFileSync(bundleFile, 'utf8'),
    timeoutMs: 5_000,
  });
  try {
    await client.listKeys();
    return 'ok';
  } catch (err) {
    const message = (err as Error).message;
    return codeIn(message) ?? assert.fail(`admin client failed without a ca/ code: ${message}`);
  } finally {
    await client.close();
  }
}

/** openssl's verdict: true when `openssl verify -x509_strict -auth_level 2` accepts the chain as sent. */
async function opensslAccepts(
  m: MintedCert,
  purpose: 'sslclient' | 'sslserver',
  n: number,
): Promise<boolean> {
  const leafFile = join(dir, `leaf-${n}.pem`);
  const sentFile = join(dir, `sent-${n}.pem`);
  writeFileSync(leafFile, m.certPem);
  const sent = m.chainPem.slice(m.certPem.length);
  writeFileSync(sentFile, sent);
  const args = ['verify', '-x509_strict', '-auth_level', '2', '-purpose', purpose, '-CAfile', bundleFile];
  try {
    await run('openssl', [...args, ...(sent ? ['-untrusted', sentFile] : []), leafFile]);
    return true;
  } catch {
    return false;
  }
}

test('every part gives each certificate case the same verdict and code, and agrees with openssl verify', async () => {
  let n = 0;
  for (const c of CASES) {
    // 127.0.0.1 for the admin client's host name check, which follows the policy's.
    const m = await pki.mint({ uris: [ORDERS], ipAddresses: ['127.0.0.1'], ...c.mint(pki, odd) });
    n++;
    const listeners = {
      sts: await stsVerdict(m),
      'sidecar inbound': await sidecarInboundVerdict(m),
      collector: await collectorVerdict(m),
    };
    badServer.setSecureContext({ cert: m.chainPem, key: m.keyPem, ciphers: ANY_STRENGTH });
    const dialers = {
      'sidecar outbound': await sidecarOutboundVerdict(),
      'audit client': await auditClientVerdict(),
      'STS admin client': await adminClientVerdict(),
    };
    assert.deepEqual(
      listeners,
      { sts: c.asClient, 'sidecar inbound': c.asClient, collector: c.asClient },
      `${c.name}, presented by a client`,
    );
    assert.deepEqual(
      dialers,
      { 'sidecar outbound': c.asServer, 'audit client': c.asServer, 'STS admin client': c.asServer },
      `${c.name}, presented by a server`,
    );
    for (const [side, purpose, verdict] of [
      ['client', 'sslclient', c.asClient],
      ['server', 'sslserver', c.asServer],
    ] as const) {
      const expected = verdict === 'ok' || (c.opensslAccepts?.includes(side) ?? false);
      assert.equal(
        await opensslAccepts(m, purpose, n),
        expected,
        `${c.name}: openssl -purpose ${purpose} should ${expected ? 'accept' : 'refuse'}`,
      );
    }
  }
});
