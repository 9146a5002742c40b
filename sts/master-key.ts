import { StsError } from './errors.ts';

/** Name of the environment variable holding the file keystore's master key. */
export const MASTER_KEY_ENV = 'PORTCULLIS_MASTER_KEY';
/** Shortest master key accepted, in bytes (AES-256 needs 32). */
export const MASTER_KEY_MIN_BYTES = 32;

const BASE64 = /^(?:[A-Za-z0-9+/]+|[A-Za-z0-9_-]+)={0,2}$/;

/**
 * Decodes the master key: base64 (standard or URL-safe alphabet, padding optional) of at least
 * 32 random bytes, e.g. `openssl rand -base64 32`. Throws `ERR_STS_MASTER_KEY_MISSING` when
 * absent and `ERR_STS_MASTER_KEY_INVALID` when not base64 or too short; the message never
 * contains the value.
 */
export function parseMasterKey(value: string | undefined, name = MASTER_KEY_ENV): Uint8Array {
  if (value === undefined || value.trim() === '') {
    throw new StsError(
      'ERR_STS_MASTER_KEY_MISSING',
      `${name} is not set: the file keystore seals signing keys under it (generate one with: openssl rand -base64 32)`,
    );
  }
  const text = value.trim();
  if (!BASE64.test(text) || text.replace(/=+$/, '').length % 4 === 1) {
    throw new StsError(
      'ERR_STS_MASTER_KEY_INVALID',
      `${name} is not base64 (generate one with: openssl rand -base64 32)`,
    );
  }
  return checkMasterKeyLength(
    new Uint8Array(Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64')),
    name,
  );
}

/** Refuses a master key shorter than {@link MASTER_KEY_MIN_BYTES} with `ERR_STS_MASTER_KEY_INVALID`. */
export function checkMasterKeyLength(bytes: Uint8Array, name = MASTER_KEY_ENV): Uint8Array {
  if (bytes.length < MASTER_KEY_MIN_BYTES) {
    throw new StsError(
      'ERR_STS_MASTER_KEY_INVALID',
      `${name} decodes to ${bytes.length} bytes; at least ${MASTER_KEY_MIN_BYTES} are required (generate one with: openssl rand -base64 32)`,
    );
  }
  return bytes;
}
