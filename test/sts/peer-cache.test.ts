// The STS's cache of peer verifications over the shared X.509-SVID policy, on real TLS
// connections: whatever it reuses, its verdict is the policy's, on every request of a connection.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPeerVerifier } from '../../ca/index.ts';
import { cachePeerVerifications } from '../../sts/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { acceptTls } from '../helpers/tls.ts';

let pki: TestPki;
before(async () => {
  pki = await makeTestPki();
});
after(() => pki.cleanup());

test('a leaf that expires during a connection is accepted on its requests for tls.clockSkew more, as the policy accepts it, and refused past that', async () => {
  let now = Date.now();
  const skew = 60_000;
  // Valid at the handshake; the clock then moves past notAfter, within the skew.
  const leaf = await pki.mint({ notBefore: new Date(now - 3_600_000), notAfter: new Date(now + 10_000) });
  const policy = createPeerVerifier({
    trustAnchorsPem: pki.rootPem,
    intermediatesPem: pki.intermediatePem,
    trustDomain: 'example.org',
    purpose: 'clientAuth',
    clockSkewMs: skew,
    clock: () => now,
  });
  const cached = cachePeerVerifications(policy, {
    clock: { now: () => now },
    isRevoked: () => false,
    generation: () => 0,
  });
  const conn = await acceptTls(pki, { cert: leaf.chainPem, key: leaf.keyPem });
  try {
    assert.equal(conn.socket.authorized, true);
    assert.equal(cached.verifySocket(conn.socket).spiffeId.uri, 'spiffe://example.org/ns/shop/sa/web');
    now += 40_000;
    assert.equal(policy.verifySocket(conn.socket).spiffeId.uri, 'spiffe://example.org/ns/shop/sa/web');
    assert.equal(cached.verifySocket(conn.socket).spiffeId.uri, 'spiffe://example.org/ns/shop/sa/web');
    now += 31_000;
    assert.throws(() => policy.verifySocket(conn.socket), { code: 'ERR_CA_CERT_EXPIRED' });
    assert.throws(() => cached.verifySocket(conn.socket), { code: 'ERR_CA_CERT_EXPIRED' });
  } finally {
    conn.close();
  }
});
