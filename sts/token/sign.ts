import { sign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';

/** What {@link signJwt} needs of a key: the pre-imported private key and the encoded header. */
export interface JwsSigner {
  readonly key: KeyObject;
  readonly encodedHeader: string;
}

/**
 * Signs a JWT as JWS compact serialization with ES256. Synchronous: one ECDSA P-256 sign is
 * tens of microseconds of CPU and no I/O, cheaper than a round trip through the thread pool.
 */
export function signJwt(claims: object, signer: JwsSigner): string {
  const input = `${signer.encodedHeader}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  // Passing the bare KeyObject takes node's fast path; the DER signature is then unpacked to the
  // raw r||s form that RFC 7518 §3.4 requires.
  const der = sign('sha256', Buffer.from(input), signer.key);
  return `${input}.${derToJose(der).toString('base64url')}`;
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
