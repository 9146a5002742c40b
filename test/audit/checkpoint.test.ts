import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import {
  createSealer,
  signSeal,
  verifySeal,
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

/** Signs arbitrary note text with the test key, as a collector would (and a sloppy one might). */
function signText(text: string, extraSignatures = ''): string {
  const sig = Buffer.concat([
    noteKeyId(signer.name, keys.publicKey),
    sign(null, Buffer.from(text), keys.privateKey),
  ]);
  return `${text}\n\u2014 ${signer.name} ${sig.toString('base64')}\n${extraSignatures}`;
}

test('checkpoint parsing is strict: well-signed notes that bend C2SP tlog-checkpoint are refused with ERR_AUDIT_CHECKPOINT_INVALID', () => {
  const root = body.root.toString('base64');
  const head = `chain-head ${body.chainHead}`;
  const table: [string, string][] = [
    ['an empty extension line', `example.org/audit\n42\n${root}\n\n${head}\n`],
    ['two chain-head lines', `example.org/audit\n42\n${root}\n${head}\nchain-head ${'cd'.repeat(32)}\n`],
    ['a size of 2^53', `example.org/audit\n9007199254740992\n${root}\n${head}\n`],
    ['a size above 2^53 that would round', `example.org/audit\n9007199254740993\n${root}\n${head}\n`],
    ['a size with a leading zero', `example.org/audit\n042\n${root}\n${head}\n`],
    ['a negative size', `example.org/audit\n-1\n${root}\n${head}\n`],
    ['an empty origin', `\n42\n${root}\n${head}\n`],
  ];
  for (const [label, text] of table)
    assert.throws(
      () => verifyCheckpoint(signText(text), vkey),
      { code: 'ERR_AUDIT_CHECKPOINT_INVALID' },
      label,
    );
  // The largest exact size is accepted.
  const max = verifyCheckpoint(signText(`example.org/audit\n9007199254740991\n${root}\n${head}\n`), vkey);
  assert.equal(max.size, Number.MAX_SAFE_INTEGER);
});

test('a failing signature by a known key refuses the note even when another signature by it verifies', () => {
  const note = signCheckpoint(body, signer);
  const good = note.split('\n').at(-2)!;
  const blob = Buffer.from(good.split(' ')[2]!, 'base64');
  blob[10] = blob[10]! ^ 0xff;
  const bad = `\u2014 ${signer.name} ${blob.toString('base64')}`;
  for (const [label, lines] of [
    ['bad before good', [bad, good]],
    ['good before bad', [good, bad]],
  ] as const) {
    const text = note.slice(0, note.indexOf('\n\n') + 2);
    assert.throws(
      () => verifyCheckpoint(`${text}${lines.join('\n')}\n`, vkey),
      { code: 'ERR_AUDIT_CHECKPOINT_SIGNATURE' },
      label,
    );
  }
  // A signature by an unknown key is ignored, as the spec says.
  const other = generateKeyPairSync('ed25519');
  const foreign = signCheckpoint(body, { name: 'someone.else/log', ...other })
    .split('\n')
    .at(-2)!;
  assert.equal(verifyCheckpoint(`${note}${foreign}\n`, vkey).size, 42);
});

test('a seal is a signed note of origin, size and chain head; it opens only with a trusted key and is no checkpoint', () => {
  const seal = signSeal({ origin: 'example.org/audit', size: 7, chainHead: body.chainHead }, signer);
  assert.deepEqual(verifySeal(seal, [parseVerifierKey(vkey)]), {
    origin: 'example.org/audit',
    size: 7,
    chainHead: body.chainHead,
    signer: signer.name,
  });
  const other = generateKeyPairSync('ed25519');
  assert.throws(() => verifySeal(seal, [parseVerifierKey(formatVerifierKey(signer.name, other.publicKey))]), {
    code: 'ERR_AUDIT_CHECKPOINT_SIGNATURE',
  });
  assert.throws(() => verifyCheckpoint(seal, vkey), { code: 'ERR_AUDIT_CHECKPOINT_INVALID' });
  const sealer = createSealer(signer, 'example.org/audit');
  assert.equal(sealer.open(seal)?.size, 7);
  assert.equal(sealer.open(seal.replace('\n7\n', '\n8\n')), undefined);
});
