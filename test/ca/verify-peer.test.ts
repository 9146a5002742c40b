import { after, before, test } from 'node:test';
import type { TLSSocket } from 'node:tls';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { AsnConvert } from '@peculiar/asn1-schema';
import { GeneralName, GeneralSubtree, GeneralSubtrees, NameConstraints } from '@peculiar/asn1-x509';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CaError, createPeerVerifier, followTrustBundle, watchTlsFiles, x509 } from '../../ca/index.ts';
import { createLogger } from '../../core/index.ts';
import { importPrivateKeyPem, randomSerial, signingAlgorithm } from '../helpers/ca-internals.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { MintOptions, TestPki } from '../helpers/pki.ts';
import { acceptTls } from '../helpers/tls.ts';

let pki: TestPki;
before(async () => {
  pki = await makeTestPki();
});
after(() => pki.cleanup());

const revoked = new Set<string>();
const verifier = () =>
  createPeerVerifier({
    trustAnchorsPem: pki.rootPem,
    intermediatesPem: pki.intermediatePem,
    trustDomain: 'example.org',
    isRevoked: (s) => revoked.has(s),
    purpose: 'clientAuth',
  });

test('a workload leaf with its intermediate verifies to its SPIFFE ID, serial and thumbprint', () => {
  const web = pki.leaf('web');
  const der = [
    web.leafDer,
    new Uint8Array(Buffer.from(pki.intermediatePem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64')),
  ];
  const id = verifier().verifyChain(der);
  assert.equal(id.spiffeId.uri, 'spiffe://example.org/ns/shop/sa/web');
  assert.equal(id.serial, web.serial);
  assert.equal(id.thumbprint, web.thumbprint);
});

test('chain verification refuses each kind of bad certificate with its own code', async () => {
  const hour = 3_600_000;
  const cases: [string, MintOptions | 'empty' | 'garbage' | 'revoked', string][] = [
    [
      'expired',
      { notBefore: new Date(Date.now() - 2 * hour), notAfter: new Date(Date.now() - hour) },
      'ERR_CA_CERT_EXPIRED',
    ],
    [
      'not yet valid',
      { notBefore: new Date(Date.now() + hour), notAfter: new Date(Date.now() + 2 * hour) },
      'ERR_CA_CERT_NOT_YET_VALID',
    ],
    ['signed by another CA', { signer: 'foreign' }, 'ERR_CA_CHAIN_UNTRUSTED'],
    ['missing intermediate', { withIntermediate: false }, 'ERR_CA_CHAIN_INCOMPLETE'],
    ['CA:true leaf', { ca: true }, 'ERR_CA_LEAF_IS_CA'],
    [
      'keyCertSign on a leaf',
      { keyUsage: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign },
      'ERR_CA_LEAF_KEY_USAGE',
    ],
    ['no URI SAN', { uris: [], dnsNames: ['web.shop.internal'] }, 'ERR_CA_SPIFFE_ID_MISSING'],
    ['no SAN at all', { uris: [] }, 'ERR_CA_SPIFFE_ID_MISSING'],
    [
      'two URI SANs',
      { uris: ['spiffe://example.org/a', 'spiffe://example.org/b'] },
      'ERR_CA_SPIFFE_ID_MULTIPLE',
    ],
    [
      'foreign trust domain',
      { signer: 'root', uris: ['spiffe://evil.org/a'] },
      'ERR_CA_FOREIGN_TRUST_DOMAIN',
    ],
    [
      'foreign trust domain under our intermediate',
      { uris: ['spiffe://evil.org/a'] },
      'ERR_CA_FOREIGN_TRUST_DOMAIN',
    ],
    ['malformed SPIFFE ID', { uris: ['spiffe://example.org/a/../b'] }, 'ERR_CA_SPIFFE_ID_INVALID'],
    ['bare trust domain ID', { uris: ['spiffe://example.org'] }, 'ERR_CA_SPIFFE_ID_INVALID'],
    ['RSA 1024 key', { keyAlgorithm: 'rsa-1024' }, 'ERR_CA_KEY_TOO_WEAK'],
    ['revoked serial', 'revoked', 'ERR_CA_CERT_REVOKED'],
    ['no certificate', 'empty', 'ERR_CA_PEER_NO_CERT'],
    ['garbage bytes', 'garbage', 'ERR_CA_CERT_MALFORMED'],
  ];
  for (const [name, what, code] of cases) {
    let chain: Uint8Array[];
    if (what === 'empty') chain = [];
    else if (what === 'garbage') chain = [new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01])];
    else if (what === 'revoked') {
      const m = await pki.mint();
      revoked.add(m.serial);
      chain = m.chainDer;
    } else chain = (await pki.mint(what)).chainDer;
    assert.throws(
      () => verifier().verifyChain(chain),
      (err: unknown) => {
        assert.ok(err instanceof CaError, `${name}: ${String(err)}`);
        assert.equal(err.code, code, `${name}: ${err.message}`);
        return true;
      },
      name,
    );
  }
});

