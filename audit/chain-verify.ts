import { hash } from 'node:crypto';
import { parseAuditEvent } from '../core/index.ts';
import type { AuditRecord } from './record.ts';
import { GENESIS_PREV, hashRecord, newByteScan, scanRecordBytes, scanRecordLine } from './record.ts';
import { canonicalJson } from './canonical.ts';
import { MerkleFrontier, recordLeafHash } from './merkle.ts';
import type { CheckpointBody, VerifierKey } from './checkpoint.ts';
import { parseSealText, verifySeal } from './seal.ts';

/** Outcome of verifying a log: intact up to `size`, or the first bad record and why. */
export type ChainVerdict =
  | {
      readonly ok: true;
      readonly size: number;
      /** Hash of the last record (64 zeros for an empty log). */
      readonly head: string;
      /** RFC 9162 root over all records; absent when computed with `root: false`. */
      readonly root?: Buffer;
      /**
       * With `sealKeys`: how many records (from seq 0) a seal signed by one of them covers; the
       * records from `covered` to `size - 1` are not covered by any trusted signature.
       */
      readonly covered?: number;
      /** Name of the key that signed the covering seal. */
      readonly coveredBy?: string;
      /** Bytes at the end of a segment that are no whole line (a torn write or junk), where. */
      readonly torn?: readonly { readonly where: string; readonly bytes: number }[];
    }
  | {
      readonly ok: false;
      /** `ERR_AUDIT_CHAIN_BROKEN`: a record is bad; `ERR_AUDIT_CHECKPOINT_INCONSISTENT`: the log contradicts the checkpoint. */
      readonly code: 'ERR_AUDIT_CHAIN_BROKEN' | 'ERR_AUDIT_CHECKPOINT_INCONSISTENT';
      /** First bad seq (for an inconsistency: the log size or the checkpoint size). */
      readonly seq: number;
      readonly reason: string;
    };

/** Options of {@link ChainVerifier}. */
export interface ChainVerifierOptions {
  /** A verified checkpoint the log must agree with (same chain head and root at its size). */
  readonly checkpoint?: CheckpointBody;
  /** Also parse each event and check it is canonical and schema-valid (slower). */
  readonly deep?: boolean;
  /**
   * Compute the Merkle root of the whole log (default true). With `false`, leaves are hashed only
   * up to the checkpoint's size, if any: a third of the hashing for a plain chain check.
   */
  readonly root?: boolean;
  /** Keys of the collectors whose seals count: with them, the verdict says how much is `covered`. */
  readonly sealKeys?: readonly VerifierKey[];
  /** Seal notes stored beside the records (a PostgreSQL store); inline commit lines are read as they come. */
  readonly seals?: readonly string[];
}

/** The inline commit line of a file store segment starts with this. */
const COMMIT_PREFIX = Buffer.from('{"commit":');

/**
 * Verifies a log one record at a time, from seq 0: sequence, `prev` links, record hashes,
 * the Merkle root, and agreement with a checkpoint. Stops at the first fault; O(log n) memory.
 */
export class ChainVerifier {
  #expected = 0;
  #prev = GENESIS_PREV;
  #tree = new MerkleFrontier();
  #failure: Extract<ChainVerdict, { ok: false }> | undefined;
  readonly #checkpoint: CheckpointBody | undefined;
  readonly #deep: boolean;
  readonly #merkleUntil: number;
  readonly #sealKeys: readonly VerifierKey[] | undefined;
  /** Seals stored beside the records, by the size they cover. */
  readonly #sealsAt = new Map<number, { head: string; signer: string }>();
  #covered = 0;
  #coveredBy: string | undefined;
  /** Commit-line seals that match the chain where they stand, signatures not yet checked (newest last). */
  #candidates: { size: number; note: string }[] = [];
  /** A record whose `prev` did not match: blamed on it or on the one before, once the next is seen. */
  #suspect: { seq: number; hash: string } | undefined;

