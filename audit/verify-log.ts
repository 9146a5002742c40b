import type { ChainVerdict } from './chain-verify.ts';
import type { CheckpointBody, VerifierKey } from './checkpoint.ts';
import { parseCheckpointBody, parseVerifierKey, verifyCheckpoint } from './checkpoint.ts';
import { openStore } from './store/open.ts';
import { verifyStore } from './store-verify.ts';

/** What `portcullis audit verify` reports. */
export interface LogVerification {
  readonly verdict: ChainVerdict;
  readonly checkpoint?: CheckpointBody;
  /** False when a checkpoint was given without a key: its body was used as saved, unsigned. */
  readonly signatureChecked: boolean;
  /** True when collector keys were given, so that `verdict.covered` says what their seals cover. */
  readonly coverageChecked: boolean;
}

/**
 * Opens a store read-only (`file:DIR` as the files are, no recovery) and verifies all of it,
 * against a saved checkpoint note when given (its signature checked with the first of
 * `publicKeys` that signed it), and — with `publicKeys` — reports how far seals signed by
 * those collector keys cover the log.
 */
export async function verifyLog(
  storeSpec: string,
  options: {
    checkpointNote?: string;
    publicKey?: string;
    publicKeys?: readonly string[];
    deep?: boolean;
    root?: boolean;
  } = {},
): Promise<LogVerification> {
  const keyTexts = [...(options.publicKeys ?? []), ...(options.publicKey ? [options.publicKey] : [])];
  const keys: VerifierKey[] = keyTexts.map((k) => parseVerifierKey(k));
  let checkpoint: CheckpointBody | undefined;
  if (options.checkpointNote !== undefined) {
    if (keys.length) {
      let firstError: unknown;
      for (const key of keys) {
        try {
          checkpoint = verifyCheckpoint(options.checkpointNote, key);
          break;
        } catch (err) {
          firstError ??= err;
        }
      }
      if (!checkpoint) throw firstError;
    } else {
      checkpoint = parseCheckpointBody(
        options.checkpointNote.slice(0, options.checkpointNote.indexOf('\n\n') + 1),
      );
    }
  }
  const store = await openStore(storeSpec, { readOnly: true });
  try {
    const verdict = await verifyStore(store, {
      checkpoint,
      deep: options.deep,
      root: options.root,
      ...(keys.length ? { sealKeys: keys } : {}),
    });
    return {
      verdict,
      checkpoint,
      signatureChecked: keys.length > 0 && checkpoint !== undefined,
      coverageChecked: keys.length > 0,
    };
  } finally {
    await store.close();
  }
}
