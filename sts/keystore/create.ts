import { readConfiguredFile } from '../../core/index.ts';
import { StsError } from '../errors.ts';
import type { StsConfig } from '../config.ts';
import { checkMasterKeyLength, parseMasterKey } from '../master-key.ts';
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
        ? checkMasterKeyLength(secrets.masterKey, config.masterKeyEnv)
        : parseMasterKey(secrets.masterKey ?? env[config.masterKeyEnv], config.masterKeyEnv);
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
    ...(config.caFile ? { ca: readConfiguredFile(config.caFile, 'keystore.caFile') } : {}),
  });
}
