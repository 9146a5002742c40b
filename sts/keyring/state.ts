import type { KeyMaterial } from './key-material.ts';

/** Life of a signing key: published first, then signing, then published until its tokens expire. */
export type KeyState = 'next' | 'current' | 'retiring';

/** One key of the keyring with the times (ms since epoch) of its transitions. */
export interface KeyRecord extends KeyMaterial {
  readonly state: KeyState;
  /** When it was first published (entered `next`). */
  readonly publishedAt: number;
  /** When it started signing (entered `current`). */
  readonly activatedAt?: number;
  /** When it stopped signing (entered `retiring`). */
  readonly retiredAt?: number;
}

/** Everything a keystore keeps: the keys and a pending on-demand rotation. */
export interface KeyringState {
  readonly keys: readonly KeyRecord[];
  /** Set by an on-demand rotation that waits for the next key's publication lead. */
  readonly rotateRequestedAt?: number;
}

/** Timing rules of the keyring, all in milliseconds. */
export interface KeyringPolicy {
  readonly rotationPeriodMs: number;
  /** JWKS cache period: a key is published at least this long before it signs. */
  readonly publishLeadMs: number;
  /** Longest token lifetime plus verifier skew: a retiring key stays published this long. */
  readonly retainAfterRetireMs: number;
}
