import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { join } from 'node:path';
import {
  DATA_FILES,
  loadAuditConfig,
  loadCheckpointKey,
  parseAuditConfig,
  parseVerifierKey,
} from '../../audit/index.ts';
import { tempDir } from './helpers.ts';

const CONFIG = new URL('../../config/audit.yaml', import.meta.url).pathname;
const good = {
  origin: 'example.org/audit',
  identities: 'ids',
  tls: { cert: 'a.pem', key: 'a-key.pem', trustBundle: 'root.pem' },
  dataDir: 'data',
  store: 'file:log',
};

test('the example config/audit.yaml loads, with paths resolved against its directory', () => {
  const c = loadAuditConfig(CONFIG);
  assert.equal(c.listen.port, 8444);
  assert.match(c.tls.cert, /\/certs\/audit\.pem$/);
  assert.match(c.store, /^file:\/.*\/data\/audit\/log$/);
  assert.equal(c.checkpoint.interval, 10_000);
});

test('a config object gets defaults and absolute paths', () => {
  const c = parseAuditConfig(good, 'x.yaml', '/etc/portcullis');
  assert.equal(c.dataDir, '/etc/portcullis/data');
  assert.equal(c.store, 'file:/etc/portcullis/log');
  assert.deepEqual(c.checkpoint, { everyRecords: 1000, interval: 10_000 });
  assert.equal(c.table, 'audit_records');
  assert.equal(parseAuditConfig({ ...good, store: 'postgres://u@h/db' }).store, 'postgres://u@h/db');
});

const bad: [string, Record<string, unknown>, string][] = [
  ['a misspelled key', { ...good, orign: 'x' }, 'x.yaml: orign: unknown key (did you mean "origin"?)'],
  [
    'a missing tls key',
    { ...good, tls: { cert: 'a', key: 'b' } },
    'x.yaml: tls.trustBundle: is required (string)',
  ],
  ['a bad store', { ...good, store: 'mysql://x' }, 'x.yaml: store: must be file:DIR or postgres://…'],
  ['a bad interval', { ...good, checkpoint: { interval: 'soon' } }, 'x.yaml: checkpoint.interval:'],
  ['an origin with spaces', { ...good, origin: 'my log' }, 'x.yaml: origin: must be one word'],
  ['a port out of range', { ...good, listen: { port: 70000 } }, 'x.yaml: listen.port:'],
  ['a bad table name', { ...good, table: 'Drop Table' }, 'x.yaml: table: must be a lowercase SQL identifier'],
];
for (const [label, raw, message] of bad) {
  test(`a config with ${label} fails with ERR_CONFIG_INVALID naming file and key`, () => {
    assert.throws(
      () => parseAuditConfig(raw, 'x.yaml'),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_CONFIG_INVALID');
        assert.ok(err.message.startsWith(message), err.message);
        assert.equal(err.message.split('\n').length, 1);
        return true;
      },
    );
  });
}

test('a missing config file is ERR_CONFIG_NOT_FOUND', () => {
  assert.throws(() => loadAuditConfig('/nonexistent/audit.yaml'), { code: 'ERR_CONFIG_NOT_FOUND' });
});

test('the checkpoint key is generated once (0600), reused, and published as a verifier key', () => {
  const tmp = tempDir();
  try {
    const a = loadCheckpointKey(tmp.dir, 'example.org/audit');
    const b = loadCheckpointKey(tmp.dir, 'example.org/audit');
    assert.equal(a.verifierKey, b.verifierKey);
    assert.equal(parseVerifierKey(a.verifierKey).name, 'example.org/audit');
  } finally {
    tmp.cleanup();
  }
});

test('a checkpoint key file readable by others, not Ed25519, or not a key is refused with ERR_AUDIT_KEY_INVALID', () => {
  const tmp = tempDir();
  try {
    const file = join(tmp.dir, DATA_FILES.key);
    loadCheckpointKey(tmp.dir, 'n');
    chmodSync(file, 0o644);
    assert.throws(() => loadCheckpointKey(tmp.dir, 'n'), {
      code: 'ERR_AUDIT_KEY_INVALID',
      message: /chmod 600/,
    });
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({
      format: 'pem',
      type: 'pkcs8',
    });
    writeFileSync(file, ec, { mode: 0o600 });
    chmodSync(file, 0o600);
    assert.throws(() => loadCheckpointKey(tmp.dir, 'n'), {
      code: 'ERR_AUDIT_KEY_INVALID',
      message: /Ed25519/,
    });
    writeFileSync(file, 'not a key');
    assert.throws(() => loadCheckpointKey(tmp.dir, 'n'), {
      code: 'ERR_AUDIT_KEY_INVALID',
      message: /not a PEM/,
    });
  } finally {
    tmp.cleanup();
  }
});
