import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import {
  formatVerifierKey,
  noteKeyId,
  parseVerifierKey,
  signCheckpoint,
  verifyCheckpoint,
} from '../../audit/index.ts';

const keys = generateKeyPairSync('ed25519');
const signer = { name: 'example.org/audit', ...keys };
const vkey = formatVerifierKey(signer.name, keys.publicKey);
const body = {
  origin: 'example.org/audit',
  size: 42,
  root: createHash('sha256').update('root').digest(),
  chainHead: 'ab'.repeat(32),
};

test('a signed checkpoint is a C2SP note that verifies with the verifier key and returns its body', () => {
  const note = signCheckpoint(body, signer);
  const lines = note.split('\n');
  assert.equal(lines[0], body.origin);
  assert.equal(lines[1], '42');
  assert.equal(lines[2], body.root.toString('base64'));
  assert.equal(lines[3], `chain-head ${body.chainHead}`);
  assert.equal(lines[4], '');
  assert.match(lines[5]!, /^\u2014 example\.org\/audit [A-Za-z0-9+/]+=*$/);
  const got = verifyCheckpoint(note, vkey);
  assert.equal(got.size, 42);
  assert.deepEqual(Buffer.from(got.root), body.root);
  assert.equal(got.chainHead, body.chainHead);
});

test('the key id is the first 4 bytes of SHA-256(name || LF || 0x01 || key)', () => {
  const raw = Buffer.from(keys.publicKey.export({ format: 'jwk' }).x!, 'base64url');
  const expected = createHash('sha256')
    .update(Buffer.concat([Buffer.from(`${signer.name}\n`), Buffer.from([1]), raw]))
    .digest()
    .subarray(0, 4);
  assert.deepEqual(noteKeyId(signer.name, keys.publicKey), expected);
  assert.equal(vkey.split('+')[1], expected.toString('hex'));
  assert.equal(parseVerifierKey(vkey).keyId.toString('hex'), expected.toString('hex'));
});

test('a checkpoint fails to verify when altered, signed by another key, or malformed', () => {
  const note = signCheckpoint(body, signer);
  const other = generateKeyPairSync('ed25519');
  const cases: [string, string, string, string][] = [
    ['size changed', note.replace('\n42\n', '\n43\n'), vkey, 'ERR_AUDIT_CHECKPOINT_SIGNATURE'],
    [
      'chain head changed',
      note.replace(body.chainHead, 'cd'.repeat(32)),
      vkey,
      'ERR_AUDIT_CHECKPOINT_SIGNATURE',
    ],
    ['other key', note, formatVerifierKey(signer.name, other.publicKey), 'ERR_AUDIT_CHECKPOINT_SIGNATURE'],
    ['other name', note, formatVerifierKey('someone', keys.publicKey), 'ERR_AUDIT_CHECKPOINT_SIGNATURE'],
    ['no signature block', 'example.org/audit\n42\n', vkey, 'ERR_AUDIT_CHECKPOINT_INVALID'],
    [
      'garbage signature line',
      `${note.slice(0, note.indexOf('\n\n') + 2)}not a signature\n`,
      vkey,
      'ERR_AUDIT_CHECKPOINT_INVALID',
    ],
  ];
  for (const [name, text, key, code] of cases)
    assert.throws(() => verifyCheckpoint(text, key), { code }, name);
});

test('a well-signed note without a chain head is refused with ERR_AUDIT_CHECKPOINT_INVALID', () => {
  const note = signCheckpoint(body, signer);
  // Re-sign a body without the extension line by hand.
  const text = `example.org/audit\n42\n${body.root.toString('base64')}\n`;
  const sig = Buffer.concat([
    noteKeyId(signer.name, keys.publicKey),
    sign(null, Buffer.from(text), keys.privateKey),
  ]);
  assert.ok(note);
  assert.throws(() => verifyCheckpoint(`${text}\n\u2014 ${signer.name} ${sig.toString('base64')}\n`, vkey), {
    code: 'ERR_AUDIT_CHECKPOINT_INVALID',
  });
});

test('verifier keys with a wrong id, algorithm or shape are refused with ERR_AUDIT_KEY_INVALID', () => {
  const [name, id] = vkey.split('+') as [string, string];
  const key = vkey.slice(name.length + id.length + 2);
  const ed = Buffer.from(key, 'base64');
  const table = [
    `${name}+00000000+${key}`,
    `${name}+${id}`,
    `${name}+${id}+${Buffer.concat([Buffer.from([2]), ed.subarray(1)]).toString('base64')}`,
    `${name}+${id}+${ed.subarray(0, 20).toString('base64')}`,
    `bad name+${id}+${key}`,
  ];
  for (const v of table) assert.throws(() => parseVerifierKey(v), { code: 'ERR_AUDIT_KEY_INVALID' }, v);
  assert.equal(parseVerifierKey(vkey).name, name);
});
