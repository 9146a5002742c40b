import { createRequire } from 'node:module';
import type nodeVault from 'node-vault';
import { StsError } from '../errors.ts';
import type { KeyringState } from '../keyring/state.ts';
import { decodeKeyring, encodeKeyring } from './codec.ts';
import type { Keystore, KeystoreSnapshot } from './keystore.ts';

// node-vault (and the request library under it, ~30 MB resident) is loaded when a Vault keystore
// is made: an STS on the file keystore, and every other process that imports sts/, never loads it.
const loadNodeVault = (): typeof nodeVault =>
  createRequire(import.meta.url)('node-vault') as typeof nodeVault;

/** Options of {@link VaultKeystore}. */
export interface VaultKeystoreOptions {
  /** Vault address, e.g. `https://vault:8200`. */
  readonly address: string;
  /** KV v2 mount, e.g. `secret`. */
  readonly mount: string;
  /** Secret path under the mount. */
  readonly path: string;
  readonly token: string;
  readonly namespace?: string;
  /** PEM CA bundle for an https address. */
  readonly ca?: string;
  /** Per-request timeout in milliseconds. */
  readonly timeoutMs?: number;
}

interface VaultResponseError {
  response?: { statusCode?: number; body?: { errors?: unknown[] } };
  message?: string;
}

/**
 * A {@link Keystore} in one HashiCorp Vault KV v2 secret, written with check-and-set
 * (`options.cas`) so that STS replicas sharing it never overwrite each other's rotation.
 * Vault encrypts at rest; access is the Vault token's policy.
 */
export class VaultKeystore implements Keystore {
  readonly kind = 'vault';
  readonly #client: nodeVault.client;
  readonly #dataPath: string;
  readonly #metadataPath: string;
  readonly #where: string;

  constructor(options: VaultKeystoreOptions) {
    if (!options.token) throw new TypeError('"token" must be a non-empty Vault token');
    this.#client = loadNodeVault()({
      apiVersion: 'v1',
      endpoint: options.address,
      token: options.token,
      ...(options.namespace ? { namespace: options.namespace } : {}),
      requestOptions: { ...(options.ca ? { ca: options.ca } : {}), timeout: options.timeoutMs ?? 5000 },
    });
    this.#dataPath = `${options.mount}/data/${options.path}`;
    this.#metadataPath = `${options.mount}/metadata/${options.path}`;
    this.#where = `vault ${options.address} ${options.mount}/${options.path}`;
  }

  async read(): Promise<KeystoreSnapshot> {
    try {
      const res = (await this.#client.read(this.#dataPath)) as {
        data?: { data?: unknown; metadata?: { version?: unknown } };
      };
      const version = res.data?.metadata?.version;
      if (typeof version !== 'number') {
        throw new StsError(
          'ERR_STS_KEYSTORE_CORRUPT',
          `${this.#where}: response carries no metadata.version`,
        );
      }
      return { state: decodeKeyring(res.data?.data, this.#where), version };
    } catch (err) {
      if (err instanceof StsError) throw err;
      if (status(err) !== 404) throw this.#unavailable(err);
    }
    // No live version: the secret may never have existed, or its latest version was deleted;
    // check-and-set needs the current version number either way.
    try {
      const meta = (await this.#client.read(this.#metadataPath)) as { data?: { current_version?: unknown } };
      const current = meta.data?.current_version;
      return { state: undefined, version: typeof current === 'number' ? current : 0 };
    } catch (err) {
      if (status(err) === 404) return { state: undefined, version: 0 };
      throw this.#unavailable(err);
    }
  }

  async write(state: KeyringState, expectedVersion: number): Promise<number> {
    try {
      const res = (await this.#client.write(this.#dataPath, {
        options: { cas: expectedVersion },
        data: encodeKeyring(state),
      })) as { data?: { version?: unknown } };
      const version = res.data?.version;
      if (typeof version !== 'number')
        throw new StsError('ERR_STS_KEYSTORE_CORRUPT', `${this.#where}: write response carries no version`);
      return version;
    } catch (err) {
      if (err instanceof StsError) throw err;
      const e = err as VaultResponseError;
      const text = JSON.stringify(e.response?.body?.errors ?? e.message ?? '');
      if (status(err) === 400 && /check-and-set/i.test(text)) {
        throw new StsError(
          'ERR_STS_KEYSTORE_CONFLICT',
          `${this.#where}: another writer changed the keyring (expected version ${expectedVersion})`,
          { cause: err },
        );
      }
      throw this.#unavailable(err);
    }
  }

  #unavailable(err: unknown): StsError {
    const code = status(err);
    return new StsError(
      'ERR_STS_KEYSTORE_UNAVAILABLE',
      `${this.#where}: ${code ? `HTTP ${code}` : ((err as Error).message ?? 'request failed')}`,
      { cause: err },
    );
  }
}

function status(err: unknown): number | undefined {
  return (err as VaultResponseError).response?.statusCode;
}
