import { hash } from 'node:crypto';
import { ProofRangeError } from './errors.ts';

// RFC 9162 § 2.1.1: domain-separated leaf and node hashes keep a leaf from passing for a node.
const LEAF_PREFIX = Buffer.from([0x00]);
const NODE_PREFIX = Buffer.from([0x01]);

/** SHA-256 of the empty string: the RFC 9162 root of an empty tree. */
export const EMPTY_ROOT: Buffer = hash('sha256', '', 'buffer');

/** RFC 9162 leaf hash: SHA-256(0x00 || leaf). Our leaf is the record's 32-byte hash. */
export function leafHash(leaf: Uint8Array): Buffer {
  return hash('sha256', Buffer.concat([LEAF_PREFIX, leaf]), 'buffer');
}

/** The Merkle leaf hash of a record, from its hex record hash. */
export function recordLeafHash(recordHashHex: string): Buffer {
  return leafHash(Buffer.from(recordHashHex, 'hex'));
}

/** RFC 9162 interior node hash: SHA-256(0x01 || left || right). */
export function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  return hash('sha256', Buffer.concat([NODE_PREFIX, left, right]), 'buffer');
}

/** Largest power of two strictly smaller than `n` (n ≥ 2). */
function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/**
 * The right edge of a Merkle tree grown from leaf 0: O(log n) memory, O(1) amortized hashes
 * per leaf. Gives the root at the current size; used to verify a whole log in one pass.
 */
export class MerkleFrontier {
  #stack: Buffer[] = [];
  #size = 0;

  /** Number of leaves appended so far. */
  get size(): number {
    return this.#size;
  }

  /** Appends one leaf hash (already {@link leafHash}ed). */
  append(leaf: Buffer): void {
    this.#stack.push(leaf);
    for (let k = this.#size; k & 1; k >>= 1) {
      const right = this.#stack.pop()!;
      const left = this.#stack.pop()!;
      this.#stack.push(nodeHash(left, right));
    }
    this.#size++;
  }

  /** RFC 9162 root of the leaves appended so far. */
  root(): Buffer {
    if (this.#stack.length === 0) return EMPTY_ROOT;
    let r = this.#stack[this.#stack.length - 1]!;
    for (let i = this.#stack.length - 2; i >= 0; i--) r = nodeHash(this.#stack[i]!, r);
    return r;
  }
}

/** A growable array of 32-byte hashes in one buffer, so that a million leaves are not a million objects. */
class HashLevel {
  #buf = Buffer.alloc(32 * 1024);
  length = 0;
  push(h: Uint8Array): void {
    if ((this.length + 1) * 32 > this.#buf.length) {
      const next = Buffer.alloc(this.#buf.length * 2);
      this.#buf.copy(next);
      this.#buf = next;
    }
    this.#buf.set(h, this.length * 32);
    this.length++;
  }
  get(i: number): Buffer {
    return this.#buf.subarray(i * 32, i * 32 + 32);
  }
}

/**
 * A whole Merkle tree kept as its perfect subtrees, level by level (about 64 bytes per leaf):
 * any root, inclusion proof or consistency proof of RFC 9162 in O(log² n) hashes.
 */
export class MerkleTree {
  #levels: HashLevel[] = [new HashLevel()];

  /** Number of leaves. */
  get size(): number {
    return this.#levels[0]!.length;
  }

  /** Appends one leaf hash (already {@link leafHash}ed). */
  append(leaf: Uint8Array): void {
    this.#levels[0]!.push(leaf);
    let index = this.#levels[0]!.length - 1;
    for (let k = 0; index & 1; k++) {
      const level = this.#levels[k]!;
      const parent = nodeHash(level.get(index - 1), level.get(index));
      if (!this.#levels[k + 1]) this.#levels.push(new HashLevel());
      this.#levels[k + 1]!.push(parent);
      index >>= 1;
    }
  }

  /** The leaf hash at `index`. */
  leaf(index: number): Buffer {
    if (!Number.isSafeInteger(index) || index < 0 || index >= this.size)
      throw new ProofRangeError(`leaf ${index} is outside the tree of size ${this.size}`);
    return Buffer.from(this.#levels[0]!.get(index));
  }

  /** RFC 9162 MTH over leaves [start, end). */
  #range(start: number, end: number): Buffer {
    const n = end - start;
    if (n === 0) return EMPTY_ROOT;
    if ((n & (n - 1)) === 0 && start % n === 0) {
      const k = Math.log2(n);
      const level = this.#levels[k];
      if (level && start / n < level.length) return level.get(start / n);
    }
    const k = splitPoint(n);
    return nodeHash(this.#range(start, start + k), this.#range(start + k, end));
  }

  /** RFC 9162 root of the first `size` leaves (default: all). */
  root(size: number = this.size): Buffer {
    this.#checkSize(size);
    return Buffer.from(this.#range(0, size));
  }

  /** RFC 9162 § 2.1.3.1 inclusion proof of leaf `index` in the tree of `size` leaves. */
  inclusionProof(index: number, size: number): Buffer[] {
    this.#checkSize(size);
    if (!Number.isSafeInteger(index) || index < 0 || index >= size)
      throw new ProofRangeError(`seq ${index} is not below size ${size}`);
    const out: Buffer[] = [];
    const walk = (m: number, start: number, end: number): void => {
      const n = end - start;
      if (n <= 1) return;
      const k = splitPoint(n);
      if (m - start < k) {
        walk(m, start, start + k);
        out.push(this.#range(start + k, end));
      } else {
        walk(m, start + k, end);
        out.push(this.#range(start, start + k));
      }
    };
    walk(index, 0, size);
    return out.map((b) => Buffer.from(b));
  }

  /** RFC 9162 § 2.1.4.1 consistency proof between the trees of `from` and `to` leaves. */
  consistencyProof(from: number, to: number): Buffer[] {
    this.#checkSize(to);
    if (!Number.isSafeInteger(from) || from < 0 || from > to)
      throw new ProofRangeError(`size ${from} is not between 0 and ${to}`);
    if (from === 0 || from === to) return [];
    const out: Buffer[] = [];
    const walk = (m: number, start: number, end: number, complete: boolean): void => {
      const n = end - start;
      if (m === n) {
        if (!complete) out.push(this.#range(start, end));
        return;
      }
      const k = splitPoint(n);
      if (m <= k) {
        walk(m, start, start + k, complete);
        out.push(this.#range(start + k, end));
      } else {
        walk(m - k, start + k, end, false);
        out.push(this.#range(start, start + k));
      }
    };
    walk(from, 0, to, true);
    return out.map((b) => Buffer.from(b));
  }

  #checkSize(size: number): void {
    if (!Number.isSafeInteger(size) || size < 0 || size > this.size)
      throw new ProofRangeError(`size ${size} is not between 0 and ${this.size}`);
  }
}
