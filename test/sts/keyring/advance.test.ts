// The keyring's pure state machine: next → current → retiring → gone, with the publication lead.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { advanceKeyring, generateSigningKey, requestRotation } from '../../../sts/index.ts';
import type { KeyringPolicy, KeyringState } from '../../../sts/index.ts';

const POLICY: KeyringPolicy = { rotationPeriodMs: 10_000, publishLeadMs: 2_000, retainAfterRetireMs: 5_000 };
const T0 = 1_800_000_000_000;
const states = (s: KeyringState) => s.keys.map((k) => k.state);
const kid = (s: KeyringState, state: string) => s.keys.find((k) => k.state === state)?.kid;

test('an empty keyring gets a current key and a published next key', () => {
  const step = advanceKeyring(undefined, T0, POLICY, generateSigningKey);
  assert.deepEqual(states(step.state), ['current', 'next']);
  assert.deepEqual(
    step.changes.map((c) => c.kind),
    ['created', 'created'],
  );
  assert.equal(step.nextStepAt, T0 + POLICY.rotationPeriodMs);
});

test('nothing changes before the rotation period is over', () => {
  const s0 = advanceKeyring(undefined, T0, POLICY, generateSigningKey).state;
  const step = advanceKeyring(s0, T0 + 9_999, POLICY, generateSigningKey);
  assert.deepEqual(step.changes, []);
  assert.equal(step.state.keys.length, 2);
});

test('at the end of the period the next key signs, the old one retires, and a new next key is published', () => {
  const s0 = advanceKeyring(undefined, T0, POLICY, generateSigningKey).state;
  const step = advanceKeyring(s0, T0 + 10_000, POLICY, generateSigningKey);
  assert.deepEqual(states(step.state), ['current', 'next', 'retiring']);
  assert.equal(kid(step.state, 'current'), kid(s0, 'next'));
  assert.equal(kid(step.state, 'retiring'), kid(s0, 'current'));
  assert.ok(step.changes.some((c) => c.kind === 'rotated'));
});

test('a retiring key stays published until its tokens expire, then is removed', () => {
  const s0 = advanceKeyring(undefined, T0, POLICY, generateSigningKey).state;
  const s1 = advanceKeyring(s0, T0 + 10_000, POLICY, generateSigningKey).state;
  assert.equal(advanceKeyring(s1, T0 + 14_999, POLICY, generateSigningKey).state.keys.length, 3);
  const s2 = advanceKeyring(s1, T0 + 15_000, POLICY, generateSigningKey);
  assert.deepEqual(states(s2.state), ['current', 'next']);
  assert.deepEqual(s2.changes, [{ kind: 'removed', kid: kid(s0, 'current') }]);
});

test('an on-demand rotation waits until the next key has been published for the lead', () => {
  const s0 = advanceKeyring(undefined, T0, POLICY, generateSigningKey).state;
  const requested = requestRotation(s0, T0 + 500);
  const early = advanceKeyring(requested, T0 + 1_999, POLICY, generateSigningKey);
  assert.equal(kid(early.state, 'current'), kid(s0, 'current'), 'not yet');
  assert.equal(early.nextStepAt, T0 + 2_000);
  const onTime = advanceKeyring(early.state, T0 + 2_000, POLICY, generateSigningKey);
  assert.equal(kid(onTime.state, 'current'), kid(s0, 'next'));
  assert.equal(onTime.state.rotateRequestedAt, undefined);
});

test('a keyring that lost its current key promotes nothing unpublished: it mints a new current', () => {
  const s0 = advanceKeyring(undefined, T0, POLICY, generateSigningKey).state;
  const onlyNext: KeyringState = { keys: s0.keys.filter((k) => k.state === 'next') };
  const step = advanceKeyring(onlyNext, T0 + 1, POLICY, generateSigningKey);
  assert.deepEqual(states(step.state), ['current', 'next']);
  assert.equal(kid(step.state, 'next'), kid(s0, 'next'));
});
