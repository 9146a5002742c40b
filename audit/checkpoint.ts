import { createPublicKey, hash, sign, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { CheckpointError } from './errors.ts';

/** What a checkpoint commits to: RFC 9162 root and hash-chain head of the first `size` records. */
export interface CheckpointBody {
  /** Names the log, e.g. `example.org/portcullis/audit`. */
  readonly origin: string;
  readonly size: number;
  /** RFC 9162 Merkle root over the first `size` records (32 bytes). */
  readonly root: Uint8Array;
  /** Hash of record `size - 1` (hex), or 64 zeros for an empty log. */
  readonly chainHead: string;
}

/** The extension line that carries the chain head (C2SP allows opaque extension lines). */
export const CHAIN_HEAD_EXTENSION = 'chain-head';

/** An Ed25519 signer of checkpoints: the collector's own key and the name it signs as. */
export interface CheckpointSigner {
  readonly name: string;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

const ALG_ED25519 = 0x01;
const KEY_NAME = /^[^\s+]{1,255}$/;

/** Raw 32-byte Ed25519 public key of a KeyObject; throws `ERR_AUDIT_KEY_INVALID` for another type. */
export function rawEd25519(publicKey: KeyObject): Buffer {
  if (publicKey.asymmetricKeyType !== 'ed25519')
    throw new CheckpointError('ERR_AUDIT_KEY_INVALID', 'checkpoint keys must be Ed25519');
  const jwk = publicKey.export({ format: 'jwk' });
  return Buffer.from(jwk.x!, 'base64url');
}

/** C2SP signed-note key id: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key). */
export function noteKeyId(name: string, publicKey: KeyObject): Buffer {
  const data = Buffer.concat([Buffer.from(`${name}\n`), Buffer.from([ALG_ED25519]), rawEd25519(publicKey)]);
  return hash('sha256', data, 'buffer').subarray(0, 4);
}

/** The signed-note verifier key string `<name>+<hex key id>+<base64(0x01 || key)>`. */
export function formatVerifierKey(name: string, publicKey: KeyObject): string {
  if (!KEY_NAME.test(name)) throw new TypeError('"name" must be non-empty without spaces or "+"');
  const key = Buffer.concat([Buffer.from([ALG_ED25519]), rawEd25519(publicKey)]);
  return `${name}+${noteKeyId(name, publicKey).toString('hex')}+${key.toString('base64')}`;
}

/** A parsed verifier key. */
export interface VerifierKey {
  readonly name: string;
  readonly keyId: Buffer;
  readonly publicKey: KeyObject;
}

/** Parses a verifier key string; throws `ERR_AUDIT_KEY_INVALID` naming what is wrong. */
export function parseVerifierKey(text: string): VerifierKey {
  const bad = (why: string) => new CheckpointError('ERR_AUDIT_KEY_INVALID', `verifier key: ${why}`);
  // The base64 key may itself hold "+", so split on the first two only.
  const m = /^([^+]*)\+([^+]*)\+(.*)$/s.exec(text.trim());
  if (!m) throw bad('expected <name>+<hex key id>+<base64 key>');
  const [, name, idHex, keyB64] = m as unknown as [string, string, string, string];
  if (!KEY_NAME.test(name)) throw bad('bad key name');
  if (!/^[0-9a-f]{8}$/.test(idHex)) throw bad('key id must be 8 hex digits');
  const key = Buffer.from(keyB64, 'base64');
  if (key.length !== 33 || key[0] !== ALG_ED25519 || key.toString('base64') !== keyB64)
    throw bad('key must be base64 of 0x01 followed by a 32-byte Ed25519 key');
  const publicKey = createPublicKey({
    key: { kty: 'OKP', crv: 'Ed25519', x: key.subarray(1).toString('base64url') },
    format: 'jwk',
  });
  const keyId = noteKeyId(name, publicKey);
  if (keyId.toString('hex') !== idHex) throw bad('key id does not match the name and key');
  return { name, keyId, publicKey };
}

/** The note text (body) of a checkpoint, ending with a newline. */
export function formatCheckpointBody(body: CheckpointBody): string {
  if (!/^[^\n]+$/.test(body.origin)) throw new TypeError('"origin" must be one non-empty line');
  if (body.root.length !== 32) throw new TypeError('"root" must be 32 bytes');
  return `${body.origin}\n${body.size}\n${Buffer.from(body.root).toString('base64')}\n${CHAIN_HEAD_EXTENSION} ${body.chainHead}\n`;
}

/** Signs a checkpoint into a C2SP signed note: body, blank line, `— <name> <base64(key id || sig)>`. */
export function signCheckpoint(body: CheckpointBody, signer: CheckpointSigner): string {
  const text = formatCheckpointBody(body);
  const sig = sign(null, Buffer.from(text), signer.privateKey);
  const blob = Buffer.concat([noteKeyId(signer.name, signer.publicKey), sig]).toString('base64');
  return `${text}\n\u2014 ${signer.name} ${blob}\n`;
}

/**
 * Splits a C2SP signed note into its text and signature lines and checks every signature made
 * by one of `keys` (matched by name and key id). Strict, as the spec asks: a note is refused
 * (`ERR_AUDIT_CHECKPOINT_INVALID`) unless it is text, a blank line and well-formed signature
 * lines; and when a signature by a known key fails, the note is refused
 * (`ERR_AUDIT_CHECKPOINT_SIGNATURE`) even if another known key verifies. Returns the text and
 * the names of the known keys whose signatures verified (possibly none).
 */
export function openSignedNote(
  note: string,
  keys: readonly VerifierKey[],
): { text: string; verifiedBy: string[] } {
  const invalid = (why: string) => new CheckpointError('ERR_AUDIT_CHECKPOINT_INVALID', `signed note: ${why}`);
  const split = note.lastIndexOf('\n\n');
  if (split < 0 || !note.endsWith('\n')) throw invalid('not a signed note (no blank line before signatures)');
  const text = note.slice(0, split + 1);
  if (text.includes('\n\n') || text === '\n') throw invalid('the note text holds a blank line');
  const sigLines = note.slice(split + 2, -1).split('\n');
  if (sigLines.length > 100) throw invalid('too many signature lines');
  const verifiedBy: string[] = [];
  for (const line of sigLines) {
    const m = /^\u2014 ([^\s+]{1,255}) ([A-Za-z0-9+/]+=*)$/.exec(line);
    if (!m) throw invalid(`bad signature line "${line.slice(0, 80)}"`);
    const blob = Buffer.from(m[2]!, 'base64');
    if (blob.length < 5 || blob.toString('base64') !== m[2]) throw invalid('signature is not base64');
    const key = keys.find((k) => k.name === m[1] && blob.subarray(0, 4).equals(k.keyId));
    if (!key) continue; // an unknown signer is ignored, as the spec says
    if (blob.length !== 4 + 64 || !verify(null, Buffer.from(text), key.publicKey, blob.subarray(4)))
      throw new CheckpointError(
        'ERR_AUDIT_CHECKPOINT_SIGNATURE',
        `signed note: the signature by "${key.name}" does not verify`,
      );
    verifiedBy.push(key.name);
  }
  return { text, verifiedBy };
}

/**
 * Verifies a C2SP signed-note checkpoint with one verifier key (string or parsed) and returns
 * what it commits to. Pure and offline. Throws `ERR_AUDIT_CHECKPOINT_INVALID` for a malformed
 * note and `ERR_AUDIT_CHECKPOINT_SIGNATURE` when no signature by that key verifies, or one fails.
 */
export function verifyCheckpoint(note: string, key: string | VerifierKey): CheckpointBody {
  const vkey = typeof key === 'string' ? parseVerifierKey(key) : key;
  const { text, verifiedBy } = openSignedNote(note, [vkey]);
  if (!verifiedBy.length)
    throw new CheckpointError(
      'ERR_AUDIT_CHECKPOINT_SIGNATURE',
      `checkpoint: no valid signature by "${vkey.name}"`,
    );
  return parseCheckpointBody(text);
}

/**
 * Parses a checkpoint body (unsigned note text) as C2SP tlog-checkpoint: origin, decimal size
 * (at most 2^53 - 1, so that it is exact), base64 root, then non-empty extension lines, exactly
 * one of which is the chain head. Throws `ERR_AUDIT_CHECKPOINT_INVALID`.
 */
export function parseCheckpointBody(text: string): CheckpointBody {
  const invalid = (why: string) => new CheckpointError('ERR_AUDIT_CHECKPOINT_INVALID', `checkpoint: ${why}`);
  if (!text.endsWith('\n')) throw invalid('the note text must end with a newline');
  const lines = text.split('\n');
  lines.pop();
  if (lines.length < 3) throw invalid('needs origin, size and root lines');
  const [origin, sizeText, rootText, ...ext] = lines as [string, string, string, ...string[]];
  if (!origin) throw invalid('empty origin');
  const size = parseNoteSize(sizeText);
  if (size === undefined) throw invalid('size is not a decimal number up to 2^53 - 1');
  const root = Buffer.from(rootText, 'base64');
  if (root.length !== 32 || root.toString('base64') !== rootText)
    throw invalid('root is not base64 of 32 bytes');
  if (ext.some((l) => l === '')) throw invalid('empty extension line');
  const heads = ext.filter((l) => l.startsWith(`${CHAIN_HEAD_EXTENSION} `) || l === CHAIN_HEAD_EXTENSION);
  if (heads.length > 1) throw invalid(`more than one "${CHAIN_HEAD_EXTENSION}" line`);
  const head = heads[0];
  if (!head || !/^[0-9a-f]{64}$/.test(head.slice(CHAIN_HEAD_EXTENSION.length + 1)))
    throw invalid(`missing or bad "${CHAIN_HEAD_EXTENSION}" line`);
  return { origin, size, root, chainHead: head.slice(CHAIN_HEAD_EXTENSION.length + 1) };
}

/** A decimal size without leading zeros and at most 2^53 - 1, or undefined. */
export function parseNoteSize(text: string): number | undefined {
  if (!/^(0|[1-9][0-9]{0,15})$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}
