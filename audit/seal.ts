import { sign } from 'node:crypto';
import type { CheckpointSigner, VerifierKey } from './checkpoint.ts';
import { noteKeyId, openSignedNote, parseCheckpointBody, parseNoteSize, rawEd25519 } from './checkpoint.ts';
import { CheckpointError } from './errors.ts';

/**
 * What a seal commits to: the first `size` records of a log, through the hash of record
 * `size - 1` (which, by the `prev` links, commits to every record before it).
 */
export interface SealBody {
  readonly origin: string;
  readonly size: number;
  /** Hash of record `size - 1`, or 64 zeros for an empty log. */
  readonly chainHead: string;
}

/** The third line of a seal's note text: `seal <chain head>` (a checkpoint has its root there). */
export const SEAL_LINE = 'seal';

/** Signs and opens the seals a store writes with each group commit (docs/decisions/0025). */
export interface Sealer {
  /** A signed note over `{origin, size, chainHead}`, stored with the batch that ends at `size`. */
  seal(size: number, chainHead: string): string;
  /**
   * The body of a seal, or of a checkpoint, signed by one of the trusted keys; `undefined` for a
   * note no trusted key signed, a malformed note, or one whose known signature fails.
   */
  open(note: string): SealBody | undefined;
  /** Names of the trusted keys, for messages. */
  readonly trusted: readonly string[];
}

/** The note text of a seal: origin, size, `seal <chain head>`. */
export function formatSealText(body: SealBody): string {
  if (!/^[^\n]+$/.test(body.origin)) throw new TypeError('"origin" must be one non-empty line');
  if (!/^[0-9a-f]{64}$/.test(body.chainHead)) throw new TypeError('"chainHead" must be 64 hex digits');
  return `${body.origin}\n${body.size}\n${SEAL_LINE} ${body.chainHead}\n`;
}

/** Signs a seal into a C2SP signed note. */
export function signSeal(body: SealBody, signer: CheckpointSigner): string {
  const text = formatSealText(body);
  const sig = sign(null, Buffer.from(text), signer.privateKey);
  const blob = Buffer.concat([noteKeyId(signer.name, signer.publicKey), sig]).toString('base64');
  return `${text}\n\u2014 ${signer.name} ${blob}\n`;
}

/** Parses a seal's note text; throws `ERR_AUDIT_CHECKPOINT_INVALID`. */
export function parseSealText(text: string): SealBody {
  const invalid = (why: string) => new CheckpointError('ERR_AUDIT_CHECKPOINT_INVALID', `seal: ${why}`);
  const lines = text.split('\n');
  if (lines.pop() !== '' || lines.length !== 3) throw invalid('expected origin, size and seal lines');
  const [origin, sizeText, sealLine] = lines as [string, string, string];
  if (!origin) throw invalid('empty origin');
  const size = parseNoteSize(sizeText);
  if (size === undefined) throw invalid('size is not a decimal number up to 2^53 - 1');
  const m = /^seal ([0-9a-f]{64})$/.exec(sealLine);
  if (!m) throw invalid('bad seal line');
  return { origin, size, chainHead: m[1]! };
}

/**
 * Opens a seal or a checkpoint signed by one of `keys` (strict C2SP parsing); throws
 * `ERR_AUDIT_CHECKPOINT_INVALID` / `ERR_AUDIT_CHECKPOINT_SIGNATURE` naming why not.
 */
export function verifySeal(note: string, keys: readonly VerifierKey[]): SealBody & { signer: string } {
  const { text, verifiedBy } = openSignedNote(note, keys);
  if (!verifiedBy.length)
    throw new CheckpointError('ERR_AUDIT_CHECKPOINT_SIGNATURE', 'seal: signed by none of the trusted keys');
  const third = text.split('\n')[2] ?? '';
  const body = third.startsWith(`${SEAL_LINE} `) ? parseSealText(text) : parseCheckpointBody(text);
  return { origin: body.origin, size: body.size, chainHead: body.chainHead, signer: verifiedBy[0]! };
}

/**
 * A {@link Sealer} that signs with `signer` and trusts `signer`'s own key plus `others` (the
 * keys of the other collectors sharing the store).
 */
export function createSealer(
  signer: CheckpointSigner,
  origin: string,
  others: readonly VerifierKey[] = [],
): Sealer {
  rawEd25519(signer.publicKey);
  const own: VerifierKey = {
    name: signer.name,
    keyId: noteKeyId(signer.name, signer.publicKey),
    publicKey: signer.publicKey,
  };
  const keys = [own, ...others];
  // The last note opened: PostgreSQL writers see the same seal row again and again.
  let cached: { note: string; body: SealBody } | undefined;
  return {
    trusted: keys.map((k) => `${k.name}+${k.keyId.toString('hex')}`),
    seal(size, chainHead) {
      const note = signSeal({ origin, size, chainHead }, signer);
      cached = { note, body: { origin, size, chainHead } };
      return note;
    },
    open(note) {
      if (cached?.note === note) return cached.body;
      try {
        const { signer: _s, ...body } = verifySeal(note, keys);
        cached = { note, body };
        return body;
      } catch {
        return undefined;
      }
    },
  };
}