  constructor(options: ChainVerifierOptions = {}) {
    this.#checkpoint = options.checkpoint;
    this.#deep = options.deep ?? false;
    this.#merkleUntil = options.root === false ? (options.checkpoint?.size ?? 0) : Infinity;
    this.#sealKeys = options.sealKeys;
    if (this.#sealKeys)
      for (const note of options.seals ?? []) {
        try {
          const s = verifySeal(note, this.#sealKeys);
          this.#sealsAt.set(s.size, { head: s.chainHead, signer: s.signer });
        } catch {
          // not signed by a trusted key: covers nothing
        }
      }
    if (this.#checkpoint?.size === 0) this.#checkAtCheckpoint();
  }

  /** Reads an inline commit line: its seal, if it matches the chain here, is a candidate cover. */
  #commitLine(text: string): boolean {
    if (!this.#sealKeys || this.#failure) return !this.#failure;
    let note: unknown;
    try {
      note = (JSON.parse(text) as { commit?: { seal?: unknown } }).commit?.seal;
    } catch {
      return this.#fail(this.#expected, 'a commit line that is not JSON');
    }
    if (typeof note !== 'string') return true;
    let body;
    try {
      body = parseSealText(note.slice(0, note.lastIndexOf('\n\n') + 1));
    } catch {
      return true; // not a seal: covers nothing
    }
    if (body.size === this.#expected && body.chainHead === this.#prev && !this.#suspect) {
      this.#candidates.push({ size: body.size, note });
      // Check a signature now and then, so that the candidates kept stay few.
      if (this.#candidates.length >= 64) this.#settleCandidates();
      return true;
    }
    try {
      const s = verifySeal(note, this.#sealKeys);
      this.#failure = {
        ok: false,
        code: 'ERR_AUDIT_CHECKPOINT_INCONSISTENT',
        seq: Math.min(s.size, this.#expected),
        reason: `a seal signed by ${s.signer} at size ${s.size} disagrees with the records before it (log rewritten)`,
      };
      return false;
    } catch {
      return true; // a forged or foreign seal line covers nothing
    }
  }

  /** The newest candidate signed by a trusted key becomes the cover; the rest are dropped. */
  #settleCandidates(): void {
    for (let i = this.#candidates.length - 1; i >= 0; i--) {
      try {
        const s = verifySeal(this.#candidates[i]!.note, this.#sealKeys!);
        if (s.size >= this.#covered) {
          this.#covered = s.size;
          this.#coveredBy = s.signer;
        }
        break;
      } catch {
        // forged: try the one before
      }
    }
    this.#candidates = [];
  }

  /** False once a fault was found; further input is ignored. */
  get ok(): boolean {
    return this.#failure === undefined;
  }

  /** Checks one stored (canonical) line; returns false at the first fault. */
  pushLine(line: string): boolean {
    if (this.#failure) return false;
    if (line.startsWith('{"commit":')) return this.#commitLine(line);
    let scanned;
    try {
      scanned = scanRecordLine(line);
    } catch (err) {
      return this.#fail(this.#expected, (err as Error).message);
    }
    if (this.#deep) {
      try {
        const event: unknown = JSON.parse(scanned.eventJson);
        if (canonicalJson(event) !== scanned.eventJson)
          return this.#fail(scanned.seq, 'event is not canonical JSON');
        parseAuditEvent(event);
      } catch (err) {
        return this.#fail(scanned.seq, `event is invalid: ${(err as Error).message}`);
      }
    }
    return this.#accept(scanned.seq, scanned.prev, scanned.hash, scanned.computed);
  }

  /**
   * Checks every line of a buffer of whole stored lines (each ending in `\n`) without building
   * strings: the fast path of `verify`. Returns false at the first fault.
   */
  pushBuffer(buf: Buffer): boolean {
    const out = this.#scanned;
    let start = 0;
    while (start < buf.length && !this.#failure) {
      let end = buf.indexOf(0x0a, start);
      if (end < 0) end = buf.length;
      if (
        end - start > COMMIT_PREFIX.length &&
        buf.compare(COMMIT_PREFIX, 0, COMMIT_PREFIX.length, start, start + COMMIT_PREFIX.length) === 0
      ) {
        this.#commitLine(buf.toString('utf8', start, end));
      } else if (!scanRecordBytes(buf, start, end, out, this.#scratch)) {
        return this.#fail(this.#expected, 'not a canonical record line');
      } else {
        if (this.#deep) {
          try {
            const text = buf.toString('utf8', out.eventStart, out.eventEnd);
            const event: unknown = JSON.parse(text);
            if (canonicalJson(event) !== text) return this.#fail(out.seq, 'event is not canonical JSON');
            parseAuditEvent(event);
          } catch (err) {
            return this.#fail(out.seq, `event is invalid: ${(err as Error).message}`);
          }
        }
        this.#leafInput[0] = 0;
        out.digest.copy(this.#leafInput, 1);
        this.#accept(out.seq, out.prev, out.hash, out.digest.toString('hex'), this.#leafInput);
      }
      start = end + 1;
    }
    return !this.#failure;
  }

  readonly #scan = newByteScan();
  readonly #scanned = this.#scan.out;
  readonly #scratch = this.#scan.scratch;
  readonly #leafInput = Buffer.alloc(33);

  /** Checks one record value (from the API or a store); returns false at the first fault. */
  pushRecord(record: AuditRecord): boolean {
    if (this.#failure) return false;
    let computed: string;
    try {
      computed = hashRecord(record);
    } catch (err) {
      return this.#fail(record.seq, (err as Error).message);
    }
    return this.#accept(record.seq, record.prev, record.hash, computed);
  }

  #accept(seq: number, prev: string, claimed: string, computed: string, leafInput?: Buffer): boolean {
    const expected = this.#expected;
    if (seq !== expected) {
      const why =
        seq < expected
          ? `seq ${seq} found after ${expected - 1} (duplicated or reordered record)`
          : `seq ${seq} found where ${expected} was expected (record missing or reordered)`;
      return this.#fail(expected, why);
    }
    if (computed !== claimed) return this.#fail(seq, 'hash does not match the record content');
    if (this.#suspect) {
      // The record after a broken link: if it links to the suspect, the suspect is intact and
      // the record before it was rewritten with a recomputed hash.
      const s = this.#suspect;
      if (prev === s.hash)
        return this.#fail(
          s.seq - 1,
          `record ${s.seq - 1} was rewritten (its hash recomputed): record ${s.seq} still links to the original`,
        );
      return this.#fail(s.seq, 'prev does not match the hash of the previous record');
    }
    if (prev !== this.#prev) {
      if (seq === 0) return this.#fail(seq, 'prev does not match the hash of the previous record');
      this.#suspect = { seq, hash: claimed };
    }
    this.#prev = claimed;
    // leafInput is 0x00 || digest, ready to hash, when the caller already has the digest bytes.
    if (seq < this.#merkleUntil)
      this.#tree.append(leafInput ? hash('sha256', leafInput, 'buffer') : recordLeafHash(claimed));
    this.#expected++;
    if (this.#checkpoint && this.#expected === this.#checkpoint.size) this.#checkAtCheckpoint();
    const sealed = this.#sealsAt.get(this.#expected);
    if (sealed && !this.#failure) {
      if (sealed.head !== this.#prev)
        this.#failure = {
          ok: false,
          code: 'ERR_AUDIT_CHECKPOINT_INCONSISTENT',
          seq: this.#expected - 1,
          reason: `record ${this.#expected - 1} differs from what the seal signed by ${sealed.signer} covers (log rewritten)`,
        };
      else if (this.#expected > this.#covered) {
        this.#covered = this.#expected;
        this.#coveredBy = sealed.signer;
      }
    }
    return !this.#failure;
  }

  #checkAtCheckpoint(): void {
    const cp = this.#checkpoint!;
    if (this.#prev !== cp.chainHead)
      this.#failure = {
        ok: false,
        code: 'ERR_AUDIT_CHECKPOINT_INCONSISTENT',
        seq: cp.size,
        reason: `chain head at size ${cp.size} differs from the checkpoint's (log rewritten)`,
      };
    else if (!this.#tree.root().equals(Buffer.from(cp.root)))
      this.#failure = {
        ok: false,
        code: 'ERR_AUDIT_CHECKPOINT_INCONSISTENT',
        seq: cp.size,
        reason: `Merkle root at size ${cp.size} differs from the checkpoint's`,
      };
  }

  #fail(seq: number, reason: string): false {
    this.#failure = { ok: false, code: 'ERR_AUDIT_CHAIN_BROKEN', seq, reason };
    return false;
  }

  /** The verdict for what was pushed so far (call once the input is exhausted). */
  result(): ChainVerdict {
    if (!this.#failure && this.#suspect) {
      const s = this.#suspect;
      this.#fail(
        s.seq - 1,
        `record ${s.seq - 1} was rewritten with a recomputed hash, or the link of the last record ${s.seq} was`,
      );
    }
    if (this.#failure) return this.#failure;
    if (this.#sealKeys) this.#settleCandidates();
    for (const [size, s] of this.#sealsAt)
      if (size > this.#expected)
        return {
          ok: false,
          code: 'ERR_AUDIT_CHECKPOINT_INCONSISTENT',
          seq: this.#expected,
          reason: `log has ${this.#expected} records but a seal signed by ${s.signer} covers ${size} (log truncated)`,
        };
    const cp = this.#checkpoint;
    if (cp && this.#expected < cp.size)
      return {
        ok: false,
        code: 'ERR_AUDIT_CHECKPOINT_INCONSISTENT',
        seq: this.#expected,
        reason: `log has ${this.#expected} records but the checkpoint commits to ${cp.size} (log truncated)`,
      };
    return {
      ok: true,
      size: this.#expected,
      head: this.#prev,
      ...(this.#tree.size === this.#expected ? { root: this.#tree.root() } : {}),
      ...(this.#sealKeys
        ? { covered: this.#covered, ...(this.#coveredBy ? { coveredBy: this.#coveredBy } : {}) }
        : {}),
    };
  }
}

/**
 * Verifies records from seq 0 (pure, offline): sequence, links, hashes, and agreement with an
 * optional verified checkpoint. Names the first bad seq and why.
 */
export function verifyChain(
  records: Iterable<AuditRecord>,
  options: ChainVerifierOptions = {},
): ChainVerdict {
  const v = new ChainVerifier(options);
  for (const r of records) if (!v.pushRecord(r)) break;
  return v.result();
}
