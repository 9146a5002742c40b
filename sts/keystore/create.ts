import { readFileSync } from 'node:fs';
import { StsError } from '../errors.ts';
import type { StsConfig } from '../config.ts';
import { parseMasterKey } from '../master-key.ts';
import { FileKeystore } from './file.ts';
import type { Keystore } from './keystore.ts';
import { VaultKeystore } from './vault.ts';

/** Secrets {@link createKeystore} may take from the caller instead of the environment. */
export interface KeystoreSecrets {
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Master key for the file keystore: base64 text (as in the environment) or raw bytes. */
  readonly masterKey?: string | Uint8Array;
  readonly vaultToken?: string;
}

/**
 * Builds the keystore a config names. The file keystore needs a master key of at least 32
 * bytes (`ERR_STS_MASTER_KEY_MISSING` / `_INVALID` otherwise); the vault keystore needs a token
 * in its `tokenEnv` variable (`ERR_STS_KEYSTORE_UNAVAILABLE` otherwise).
 */
export function createKeystore(config: StsConfig['keystore'], secrets: KeystoreSecrets = {}): Keystore {
  const env = secrets.env ?? process.env;
  if (config.type === 'file') {
    const masterKey =
      secrets.masterKey instanceof Uint8Array
        ? secrets.masterKey
        : parseMasterKey(secrets.masterKey ?? env[config.masterKeyEnv], config.masterKeyEnv);
    if (masterKey.length < 32) parseMasterKey(Buffer.from(masterKey).toString('base64'), config.masterKeyEnv);
    return new FileKeystore({ dir: config.dir, masterKey, masterKeyName: config.masterKeyEnv });
  }
  const token = secrets.vaultToken ?? env[config.tokenEnv];
  if (!token) {
    throw new StsError(
      'ERR_STS_KEYSTORE_UNAVAILABLE',
      `${config.tokenEnv} is not set: the vault keystore needs a Vault token`,
    );
  }
  return new VaultKeystore({
    address: config.address,
    mount: config.mount,
    path: config.path,
    token,
    ...(config.namespace ? { namespace: config.namespace } : {}),
    ...(config.caFile ? { ca: readFileSync(config.caFile, 'utf8') } : {}),
  });
}
