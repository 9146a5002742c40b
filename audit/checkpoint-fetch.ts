import type { CollectorApi } from './client/api.ts';
import type { CheckpointBody, VerifierKey } from './checkpoint.ts';
import { verifyCheckpoint } from './checkpoint.ts';
import { verifyConsistency } from './proof-consistency-verify.ts';
import { CheckpointError } from './errors.ts';

/**
 * Fetches the collector's latest checkpoint and verifies its signature; given a checkpoint saved
 * earlier, also checks with a consistency proof that the new one extends it (the log was only
 * appended to). Throws `ERR_AUDIT_CHECKPOINT_SIGNATURE` or `ERR_AUDIT_CHECKPOINT_INCONSISTENT`.
 */
export async function fetchCheckpoint(
  api: CollectorApi,
  key: string | VerifierKey,
  previousNote?: string,
): Promise<{ note: string; body: CheckpointBody; previous?: CheckpointBody }> {
  const note = await api.latestCheckpoint();
  const body = verifyCheckpoint(note, key);
  if (previousNote === undefined) return { note, body };
  const previous = verifyCheckpoint(previousNote, key);
  if (previous.origin !== body.origin)
    throw new CheckpointError(
      'ERR_AUDIT_CHECKPOINT_INCONSISTENT',
      `origin changed from "${previous.origin}" to "${body.origin}"`,
    );
  if (body.size < previous.size)
    throw new CheckpointError(
      'ERR_AUDIT_CHECKPOINT_INCONSISTENT',
      `the log shrank from ${previous.size} to ${body.size} records since the saved checkpoint`,
    );
  const proof = await api.consistency(previous.size, body.size);
  try {
    verifyConsistency({
      fromSize: previous.size,
      toSize: body.size,
      fromRoot: previous.root,
      toRoot: body.root,
      proof,
    });
  } catch (err) {
    throw new CheckpointError(
      'ERR_AUDIT_CHECKPOINT_INCONSISTENT',
      `the new checkpoint does not extend the saved one: ${(err as Error).message}`,
      { cause: err },
    );
  }
  return { note, body, previous };
}
