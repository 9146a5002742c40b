import type { KeyMaterial } from './key-material.ts';
import type { KeyRecord, KeyringPolicy, KeyringState } from './state.ts';

/** What changed in one step of {@link advanceKeyring}, for audit events and metrics. */
export type KeyringChange =
  | { readonly kind: 'created'; readonly kid: string; readonly state: 'next' | 'current' }
  | { readonly kind: 'rotated'; readonly kid: string; readonly previousKid: string }
  | { readonly kind: 'removed'; readonly kid: string };

/** Result of {@link advanceKeyring}. */
export interface KeyringStep {
  readonly state: KeyringState;
  readonly changes: readonly KeyringChange[];
  /** When the keyring next needs a step (ms since epoch). */
  readonly nextStepAt: number;
}

/**
 * Moves the keyring forward to `now`. Pure: keys come from `mint`, time from `now`.
 * - retiring keys whose tokens have all expired are dropped;
 * - an empty keyring gets a `current` key at once (no verifier can hold a stale view of nothing);
 * - there is always one `next` key, published ahead of use;
 * - the current key is replaced when its period is over (or a rotation was requested), but only
 *   by a next key published for at least `publishLeadMs`; it then retires.
 */
export function advanceKeyring(
  state: KeyringState | undefined,
  now: number,
  policy: KeyringPolicy,
  mint: () => KeyMaterial,
): KeyringStep {
  const changes: KeyringChange[] = [];
  let keys: KeyRecord[] = [];
  for (const key of state?.keys ?? []) {
    if (key.state === 'retiring' && (key.retiredAt ?? 0) + policy.retainAfterRetireMs <= now) {
      changes.push({ kind: 'removed', kid: key.kid });
    } else keys.push(key);
  }
  let rotateRequestedAt = state?.rotateRequestedAt;

  let current = keys.find((k) => k.state === 'current');
  if (!current) {
    current = { ...mint(), state: 'current', publishedAt: now, activatedAt: now };
    keys.push(current);
    changes.push({ kind: 'created', kid: current.kid, state: 'current' });
  }
  let next = keys.find((k) => k.state === 'next');
  if (!next) {
    next = { ...mint(), state: 'next', publishedAt: now };
    keys.push(next);
    changes.push({ kind: 'created', kid: next.kid, state: 'next' });
  }

  const dueAt = Math.min(
    (current.activatedAt ?? now) + policy.rotationPeriodMs,
    rotateRequestedAt ?? Number.POSITIVE_INFINITY,
  );
  const readyAt = next.publishedAt + policy.publishLeadMs;
  if (now >= dueAt && now >= readyAt) {
    const oldKid = current.kid;
    const newKid = next.kid;
    keys = keys.map((k) => {
      if (k.kid === oldKid) return { ...k, state: 'retiring', retiredAt: now };
      if (k.kid === newKid) return { ...k, state: 'current', activatedAt: now };
      return k;
    });
    changes.push({ kind: 'rotated', kid: newKid, previousKid: oldKid });
    const fresh: KeyRecord = { ...mint(), state: 'next', publishedAt: now };
    keys.push(fresh);
    changes.push({ kind: 'created', kid: fresh.kid, state: 'next' });
    rotateRequestedAt = undefined;
    current = keys.find((k) => k.kid === newKid)!;
    next = fresh;
  }

  const retireTimes = keys
    .filter((k) => k.state === 'retiring')
    .map((k) => (k.retiredAt ?? now) + policy.retainAfterRetireMs);
  const rotationAt = Math.max(
    Math.min(
      (current.activatedAt ?? now) + policy.rotationPeriodMs,
      rotateRequestedAt ?? Number.POSITIVE_INFINITY,
    ),
    next.publishedAt + policy.publishLeadMs,
  );
  const nextStepAt = Math.min(rotationAt, ...retireTimes);
  const order = { current: 0, next: 1, retiring: 2 } as const;
  keys.sort((a, b) => order[a.state] - order[b.state] || b.publishedAt - a.publishedAt);
  return {
    state: rotateRequestedAt === undefined ? { keys } : { keys, rotateRequestedAt },
    changes,
    nextStepAt,
  };
}

/** Marks a rotation as requested at `now`; {@link advanceKeyring} performs it once the next key may sign. */
export function requestRotation(state: KeyringState, now: number): KeyringState {
  return { ...state, rotateRequestedAt: Math.min(state.rotateRequestedAt ?? now, now) };
}
