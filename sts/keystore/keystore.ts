import type { KeyringState } from '../keyring/state.ts';

/** What {@link Keystore.read} returns: the stored keyring (if any) and its version (0 when never written). */
export interface KeystoreSnapshot {
  readonly state: KeyringState | undefined;
  readonly version: number;
}

/**
 * Where the keyring lives. One small interface so that `file`, `vault` and the in-memory store
 * are interchangeable and pass one conformance suite (test/sts/keystore/conformance.ts).
 * Writes are check-and-set so that several STS replicas can share one keyring.
 */
export interface Keystore {
  /** Short name for logs and metrics: `memory`, `file`, `vault`. */
  readonly kind: string;
  /** Reads the keyring. Throws `ERR_STS_KEYSTORE_*` or `ERR_STS_MASTER_KEY_WRONG`; never writes. */
  read(): Promise<KeystoreSnapshot>;
  /**
   * Stores `state` if the stored version is still `expectedVersion` and returns the new version.
   * Throws `ERR_STS_KEYSTORE_CONFLICT` when another writer got there first.
   */
  write(state: KeyringState, expectedVersion: number): Promise<number>;
}
