import type { AuditStore } from './store/store.ts';
import type { ChainVerdict, ChainVerifierOptions } from './chain-verify.ts';
import { ChainVerifier } from './chain-verify.ts';

/**
 * Verifies a whole store from seq 0 as its lines are stored (no trust in the store's own
 * reading of them): sequence, links, hashes, Merkle root, agreement with an optional verified
 * checkpoint and, with `sealKeys`, how far trusted seals cover the log. Reports bytes that are
 * no whole line (a torn or junk tail) in `torn`. Streams; memory stays O(log n) plus a chunk.
 */
export async function verifyStore(
  store: AuditStore,
  options: ChainVerifierOptions = {},
): Promise<ChainVerdict> {
  const seals = options.sealKeys ? [...(options.seals ?? []), ...(await store.seals())] : options.seals;
  const v = new ChainVerifier({ ...options, seals });
  const torn: { where: string; bytes: number }[] = [];
  for await (const buf of store.readBuffers({ onTail: (t) => torn.push(t) })) if (!v.pushBuffer(buf)) break;
  const verdict = v.result();
  return verdict.ok && torn.length ? { ...verdict, torn } : verdict;
}
