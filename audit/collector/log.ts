import type { AuditEvent } from '../../core/index.ts';
import type { AppendOutcome, AuditStore, IdempotencyClaim } from '../store/store.ts';
import type { AuditRecord } from '../record.ts';
import { GENESIS_PREV, hashRecord, newByteScan, scanRecordBytes } from '../record.ts';
import { MerkleTree, recordLeafHash } from '../merkle.ts';
import type { CheckpointBody, CheckpointSigner } from '../checkpoint.ts';
import { noteKeyId, signCheckpoint, verifyCheckpoint } from '../checkpoint.ts';
import { CheckpointError, ProofRangeError, StoreError } from '../errors.ts';

/** Dependencies of {@link AuditLog}. */
export interface AuditLogDeps {
  readonly store: AuditStore;
  readonly signer: CheckpointSigner;
  /** Checkpoint origin line. */
  readonly origin: string;
  /** The last checkpoint this collector signed (from its data dir), checked against the store on open. */
  readonly lastCheckpoint?: string;
  /** Told about each new signed checkpoint (to persist it). */
  readonly onCheckpoint?: (note: string, body: CheckpointBody) => void;
}

/**
 * The collector's view of the log: the store for records, an in-memory Merkle tree of every
 * record for proofs, and the signed checkpoints. Records appended by other collectors sharing
 * the store (postgres) are read in before a checkpoint or proof.
 */
export class AuditLog {
  readonly #deps: AuditLogDeps;
  readonly #tree = new MerkleTree();
  #head = GENESIS_PREV;
  /** Hashes of records appended by this process but not yet in the tree (batches can settle out of order). */
  #pending = new Map<number, string>();
  #syncing: Promise<void> = Promise.resolve();
  #latest: { note: string; body: CheckpointBody } | undefined;
  #latestAt: Date | undefined;

  private constructor(deps: AuditLogDeps) {
    this.#deps = deps;
  }

  /**
   * Reads the store into the tree, checking each record's hash and link on the way, and refuses
   * a store that contradicts the last checkpoint this collector signed
   * (`ERR_AUDIT_CHECKPOINT_INCONSISTENT`): a collector does not serve a rewritten log.
   */
  static async open(deps: AuditLogDeps): Promise<AuditLog> {
    const log = new AuditLog(deps);
    await log.sync();
    if (deps.lastCheckpoint) {
      const body = verifyCheckpoint(deps.lastCheckpoint, {
        name: deps.signer.name,
        keyId: noteKeyId(deps.signer.name, deps.signer.publicKey),
        publicKey: deps.signer.publicKey,
      });
      const size = log.size;
      if (body.size > size || !log.#tree.root(body.size).equals(Buffer.from(body.root)))
        throw new CheckpointError(
          'ERR_AUDIT_CHECKPOINT_INCONSISTENT',
          `the store (${size} records) is inconsistent with this collector's last checkpoint (size ${body.size}); refusing to serve it`,
        );
      log.#latest = { note: deps.lastCheckpoint, body };
    }
    return log;
  }

  /** The underlying store (for queries). */
  store(): AuditStore {
    return this.#deps.store;
  }

  /** Records in the tree. */
  get size(): number {
    return this.#tree.size;
  }

  /** Appends events; resolves once they are durable, with their records. */
  async append(events: readonly AuditEvent[]): Promise<AuditRecord[]> {
    const records = await this.#deps.store.append(events);
    for (const r of records) this.#pending.set(r.seq, r.hash);
    this.#absorbPending();
    return records;
  }

  /**
   * Appends a keyed batch at most once (see `AuditStore.appendOnce`); resolves with the new
   * records or the entry stored before.
   */
  async appendOnce(events: readonly AuditEvent[], claim: IdempotencyClaim): Promise<AppendOutcome> {
    const outcome = await this.#deps.store.appendOnce(events, claim);
    if (outcome.records) {
      for (const r of outcome.records) this.#pending.set(r.seq, r.hash);
      this.#absorbPending();
    }
    return outcome;
  }

  #absorbPending(): void {
    for (
      let h = this.#pending.get(this.#tree.size);
      h !== undefined;
      h = this.#pending.get(this.#tree.size)
    ) {
      this.#pending.delete(this.#tree.size);
      this.#tree.append(recordLeafHash(h));
      this.#head = h;
    }
  }

  /** Brings the tree up to the store's head (records other collectors appended). */
  sync(): Promise<void> {
    const run = this.#syncing.then(() => this.#sync());
    this.#syncing = run.catch(() => {});
    return run;
  }

