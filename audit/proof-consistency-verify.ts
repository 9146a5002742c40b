import { nodeHash } from './merkle.ts';
import { ProofInvalidError } from './errors.ts';

/** Input of {@link verifyConsistency}; hashes are raw 32-byte values. */
export interface ConsistencyInput {
  readonly fromSize: number;
  readonly toSize: number;
  readonly fromRoot: Uint8Array;
  readonly toRoot: Uint8Array;
  readonly proof: readonly Uint8Array[];
}

const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

/**
 * Verifies an RFC 9162 § 2.1.4.2 consistency proof: the tree of `toSize` leaves extends the
 * tree of `fromSize` leaves. Pure and offline. Throws {@link ProofInvalidError}.
 */
export function verifyConsistency(input: ConsistencyInput): void {
  const { fromSize, toSize } = input;
  if (!Number.isSafeInteger(fromSize) || !Number.isSafeInteger(toSize) || fromSize < 0 || fromSize > toSize)
    throw new ProofInvalidError(`size ${fromSize} is not between 0 and ${toSize}`);
  if (fromSize === 0) {
    if (input.proof.length) throw new ProofInvalidError('a proof from the empty tree must be empty');
    return;
  }
  if (fromSize === toSize) {
    if (input.proof.length) throw new ProofInvalidError('a proof between equal sizes must be empty');
    if (!same(input.fromRoot, input.toRoot)) throw new ProofInvalidError('equal sizes but different roots');
    return;
  }
  if (input.proof.length === 0) throw new ProofInvalidError('consistency proof is empty');
  for (const p of input.proof)
    if (p.length !== 32) throw new ProofInvalidError('proof element is not 32 bytes');
  const path = (fromSize & (fromSize - 1)) === 0 ? [input.fromRoot, ...input.proof] : [...input.proof];
  let fn = fromSize - 1;
  let sn = toSize - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr: Uint8Array = path[0]!;
  let sr: Uint8Array = path[0]!;
  for (const c of path.slice(1)) {
    if (sn === 0) throw new ProofInvalidError('proof is longer than the tree is deep');
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new ProofInvalidError('proof is shorter than the tree is deep');
  if (!same(fr, input.fromRoot)) throw new ProofInvalidError('proof does not lead to the old root');
  if (!same(sr, input.toRoot)) throw new ProofInvalidError('proof does not lead to the new root');
}
