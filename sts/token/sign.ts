import { sign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';

/** The JWS signing input `base64url(header).base64url(claims)` (RFC 7515 §5.1). */
export function jwsSigningInput(claims: object, encodedHeader: string): string {
  return `${encodedHeader}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
}

/**
 * The base64url JWS signature of `input`: ES256 for a P-256 key (raw r||s, RFC 7518 §3.4),
 * EdDSA for an Ed25519 key. Synchronous; the STS calls it through its signing pool.
 */
export function signInput(key: KeyObject, input: string): string {
  if (key.asymmetricKeyType !== 'ec') return sign(null, Buffer.from(input), key).toString('base64url');
  // The bare KeyObject takes node's fast path; the DER signature is then unpacked to r||s.
  return derToJose(sign('sha256', Buffer.from(input), key)).toString('base64url');
}

/** Converts an ASN.1 DER ECDSA-Sig-Value (SEQUENCE of two INTEGERs) to 64 bytes r||s for P-256. */
export function derToJose(der: Uint8Array): Buffer {
  let offset = 2;
  if (der[0] !== 0x30) throw new TypeError('not a DER ECDSA signature');
  if (der[1]! & 0x80) offset += der[1]! & 0x7f;
  const out = Buffer.alloc(64);
  for (let i = 0; i < 2; i++) {
    if (der[offset] !== 0x02) throw new TypeError('not a DER ECDSA signature');
    const len = der[offset + 1]!;
    let start = offset + 2;
    let n = len;
    while (n > 32 && der[start] === 0) {
      start++;
      n--;
    }
    if (n > 32) throw new TypeError('ECDSA integer longer than 32 bytes');
    out.set(der.subarray(start, start + n), i * 32 + (32 - n));
    offset += 2 + len;
  }
  return out;
}