  async #sync(): Promise<void> {
    this.#absorbPending();
    // The head a trusted seal covers (with a sealer): rows past it are not adopted.
    const head = await this.#deps.store.head();
    const target = head.size;
    if (this.#tree.size >= target) return;
    // Bytes, not strings: a log of large events is hashed in place, chunk by chunk.
    const { out, scratch } = newByteScan();
    let done = false;
    for await (const buf of this.#deps.store.readBuffers({ fromSeq: this.#tree.size })) {
      for (let start = 0; start < buf.length && !done;) {
        let end = buf.indexOf(0x0a, start);
        if (end < 0) end = buf.length;
        const line = [start, end] as const;
        start = end + 1;
        if (buf[line[0] + 2] === 0x63) continue; // a file store's commit line: {"commit":…}
        if (!scanRecordBytes(buf, line[0], line[1], out, scratch))
          throw new StoreError(
            'ERR_AUDIT_STORE_CORRUPT',
            `record ${this.#tree.size}: not a canonical record line; run portcullis audit verify`,
          );
        // This collector's own appends may have been absorbed while the page was read.
        if (out.seq < this.#tree.size) continue;
        const seq = this.#tree.size;
        if (out.seq !== seq || out.digest.toString('hex') !== out.hash || out.prev !== this.#head)
          throw new StoreError(
            'ERR_AUDIT_STORE_CORRUPT',
            `record ${seq}: breaks the chain; run portcullis audit verify`,
          );
        this.#pending.delete(seq);
        this.#tree.append(recordLeafHash(out.hash));
        this.#head = out.hash;
        if (this.#tree.size >= target) done = true;
      }
      if (done) break;
    }
    if (this.#tree.size < target)
      throw new StoreError(
        'ERR_AUDIT_STORE_CORRUPT',
        `the store ends at ${this.#tree.size} records but its seal covers ${target}; run portcullis audit verify`,
      );
    if (this.#tree.size === target && this.#head !== head.hash)
      throw new StoreError(
        'ERR_AUDIT_STORE_CORRUPT',
        `record ${target - 1}: differs from what the store's seal covers; run portcullis audit verify`,
      );
    this.#absorbPending();
  }

  /** The latest signed checkpoint note, if any. */
  latest(): { note: string; body: CheckpointBody } | undefined {
    return this.#latest;
  }

  /** When this process signed the latest checkpoint (undefined: it was loaded from the data dir). */
  latestSignedAt(): Date | undefined {
    return this.#latestAt;
  }

  /** Signs a checkpoint over the current tree unless the latest one already covers it. */
  async checkpoint(): Promise<{ note: string; body: CheckpointBody }> {
    await this.sync();
    if (this.#latest && this.#latest.body.size === this.#tree.size) return this.#latest;
    const body: CheckpointBody = {
      origin: this.#deps.origin,
      size: this.#tree.size,
      root: this.#tree.root(),
      chainHead: this.#head,
    };
    const note = signCheckpoint(body, this.#deps.signer);
    this.#latest = { note, body };
    this.#latestAt = new Date();
    this.#deps.onCheckpoint?.(note, body);
    return this.#latest;
  }

  /** Inclusion proof of record `seq` in the tree of `size` records, with the record itself. */
  async inclusion(seq: number, size: number): Promise<{ record: AuditRecord; proof: Buffer[] }> {
    await this.sync();
    if (size > this.#tree.size)
      throw new ProofRangeError(`size ${size} is beyond the log size ${this.#tree.size}`);
    const proof = this.#tree.inclusionProof(seq, size);
    let record: AuditRecord | undefined;
    for await (const r of this.#deps.store.read(seq, seq + 1)) record = r;
    if (!record) throw new ProofRangeError(`record ${seq} is not in the store`);
    // Only the record this collector adopted is proven, never what the store holds now instead.
    if (record.seq !== seq || !recordLeafHash(hashRecord(record)).equals(this.#tree.leaf(seq)))
      throw new StoreError(
        'ERR_AUDIT_STORE_CORRUPT',
        `record ${seq}: the stored record differs from the one in the log; run portcullis audit verify`,
      );
    return { record, proof };
  }

  /** Consistency proof between the trees of `from` and `to` records. */
  async consistency(from: number, to: number): Promise<Buffer[]> {
    await this.sync();
    if (to > this.#tree.size)
      throw new ProofRangeError(`size ${to} is beyond the log size ${this.#tree.size}`);
    return this.#tree.consistencyProof(from, to);
  }
}