test('the intermediate name constraints hold even for a verifier of another trust domain', async () => {
  const m = await pki.mint({ uris: ['spiffe://evil.org/a'] });
  const evil = createPeerVerifier({
    trustAnchorsPem: pki.rootPem,
    intermediatesPem: pki.intermediatePem,
    trustDomain: 'evil.org',
    purpose: 'clientAuth',
  });
  assert.throws(() => evil.verifyChain(m.chainDer), { code: 'ERR_CA_NAME_CONSTRAINTS' });
});

test('a verifier needs a non-empty trust bundle of CA certificates', () => {
  assert.throws(
    () => createPeerVerifier({ trustAnchorsPem: '', trustDomain: 'example.org', purpose: 'clientAuth' }),
    TypeError,
  );
  assert.throws(
    () =>
      createPeerVerifier({
        trustAnchorsPem: pki.leaf('web').certPem,
        trustDomain: 'example.org',
        purpose: 'clientAuth',
      }),
    TypeError,
  );
});

/** A clientAuth verifier whose clock and deny-list the test moves, and web's leaf on new TLS connections. */
function revocableVerifier() {
  const state = { now: Date.now(), denied: new Set<string>() };
  const v = createPeerVerifier({
    trustAnchorsPem: pki.rootPem,
    intermediatesPem: pki.intermediatePem,
    trustDomain: 'example.org',
    isRevoked: (s) => state.denied.has(s),
    purpose: 'clientAuth',
    clock: () => state.now,
  });
  const web = pki.leaf('web');
  /** Runs `f` on a fresh connection presenting web's leaf, closed afterwards. */
  const onConnection = async (f: (socket: TLSSocket) => void) => {
    const conn = await acceptTls(pki, { cert: web.certPem, key: web.keyPem }, { minVersion: 'TLSv1.3' });
    try {
      f(conn.socket);
    } finally {
      conn.close();
    }
  };
  return { v, state, web, onConnection };
}

test('over real TLS, verifySocket caches the chain per connection but rechecks expiry and revocation', async () => {
  const { v, state, web, onConnection } = revocableVerifier();
  await onConnection((socket) => {
    assert.equal(v.verifySocket(socket).spiffeId.uri, 'spiffe://example.org/ns/shop/sa/web');
    state.denied.add(web.serial);
    assert.throws(() => v.verifySocket(socket), { code: 'ERR_CA_CERT_REVOKED' });
    state.denied.clear();
    state.now += 25 * 3_600_000;
    assert.throws(() => v.verifySocket(socket), { code: 'ERR_CA_CERT_EXPIRED' });
  });
});

test('over real TLS, a second connection with the same leaf (the verdict cached by fingerprint) is refused once the leaf is revoked or expired', async () => {
  const { v, state, web, onConnection } = revocableVerifier();
  await onConnection((socket) =>
    assert.equal(v.verifySocket(socket).spiffeId.uri, 'spiffe://example.org/ns/shop/sa/web'),
  );
  state.denied.add(web.serial);
  await onConnection((socket) =>
    assert.throws(() => v.verifySocket(socket), { code: 'ERR_CA_CERT_REVOKED' }),
  );
  state.denied.clear();
  state.now += 25 * 3_600_000;
  await onConnection((socket) =>
    assert.throws(() => v.verifySocket(socket), { code: 'ERR_CA_CERT_EXPIRED' }),
  );
});

test('over real TLS, a leaf that expires during a connection is accepted on it for the clock skew more, and refused past that', async () => {
  let now = Date.now();
  // Valid at the handshake; the clock then moves past notAfter, within the skew.
  const leaf = await pki.mint({ notBefore: new Date(now - 3_600_000), notAfter: new Date(now + 10_000) });
  const v = createPeerVerifier({
    trustAnchorsPem: pki.rootPem,
    intermediatesPem: pki.intermediatePem,
    trustDomain: 'example.org',
    purpose: 'clientAuth',
    clockSkewMs: 60_000,
    clock: () => now,
  });
  const conn = await acceptTls(pki, { cert: leaf.chainPem, key: leaf.keyPem });
  try {
    assert.equal(conn.socket.authorized, true);
    assert.equal(v.verifySocket(conn.socket).spiffeId.uri, 'spiffe://example.org/ns/shop/sa/web');
    now += 40_000;
    assert.equal(v.verifySocket(conn.socket).spiffeId.uri, 'spiffe://example.org/ns/shop/sa/web');
    now += 31_000;
    assert.throws(() => v.verifySocket(conn.socket), { code: 'ERR_CA_CERT_EXPIRED' });
  } finally {
    conn.close();
  }
});

