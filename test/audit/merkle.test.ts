import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  EMPTY_ROOT,
  MerkleFrontier,
  MerkleTree,
  leafHash,
  nodeHash,
  verifyConsistency,
  verifyInclusion,
} from '../../audit/index.ts';

// A literal transcription of RFC 9162 § 2.1 over leaf hashes, as the reference.
const k = (n: number) => 2 ** Math.ceil(Math.log2(n) - 1);
function mth(d: Buffer[]): Buffer {
  if (d.length === 0) return createHash('sha256').digest();
  if (d.length === 1) return d[0]!;
  const s = k(d.length);
  return nodeHash(mth(d.slice(0, s)), mth(d.slice(s)));
}
function path(m: number, d: Buffer[]): Buffer[] {
  if (d.length <= 1) return [];
  const s = k(d.length);
  return m < s
    ? [...path(m, d.slice(0, s)), mth(d.slice(s))]
    : [...path(m - s, d.slice(s)), mth(d.slice(0, s))];
}
function subproof(m: number, d: Buffer[], b: boolean): Buffer[] {
  if (m === d.length) return b ? [] : [mth(d)];
  const s = k(d.length);
  return m <= s
    ? [...subproof(m, d.slice(0, s), b), mth(d.slice(s))]
    : [...subproof(m - s, d.slice(s), false), mth(d.slice(0, s))];
}

const leaves = Array.from({ length: 40 }, (_, i) =>
  leafHash(createHash('sha256').update(`leaf ${i}`).digest()),
);
const tree = new MerkleTree();
for (const l of leaves) tree.append(l);

test('roots, inclusion and consistency proofs match RFC 9162 for every size up to 40', () => {
  const frontier = new MerkleFrontier();
  assert.deepEqual(tree.root(0), EMPTY_ROOT);
  for (let n = 1; n <= leaves.length; n++) {
    frontier.append(leaves[n - 1]!);
    const d = leaves.slice(0, n);
    const root = mth(d);
    assert.deepEqual(tree.root(n), root, `root ${n}`);
    assert.deepEqual(frontier.root(), root, `frontier root ${n}`);
    for (let m = 0; m < n; m++) {
      const proof = tree.inclusionProof(m, n);
      assert.deepEqual(proof, path(m, d), `path ${m}/${n}`);
      verifyInclusion({ leafHash: leaves[m]!, index: m, size: n, proof, root });
    }
    for (let m = 1; m < n; m++) {
      const proof = tree.consistencyProof(m, n);
      assert.deepEqual(proof, subproof(m, d, true), `consistency ${m}/${n}`);
      verifyConsistency({ fromSize: m, toSize: n, fromRoot: mth(leaves.slice(0, m)), toRoot: root, proof });
    }
  }
});

test('an inclusion proof fails for another leaf, index, size, root or a cut or padded path', () => {
  const n = 37;
  const root = tree.root(n);
  const proof = tree.inclusionProof(11, n);
  const ok = { leafHash: leaves[11]!, index: 11, size: n, proof, root };
  const bad: [string, Partial<typeof ok>][] = [
    ['other leaf', { leafHash: leaves[12]! }],
    ['other index', { index: 10 }],
    ['other size', { size: 20 }],
    ['other root', { root: tree.root(36) }],
    ['cut path', { proof: proof.slice(0, -1) }],
    ['padded path', { proof: [...proof, leaves[0]!] }],
    ['index out of range', { index: 37 }],
  ];
  for (const [name, change] of bad)
    assert.throws(() => verifyInclusion({ ...ok, ...change }), { code: 'ERR_AUDIT_PROOF_INVALID' }, name);
});

test('a consistency proof fails for a rewritten old tree, a wrong size or an empty path', () => {
  const proof = tree.consistencyProof(13, 29);
  const ok = { fromSize: 13, toSize: 29, fromRoot: tree.root(13), toRoot: tree.root(29), proof };
  verifyConsistency(ok);
  const forged = [...leaves.slice(0, 12), leaves[30]!];
  const bad: [string, Partial<typeof ok>][] = [
    ['rewritten old tree', { fromRoot: mth(forged) }],
    ['wrong new root', { toRoot: tree.root(28) }],
    ['wrong from size', { fromSize: 12 }],
    ['from above to', { fromSize: 30 }],
    ['empty proof', { proof: [] }],
    ['element of wrong length', { proof: [Buffer.alloc(31), ...proof.slice(1)] }],
  ];
  for (const [name, change] of bad)
    assert.throws(() => verifyConsistency({ ...ok, ...change }), { code: 'ERR_AUDIT_PROOF_INVALID' }, name);
  assert.throws(
    () =>
      verifyConsistency({ fromSize: 5, toSize: 5, fromRoot: tree.root(5), toRoot: tree.root(6), proof: [] }),
    { code: 'ERR_AUDIT_PROOF_INVALID' },
  );
});

test('the tree refuses proofs for sizes and indexes it does not have with ERR_AUDIT_PROOF_RANGE', () => {
  assert.throws(() => tree.inclusionProof(40, 40), { code: 'ERR_AUDIT_PROOF_RANGE' });
  assert.throws(() => tree.inclusionProof(0, 41), { code: 'ERR_AUDIT_PROOF_RANGE' });
  assert.throws(() => tree.consistencyProof(5, 41), { code: 'ERR_AUDIT_PROOF_RANGE' });
  assert.throws(() => tree.consistencyProof(6, 5), { code: 'ERR_AUDIT_PROOF_RANGE' });
  assert.throws(() => tree.root(-1), { code: 'ERR_AUDIT_PROOF_RANGE' });
  assert.throws(() => tree.leaf(1.5), { code: 'ERR_AUDIT_PROOF_RANGE' });
});
