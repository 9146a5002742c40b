// Rate limiter, deny list and config: small parts with their edge cases.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  FileKeystore,
  createDenyList,
  createRateLimiter,
  generateSigningKey,
  jwkThumbprint,
  loadStsConfig,
  parseStsConfig,
} from '../../sts/index.ts';

test('the rate limiter allows a burst, then asks to wait, then refills at the sustained rate', () => {
  let now = 0;
  const rl = createRateLimiter({ perSecond: 2, burst: 3, maxTracked: 10, clock: { now: () => now } });
  assert.deepEqual([rl.take('a'), rl.take('a'), rl.take('a')], [0, 0, 0]);
  assert.equal(rl.take('a'), 1);
  now += 500;
  assert.equal(rl.take('a'), 0);
  assert.equal(rl.take('b'), 0, 'each key has its own bucket');
});

test('the rate limiter tracks at most maxTracked keys, forgetting the least recently used', () => {
  const rl = createRateLimiter({ perSecond: 1, burst: 1, maxTracked: 3, clock: { now: () => 0 } });
  for (const k of ['a', 'b', 'c', 'd', 'e']) rl.take(k);
  assert.equal(rl.size(), 3);
  assert.throws(
    () => createRateLimiter({ perSecond: 0, burst: 1, maxTracked: 1, clock: { now: () => 0 } }),
    TypeError,
  );
});

test('deny-list entries expire and leave the published document', () => {
  let now = 1_000;
  const dl = createDenyList({ now: () => now });
  dl.revokeJti('j1', 2_000);
  dl.revokeSerial('0a', 5_000);
  assert.equal(dl.isJtiRevoked('j1'), true);
  assert.equal(dl.isSerialRevoked('0a'), true);
  const first = dl.snapshot();
  assert.equal(first.document.jtis.length, 1);
  now = 2_000;
  assert.equal(dl.isJtiRevoked('j1'), false);
  const second = dl.snapshot();
  assert.deepEqual(second.document.jtis, []);
  assert.notEqual(second.etag, first.etag);
  assert.equal(dl.revokeSerial('0a', 4_000), false, 'an earlier expiry does not shorten an entry');
});

test('the example sts.yaml loads, with paths resolved against its directory', () => {
  const config = loadStsConfig(new URL('../../config/sts.yaml', import.meta.url).pathname);
  assert.equal(config.keystore.type, 'file');
  assert.ok(config.tls.cert.endsWith('/certs/sts.pem'));
  assert.ok(config.identities.endsWith('/identities'));
});

const bad: { name: string; yaml: string; message: RegExp }[] = [
  {
    name: 'a misspelled key',
    yaml: 'issuerr: https://x\n',
    message: /issuerr: unknown key \(did you mean "issuer"\?\)/,
  },
  { name: 'an http issuer', yaml: 'issuer: http://x\n', message: /issuer: must be an https URL/ },
  {
    name: 'a TTL cap above 1h',
    yaml: 'tokens: { ttlCap: 2h }\n',
    message: /tokens.ttlCap: exceeds the global cap of 1h/,
  },
  { name: 'an unknown keystore type', yaml: 'keystore: { type: s3 }\n', message: /keystore/ },
  {
    name: 'a rotation shorter than the cache',
    yaml: 'keys: { rotationPeriod: 1m, jwksCachePeriod: 5m }\n',
    message: /keys.rotationPeriod: must be longer than keys.jwksCachePeriod/,
  },
  {
    name: 'a bad duration',
    yaml: 'keys: { rotationPeriod: soon }\n',
    message: /keys.rotationPeriod: "soon" is not a duration/,
  },
];
const base = {
  listen: 'listen: { port: 0 }',
  tls: 'tls: { cert: c.pem, key: k.pem, trustBundle: r.pem }',
  identities: 'identities: ids',
  issuer: 'issuer: https://sts.example',
  keystore: 'keystore: { type: file, dir: keys }',
};
for (const b of bad) {
  test(`sts.yaml with ${b.name} fails with one line naming file, key and problem`, () => {
    const dir = mkdtempSync(join(tmpdir(), 'sts-config-'));
    try {
      const key = b.yaml.split(':')[0]!;
      const lines = Object.entries(base)
        .filter(([k]) => k !== key)
        .map(([, v]) => v);
      const file = join(dir, 'sts.yaml');
      writeFileSync(file, `${[...lines, b.yaml.trim()].join('\n')}\n`);
      assert.throws(
        () => loadStsConfig(file),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'ERR_CONFIG_INVALID');
          assert.match(err.message, b.message);
          assert.ok(err.message.startsWith(file));
          assert.equal(err.message.includes('\n'), false);
          return true;
        },
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('parseStsConfig takes an object, fills documented defaults and refuses a missing issuer', () => {
  const c = parseStsConfig(
    {
      tls: { cert: 'c', key: 'k', trustBundle: 'r' },
      listen: {},
      identities: 'ids',
      issuer: 'https://sts.example',
      keystore: { type: 'vault', address: 'http://127.0.0.1:8200', mount: 'secret', path: 'p' },
    },
    'inline',
    '/base',
  );
  assert.equal(c.listen.port, 8443);
  assert.equal(c.keys.jwksCachePeriod, 300_000);
  assert.equal(c.tls.cert, '/base/c');
  assert.throws(() => parseStsConfig({ listen: {} }, 'inline'), {
    code: 'ERR_CONFIG_INVALID',
    message: /^inline: tls: is required/,
  });
});

test('kids are RFC 7638 thumbprints, equal to what jose computes; a non-EC key is a TypeError', async () => {
  const { calculateJwkThumbprint } = await import('jose');
  const key = generateSigningKey();
  assert.equal(
    key.kid,
    await calculateJwkThumbprint(key.publicJwk as Parameters<typeof calculateJwkThumbprint>[0]),
  );
  assert.equal(jwkThumbprint(key.publicJwk), key.kid);
  assert.throws(() => jwkThumbprint({ kty: 'RSA', n: 'x', e: 'AQAB' }), TypeError);
});

test('a file keystore refuses a master key shorter than 32 bytes as a caller mistake', () => {
  assert.throws(() => new FileKeystore({ dir: '/nonexistent', masterKey: new Uint8Array(31) }), TypeError);
});
