import type { InclusionBundle } from './client/api.ts';
import type { VerifierKey } from './checkpoint.ts';
import { verifyCheckpoint } from './checkpoint.ts';
import { verifyInclusion } from './proof-inclusion-verify.ts';
import { hashRecord, toRecord } from './record.ts';
import type { AuditRecord } from './record.ts';
import { recordLeafHash } from './merkle.ts';
import { ProofInvalidError, ProofRangeError } from './errors.ts';
import type { CollectorApi } from './client/api.ts';

/**
 * Checks, offline and with only the collector's public key, that `bundle.record` is in the log
 * a signed checkpoint commits to: the checkpoint's signature, the record's hash recomputed from
 * its content, and the RFC 9162 inclusion proof to the checkpoint's root. Returns the record.
 * Throws `ERR_AUDIT_CHECKPOINT_*` or `ERR_AUDIT_PROOF_INVALID`.
 */
export function verifyInclusionBundle(
  bundle: InclusionBundle,
  checkpointNote: string,
  key: string | VerifierKey,
): AuditRecord {
  const checkpoint = verifyCheckpoint(checkpointNote, key);
  if (bundle === null || typeof bundle !== 'object' || Array.isArray(bundle))
    throw new ProofInvalidError('a bundle must be an object with seq, size, record and proof');
  const record = toRecord(bundle.record);
  if (bundle.size !== checkpoint.size)
    throw new ProofInvalidError(
      `the proof is for size ${bundle.size}, the checkpoint for ${checkpoint.size}`,
    );
  if (record.seq !== bundle.seq) throw new ProofInvalidError('the record is not the one the proof is for');
  if (!Array.isArray(bundle.proof) || !bundle.proof.every((p) => typeof p === 'string'))
    throw new ProofInvalidError('proof must be a list of base64 hashes');
  const hash = hashRecord(record);
  if (hash !== record.hash) throw new ProofInvalidError('the record does not match its hash (modified)');
  verifyInclusion({
    leafHash: recordLeafHash(hash),
    index: record.seq,
    size: checkpoint.size,
    proof: bundle.proof.map((p) => Buffer.from(p, 'base64')),
    root: checkpoint.root,
  });
  return record;
}

/**
 * Asks a collector for the inclusion proof of record `seq` at the size of a saved checkpoint
 * (whose signature is checked first). Throws `ERR_AUDIT_PROOF_RANGE` when the checkpoint does
 * not cover `seq` yet: save a newer one.
 */
export async function fetchInclusionBundle(
  api: CollectorApi,
  checkpointNote: string,
  key: string | VerifierKey,
  seq: number,
): Promise<InclusionBundle> {
  const { size } = verifyCheckpoint(checkpointNote, key);
  if (seq >= size)
    throw new ProofRangeError(
      `record ${seq} is not covered by the checkpoint (size ${size}); save a newer one with portcullis audit checkpoint`,
    );
  return api.inclusion(seq, size);
}
