import { nodeHash } from './merkle.ts';
import { ProofInvalidError } from './errors.ts';

/** Input of {@link verifyInclusion}; hashes are raw 32-byte values. */
export interface InclusionInput {
  /** The leaf hash (SHA-256(0x00 || record hash)); see `recordLeafHash`. */
  readonly leafHash: Uint8Array;
  readonly index: number;
  readonly size: number;
  readonly proof: readonly Uint8Array[];
  readonly root: Uint8Array;
}

/**
 * Verifies an RFC 9162 § 2.1.3.2 inclusion proof. Pure and offline. Throws
 * {@link ProofInvalidError} (`ERR_AUDIT_PROOF_INVALID`) when it does not hold.
 */
export function verifyInclusion(input: InclusionInput): void {
  const { index, size, proof } = input;
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index < 0 || index >= size)
    throw new ProofInvalidError(`leaf index ${index} is not below tree size ${size}`);
  let fn = index;
  let sn = size - 1;
  let r: Uint8Array = input.leafHash;
  for (const p of proof) {
    if (p.length !== 32) throw new ProofInvalidError('proof element is not 32 bytes');
    if (sn === 0) throw new ProofInvalidError('proof is longer than the tree is deep');
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new ProofInvalidError('proof is shorter than the tree is deep');
  if (!Buffer.from(r).equals(Buffer.from(input.root)))
    throw new ProofInvalidError('inclusion proof does not lead to the root');
}
