// signInput's DER → JOSE conversion, checked against node's own ieee-p1363 verification.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, verify } from 'node:crypto';
import { derToJose, jwsSigningInput, signInput } from '../../../sts/token/sign.ts';

test('300 signatures (short r and s included) verify as raw r||s', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const encodedHeader = Buffer.from('{"alg":"ES256"}').toString('base64url');
  for (let i = 0; i < 300; i++) {
    const input = jwsSigningInput({ i }, encodedHeader);
    const jws = `${input}.${signInput(privateKey, input)}`;
    const [h, p, s] = jws.split('.');
    const sig = Buffer.from(s!, 'base64url');
    assert.equal(sig.length, 64);
    assert.ok(verify('sha256', Buffer.from(`${h}.${p}`), { key: publicKey, dsaEncoding: 'ieee-p1363' }, sig));
  }
});

test('derToJose refuses what is not a DER ECDSA signature', () => {
  assert.throws(() => derToJose(new Uint8Array([0x31, 0x00])), TypeError);
  assert.throws(() => derToJose(new Uint8Array([0x30, 0x06, 0x03, 0x01, 0x01, 0x02, 0x01, 0x01])), TypeError);
  const tooLong = new Uint8Array([0x30, 0x26, 0x02, 0x21, 0x01, ...new Array(32).fill(1), 0x02, 0x01, 0x01]);
  assert.throws(() => derToJose(tooLong), /longer than 32 bytes/);
});
