import type { ChainVerdict } from './chain-verify.ts';
import type { CheckpointBody } from './checkpoint.ts';
import { parseCheckpointBody, verifyCheckpoint } from './checkpoint.ts';
import { openStore } from './store/open.ts';
import { verifyStore } from './store-verify.ts';

/** What `portcullis audit verify` reports. */
export interface LogVerification {
  readonly verdict: ChainVerdict;
  readonly checkpoint?: CheckpointBody;
  /** False when a checkpoint was given without a key: its body was used as saved, unsigned. */
  readonly signatureChecked: boolean;
}

/**
 * Opens a store read-only (`file:DIR` as the files are, no recovery) and verifies all of it,
 * against a saved checkpoint note when given (its signature checked when `publicKey` is given).
 */
export async function verifyLog(
  storeSpec: string,
  options: { checkpointNote?: string; publicKey?: string; deep?: boolean; root?: boolean } = {},
): Promise<LogVerification> {
  let checkpoint: CheckpointBody | undefined;
  if (options.checkpointNote !== undefined) {
    checkpoint = options.publicKey
      ? verifyCheckpoint(options.checkpointNote, options.publicKey)
      : parseCheckpointBody(options.checkpointNote.slice(0, options.checkpointNote.indexOf('\n\n') + 1));
  }
  const store = await openStore(storeSpec, { readOnly: true });
  try {
    const verdict = await verifyStore(store, { checkpoint, deep: options.deep, root: options.root });
    return { verdict, checkpoint, signatureChecked: Boolean(options.publicKey) };
  } finally {
    await store.close();
  }
}