test('over real TLS, a peer without a certificate is ERR_CA_PEER_NO_CERT', async () => {
  const v = createPeerVerifier({
    trustAnchorsPem: pki.rootPem,
    trustDomain: 'example.org',
    purpose: 'clientAuth',
  });
  const conn = await acceptTls(pki);
  try {
    assert.throws(() => v.verifySocket(conn.socket), { code: 'ERR_CA_PEER_NO_CERT' });
  } finally {
    conn.close();
  }
});

test('intermediates in the trust bundle complete a chain the peer sent without them, and are not trusted alone', async () => {
  const m = await pki.mint({ withIntermediate: false });
  const pooled = createPeerVerifier({
    trustAnchorsPem: pki.rootPem + pki.intermediatePem,
    trustDomain: 'example.org',
    purpose: 'clientAuth',
  });
  assert.equal(pooled.verifyChain(m.chainDer).spiffeId.uri, 'spiffe://example.org/ns/shop/sa/web');
  assert.throws(
    () =>
      createPeerVerifier({
        trustAnchorsPem: pki.intermediatePem,
        trustDomain: 'example.org',
        purpose: 'clientAuth',
      }),
    TypeError,
  );
  const foreign = await pki.mint({ signer: 'foreign', withIntermediate: false });
  assert.throws(() => pooled.verifyChain(foreign.chainDer), { code: 'ERR_CA_CHAIN_UNTRUSTED' });
});

