import { createHash, generateKeyPairSync } from 'node:crypto';
import type { JsonWebKey } from 'node:crypto';

/** A signing key pair as JWKs. `kid` is the RFC 7638 thumbprint of the public key. */
export interface KeyMaterial {
  readonly kid: string;
  readonly alg: 'ES256';
  readonly publicJwk: JsonWebKey;
  readonly privateJwk: JsonWebKey;
}

/** RFC 7638 JWK thumbprint (SHA-256, base64url) of an EC P-256 public key. */
export function jwkThumbprint(jwk: JsonWebKey): string {
  if (
    jwk.kty !== 'EC' ||
    typeof jwk.crv !== 'string' ||
    typeof jwk.x !== 'string' ||
    typeof jwk.y !== 'string'
  )
    throw new TypeError('"jwk" must be an EC public key with crv, x and y');
  const canonical = `{"crv":"${jwk.crv}","kty":"EC","x":"${jwk.x}","y":"${jwk.y}"}`;
  return createHash('sha256').update(canonical).digest('base64url');
}

/** Generates a fresh ES256 (P-256) key pair. The default `mintKey` of the keyring. */
export function generateSigningKey(): KeyMaterial {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const privateJwk = privateKey.export({ format: 'jwk' });
  const publicJwk = { kty: privateJwk.kty, crv: privateJwk.crv, x: privateJwk.x, y: privateJwk.y };
  return { kid: jwkThumbprint(publicJwk), alg: 'ES256', publicJwk, privateJwk };
}
