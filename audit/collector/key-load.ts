import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../../ca/index.ts';
import { CheckpointError } from '../errors.ts';
import type { CheckpointSigner } from '../checkpoint.ts';
import { formatVerifierKey } from '../checkpoint.ts';

/** File names in the collector's data directory. */
export const DATA_FILES = {
  key: 'checkpoint-key.pem',
  verifierKey: 'checkpoint.vkey',
  latest: 'checkpoint.latest',
} as const;

/**
 * Loads the collector's Ed25519 checkpoint key from `dataDir`, creating it (0600) on first
 * start, and writes the public verifier key next to it. The key is the collector's own, not the
 * store's: whoever can rewrite the store cannot also sign checkpoints. Refuses a key file that
 * others can read, or that is not Ed25519, with `ERR_AUDIT_KEY_INVALID`.
 */
export function loadCheckpointKey(
  dataDir: string,
  name: string,
  deps: { generate?: () => { privateKey: KeyObject } } = {},
): CheckpointSigner & { verifierKey: string } {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = join(dataDir, DATA_FILES.key);
  let privateKey: KeyObject;
  let pem: string | undefined;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (pem === undefined) {
    privateKey = (deps.generate ?? (() => generateKeyPairSync('ed25519')))().privateKey;
    writeFileAtomic(file, privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, 0o600);
  } else {
    if (statSync(file).mode & 0o077)
      throw new CheckpointError(
        'ERR_AUDIT_KEY_INVALID',
        `${file}: must not be readable by group or others (chmod 600)`,
      );
    try {
      privateKey = createPrivateKey(pem);
    } catch (err) {
      throw new CheckpointError('ERR_AUDIT_KEY_INVALID', `${file}: not a PEM private key`, { cause: err });
    }
    if (privateKey.asymmetricKeyType !== 'ed25519')
      throw new CheckpointError('ERR_AUDIT_KEY_INVALID', `${file}: the checkpoint key must be Ed25519`);
  }
  const publicKey = createPublicKey(privateKey);
  const verifierKey = formatVerifierKey(name, publicKey);
  writeFileAtomic(join(dataDir, DATA_FILES.verifierKey), `${verifierKey}\n`, 0o644);
  return { name, privateKey, publicKey, verifierKey };
}