test('followTrustBundle: a CA (root and intermediate) added to the watched trust bundle is trusted after the reload, without a new verifier', async () => {
  const foreignLeaf = await pki.mint({ signer: 'foreign', uris: ['spiffe://example.org/ns/shop/sa/web'] });
  const dir = mkdtempSync(join(tmpdir(), 'trust-follow-'));
  try {
    const trustFile = join(dir, 'trust.pem');
    writeFileSync(trustFile, pki.rootPem);
    const web = pki.leaf('web');
    const watcher = watchTlsFiles(
      { cert: web.certFile, key: web.keyFile, trustBundle: trustFile, reloadInterval: 3_600_000 },
      createLogger({ name: 'test', level: 'silent' }),
    );
    const v = followTrustBundle(watcher, (trustAnchorsPem, intermediatesPem) =>
      createPeerVerifier({
        trustAnchorsPem,
        intermediatesPem,
        trustDomain: 'example.org',
        purpose: 'clientAuth',
      }),
    );
    assert.throws(() => v.verifyChain(foreignLeaf.chainDer), CaError);
    assert.equal(watcher.reload(), false);
    // The CA rotation's first step: the new root and its intermediate join the bundle (a part
    // knows only the intermediates of its bundle and of its own chain: docs/decisions/0006).
    const foreignRoot = readFileSync(join(pki.dir, 'foreign-ca', 'root.pem'), 'utf8');
    const foreignIntermediate = readFileSync(join(pki.dir, 'foreign-ca', 'intermediate.pem'), 'utf8');
    writeFileSync(trustFile, pki.rootPem + foreignRoot + foreignIntermediate);
    assert.equal(watcher.reload(), true);
    assert.equal(v.verifyChain(foreignLeaf.chainDer).spiffeId.uri, 'spiffe://example.org/ns/shop/sa/web');
    watcher.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('watchTlsFiles refuses a certificate and key that are not a pair with a config error naming both files', () => {
  const web = pki.leaf('web');
  const orders = pki.leaf('orders');
  assert.throws(
    () =>
      watchTlsFiles(
        { cert: web.certFile, key: orders.keyFile, trustBundle: pki.rootFile, reloadInterval: 3_600_000 },
        createLogger({ name: 'test', level: 'silent' }),
      ),
    (err: Error & { code?: string }) =>
      err.code === 'ERR_CONFIG_INVALID' &&
      err.message.startsWith(`${web.certFile}: tls: `) &&
      err.message.includes(orders.keyFile),
  );
});

test('the X.509-SVID profile refuses each RFC 5280 violation and odd CA with its own code', async () => {
  const AKI = '2.5.29.35';
  const BC = '2.5.29.19';
  const sha384 = await pki.mint({ signatureHash: 'SHA-384' });
  const noKeyCertSign = await pki.mintIntermediate({ keyUsage: x509.KeyUsageFlags.cRLSign });
  const bcNotCritical = await pki.mintIntermediate({ basicConstraintsCritical: false });
  const pathLenZero = await pki.mintIntermediate({ pathLength: 0 });
  const underPathLenZero = await pki.mintIntermediate({ signer: pathLenZero });
  const pathLenOne = await pki.mintIntermediate({ pathLength: 1 });
  const underPathLenOne = await pki.mintIntermediate({ signer: pathLenOne });
  const dnsConstraint = await pki.mintIntermediate({
    extraExtensions: [
      new x509.Extension(
        '2.5.29.30',
        true,
        // nameConstraints: permittedSubtrees [ dNSName "example.org" ]
        new Uint8Array([0x30, 0x0f, 0xa0, 0x0d, 0x30, 0x0b, 0x82, 0x09, ...Buffer.from('shop.test')]),
      ),
    ],
  });
  const cases: [string, MintOptions, string][] = [
    [
      'an extension twice',
      { extraExtensions: [new x509.BasicConstraintsExtension(false)] },
      'ERR_CA_CERT_NONCONFORMING',
    ],
    [
      'an empty subjectAltName',
      { uris: [], extraExtensions: [new x509.SubjectAlternativeNameExtension([])] },
      'ERR_CA_CERT_NONCONFORMING',
    ],
    ['no authorityKeyIdentifier', { omitExtensions: [AKI] }, 'ERR_CA_CERT_NONCONFORMING'],
    [
      'a pathLenConstraint on a leaf',
      {
        omitExtensions: [BC], // basicConstraints { pathLenConstraint 0 } without cA
        extraExtensions: [new x509.Extension(BC, true, new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]))],
      },
      'ERR_CA_CERT_NONCONFORMING',
    ],
    // Not a CA at all (RFC 5280 §4.2.1.3): never used to build a path, even when configured.
    ['an intermediate without keyCertSign', { signer: noKeyCertSign }, 'ERR_CA_CHAIN_UNTRUSTED'],
    [
      'an intermediate whose basicConstraints are not critical',
      { signer: bcNotCritical },
      'ERR_CA_CERT_NONCONFORMING',
    ],
    ['a path longer than an intermediate allows', { signer: underPathLenZero }, 'ERR_CA_CHAIN_INVALID'],
    ['an intermediate with a dNSName constraint', { signer: dnsConstraint }, 'ERR_CA_NAME_CONSTRAINTS'],
  ];
  const known = [bcNotCritical, underPathLenZero, dnsConstraint, underPathLenOne].map((c) => c.pem).join('');
  const v = createPeerVerifier({
    trustAnchorsPem: pki.rootPem + known,
    intermediatesPem: pki.intermediatePem + noKeyCertSign.pem,
    trustDomain: 'example.org',
    purpose: 'clientAuth',
  });
  assert.equal(v.verifyChain(sha384.chainDer).spiffeId.uri, 'spiffe://example.org/ns/shop/sa/web');
  const deep = await pki.mint({ signer: underPathLenOne });
  assert.equal(v.verifyChain(deep.chainDer).spiffeId.uri, 'spiffe://example.org/ns/shop/sa/web', 'pathLen 1');
  for (const [name, options, code] of cases) {
    const m = await pki.mint(options);
    assert.throws(() => v.verifyChain(m.chainDer), { code }, name);
  }
});

test('over real TLS, the skew covers a certificate the handshake calls expired, and no more', async () => {
  const v = createPeerVerifier({
    trustAnchorsPem: pki.rootPem,
    intermediatesPem: pki.intermediatePem,
    trustDomain: 'example.org',
    purpose: 'clientAuth',
    clockSkewMs: 60_000,
  });
  const now = Date.now();
  for (const [expiredMsAgo, expected] of [
    [20_000, undefined],
    [120_000, 'ERR_CA_CERT_EXPIRED'],
  ] as const) {
    const m = await pki.mint({
      notBefore: new Date(now - 3_600_000),
      notAfter: new Date(now - expiredMsAgo),
    });
    const conn = await acceptTls(pki, { cert: m.chainPem, key: m.keyPem });
    try {
      assert.equal(conn.socket.authorizationError, 'CERT_HAS_EXPIRED');
      if (expected) assert.throws(() => v.verifySocket(conn.socket), { code: expected });
      else assert.equal(v.verifySocket(conn.socket).serial, m.serial);
    } finally {
      conn.close();
    }
  }
});

test('a path is built through the valid one of two intermediates with the same name and key (a renewed or cross-signed CA), whichever comes first, as openssl verify does', async () => {
  const fresh = await pki.mintIntermediate();
  // The same CA as it was before its renewal: same subject, same key, expired an hour ago.
  const rootKey = await importPrivateKeyPem(
    readFileSync(join(pki.ca.dir, 'root-key.pem'), 'utf8'),
    'root key',
  );
  const hour = 3_600_000;
  const old = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: fresh.cert.subject,
    issuer: pki.ca.root.subject,
    notBefore: new Date(Date.now() - 48 * hour),
    notAfter: new Date(Date.now() - hour),
    signingAlgorithm: signingAlgorithm(rootKey.algorithm),
    publicKey: fresh.cert.publicKey,
    signingKey: rootKey.keys.privateKey,
    extensions: fresh.cert.extensions,
  });
  const oldPem = old.toString('pem') + '\n';
  const leaf = await pki.mint({ signer: fresh });
  for (const intermediatesPem of [oldPem + fresh.pem, fresh.pem + oldPem]) {
    const v = createPeerVerifier({
      trustAnchorsPem: pki.rootPem,
      intermediatesPem,
      trustDomain: 'example.org',
      purpose: 'clientAuth',
    });
    assert.equal(v.verifyChain(leaf.chainDer).spiffeId.uri, 'spiffe://example.org/ns/shop/sa/web');
  }
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-path-'));
  try {
    writeFileSync(join(dir, 'root.pem'), pki.rootPem);
    writeFileSync(join(dir, 'untrusted.pem'), oldPem + fresh.pem);
    writeFileSync(join(dir, 'leaf.pem'), leaf.certPem);
    const out = execFileSync(
      'openssl',
      [
        'verify',
        '-x509_strict',
        '-purpose',
        'sslclient',
        '-CAfile',
        'root.pem',
        '-untrusted',
        'untrusted.pem',
        'leaf.pem',
      ],
      { cwd: dir, encoding: 'utf8' },
    );
    assert.match(out, /leaf\.pem: OK/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // With only the expired one known, the leaf is refused for it.
  const onlyOld = createPeerVerifier({
    trustAnchorsPem: pki.rootPem,
    intermediatesPem: oldPem,
    trustDomain: 'example.org',
    purpose: 'clientAuth',
  });
  assert.throws(() => onlyOld.verifyChain(leaf.chainDer), { code: 'ERR_CA_CERT_EXPIRED' });
});

test('URI name constraints compare the host without regard to case, as RFC 5280 §4.2.1.10 and openssl verify do: a permitted subtree in capitals admits, an excluded one refuses', async () => {
  const constraint = (kind: 'permittedSubtrees' | 'excludedSubtrees', host: string) =>
    new x509.Extension(
      '2.5.29.30',
      true,
      AsnConvert.serialize(
        new NameConstraints({
          [kind]: new GeneralSubtrees([
            new GeneralSubtree({ base: new GeneralName({ uniformResourceIdentifier: host }) }),
          ]),
        }),
      ),
    );
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-nc-'));
  try {
    writeFileSync(join(dir, 'root.pem'), pki.rootPem);
    for (const [kind, verdict] of [
      ['permittedSubtrees', 'accept'],
      ['excludedSubtrees', 'ERR_CA_NAME_CONSTRAINTS'],
    ] as const) {
      const ca = await pki.mintIntermediate({ extraExtensions: [constraint(kind, 'EXAMPLE.Org')] });
      const leaf = await pki.mint({ signer: ca });
      const v = createPeerVerifier({
        trustAnchorsPem: pki.rootPem,
        intermediatesPem: ca.pem,
        trustDomain: 'example.org',
        purpose: 'clientAuth',
      });
      writeFileSync(join(dir, 'ca.pem'), ca.pem);
      writeFileSync(join(dir, 'leaf.pem'), leaf.certPem);
      const openssl = spawnSync(
        'openssl',
        [
          'verify',
          '-x509_strict',
          '-purpose',
          'sslclient',
          '-CAfile',
          'root.pem',
          '-untrusted',
          'ca.pem',
          'leaf.pem',
        ],
        { cwd: dir, encoding: 'utf8' },
      );
      if (verdict === 'accept') {
        assert.equal(openssl.status, 0, openssl.stdout + openssl.stderr);
        assert.equal(v.verifyChain(leaf.chainDer).spiffeId.uri, 'spiffe://example.org/ns/shop/sa/web');
      } else {
        assert.notEqual(openssl.status, 0, openssl.stdout);
        assert.match(openssl.stdout + openssl.stderr, /excluded subtree violation/);
        assert.throws(() => v.verifyChain(leaf.chainDer), { code: verdict });
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
