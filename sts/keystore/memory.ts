import { StsError } from '../errors.ts';
import type { KeyringState } from '../keyring/state.ts';
import { decodeKeyring, encodeKeyring } from './codec.ts';
import type { Keystore, KeystoreSnapshot } from './keystore.ts';

/**
 * An in-process {@link Keystore}: the reference implementation of the check-and-set contract,
 * for tests and single-process demos. It stores the serialized form so callers cannot mutate it.
 */
export class MemoryKeystore implements Keystore {
  readonly kind = 'memory';
  #stored: string | undefined;
  #version = 0;

  async read(): Promise<KeystoreSnapshot> {
    return {
      state:
        this.#stored === undefined ? undefined : decodeKeyring(JSON.parse(this.#stored), 'memory keystore'),
      version: this.#version,
    };
  }

  async write(state: KeyringState, expectedVersion: number): Promise<number> {
    if (expectedVersion !== this.#version) {
      throw new StsError(
        'ERR_STS_KEYSTORE_CONFLICT',
        `memory keystore: expected version ${expectedVersion}, found ${this.#version}`,
      );
    }
    this.#stored = JSON.stringify(encodeKeyring(state));
    return ++this.#version;
  }
}
