import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, verify } from 'node:crypto';
import { createSigningPool } from '../../sts/token/sign-pool.ts';

const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ed = generateKeyPairSync('ed25519');

function verifies(input: string, sig: string, kp: typeof ec, isEc: boolean): boolean {
  const key = isEc ? { key: kp.publicKey, dsaEncoding: 'ieee-p1363' as const } : kp.publicKey;
  return verify(isEc ? 'sha256' : null, Buffer.from(input), key, Buffer.from(sig, 'base64url'));
}

test('the pool signs concurrent inputs under several keys; ES256 signatures are raw r||s', async () => {
  const pool = createSigningPool();
  try {
    const inputs = Array.from({ length: 200 }, (_, i) => `header.payload-${i}`);
    const sigs = await Promise.all(
      inputs.map((input, i) => pool.sign(input, i % 2 ? ec.privateKey : ed.privateKey)),
    );
    sigs.forEach((sig, i) => {
      assert.ok(verifies(inputs[i]!, sig, i % 2 ? ec : ed, i % 2 === 1), `signature ${i}`);
      if (i % 2) assert.equal(Buffer.from(sig, 'base64url').length, 64);
    });
    assert.equal(verifies('header.tampered', sigs[1]!, ec, true), false);
  } finally {
    await pool.close();
  }
});

test('a pool whose worker is gone still signs, on the calling thread', async () => {
  const pool = createSigningPool();
  const pending = Array.from({ length: 20 }, (_, i) => pool.sign(`in-${i}`, ec.privateKey));
  await pool.close();
  const sigs = await Promise.all([...pending, pool.sign('after-close', ec.privateKey)]);
  assert.ok(verifies('after-close', sigs[20]!, ec, true));
  sigs.slice(0, 20).forEach((s, i) => assert.ok(verifies(`in-${i}`, s, ec, true)));
});

test('without a worker the pool signs on the calling thread', async () => {
  const pool = createSigningPool({ worker: false });
  const sig = await pool.sign('header.payload', ec.privateKey);
  assert.ok(verifies('header.payload', sig, ec, true));
  await pool.close();
});
