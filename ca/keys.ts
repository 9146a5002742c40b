import { createPrivateKey, createPublicKey, KeyObject } from 'node:crypto';
import { CaError } from './errors.ts';

/** Key algorithms for CA and workload keys. ECDSA P-256 is the default. */
export const KEY_ALGORITHMS = ['ecdsa-p256', 'ed25519', 'rsa-3072'] as const;
export type KeyAlgorithm = (typeof KEY_ALGORITHMS)[number];

/** WebCrypto parameters for generating a key pair and signing with it. */
export function webCryptoAlgorithm(
  alg: KeyAlgorithm,
): RsaHashedKeyGenParams | EcKeyGenParams | { name: 'Ed25519' } {
  switch (alg) {
    case 'ecdsa-p256':
      return { name: 'ECDSA', namedCurve: 'P-256' };
    case 'ed25519':
      return { name: 'Ed25519' };
    case 'rsa-3072':
      return {
        name: 'RSASSA-PKCS1-v1_5',
        modulusLength: 3072,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: 'SHA-256',
      };
    default:
      throw new TypeError(`unknown key algorithm "${String(alg)}"`);
  }
}

/** The signing algorithm to pass to the certificate generators for a key of `alg`. */
export function signingAlgorithm(alg: KeyAlgorithm): Algorithm | EcdsaParams {
  switch (alg) {
    case 'ecdsa-p256':
      return { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams;
    case 'ed25519':
      return { name: 'Ed25519' };
    case 'rsa-3072':
      return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as Algorithm;
    default:
      throw new TypeError(`unknown key algorithm "${String(alg)}"`);
  }
}

/** Generates an extractable key pair (the private key is written to disk by the caller). */
export async function generateKeyPair(alg: KeyAlgorithm): Promise<CryptoKeyPair> {
  return (await crypto.subtle.generateKey(webCryptoAlgorithm(alg), true, [
    'sign',
    'verify',
  ])) as CryptoKeyPair;
}

/** PKCS#8 PEM of a private CryptoKey. */
export async function exportPrivateKeyPem(key: CryptoKey): Promise<string> {
  return KeyObject.from(key).export({ type: 'pkcs8', format: 'pem' }).toString();
}

/** Which {@link KeyAlgorithm} a Node key object is, or a CaError for anything else. */
export function keyAlgorithmOf(key: KeyObject): KeyAlgorithm {
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails;
  if (type === 'ec' && details?.namedCurve === 'prime256v1') return 'ecdsa-p256';
  if (type === 'ed25519') return 'ed25519';
  if (type === 'rsa' && (details?.modulusLength ?? 0) >= 3072) return 'rsa-3072';
  throw new CaError(
    'ERR_CA_KEY_UNSUPPORTED',
    `unsupported key (${type}${details?.namedCurve ? ` ${details.namedCurve}` : ''})`,
  );
}

/**
 * Imports a PEM private key into a WebCrypto key pair (the public half derived from it).
 * Throws CaError `ERR_CA_INVALID` when the PEM is not a supported private key.
 */
export async function importPrivateKeyPem(
  pemText: string,
  label: string,
): Promise<{ keys: CryptoKeyPair; algorithm: KeyAlgorithm }> {
  let key: KeyObject;
  try {
    key = createPrivateKey(pemText);
  } catch (err) {
    throw new CaError('ERR_CA_INVALID', `${label}: not a PEM private key`, { cause: err });
  }
  const algorithm = keyAlgorithmOf(key);
  const params = webCryptoAlgorithm(algorithm);
  const privateKey = await crypto.subtle.importKey(
    'pkcs8',
    key.export({ type: 'pkcs8', format: 'der' }),
    params,
    true,
    ['sign'],
  );
  const publicKey = await crypto.subtle.importKey(
    'spki',
    createPublicKey(key).export({ type: 'spki', format: 'der' }),
    params,
    true,
    ['verify'],
  );
  return { keys: { privateKey, publicKey }, algorithm };
}

/** Wraps DER bytes in a PEM block. */
export function pem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  return `-----BEGIN ${label}-----\n${b64.replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END ${label}-----\n`;
}
