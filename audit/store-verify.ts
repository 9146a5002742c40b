import type { AuditStore } from './store/store.ts';
import type { ChainVerdict, ChainVerifierOptions } from './chain-verify.ts';
import { ChainVerifier } from './chain-verify.ts';

/**
 * Verifies a whole store from seq 0 as its lines are stored (no trust in the store's own
 * reading of them): sequence, links, hashes, Merkle root, and agreement with an optional
 * verified checkpoint. Streams; memory stays O(log n) plus one segment or page.
 */
export async function verifyStore(
  store: AuditStore,
  options: ChainVerifierOptions = {},
): Promise<ChainVerdict> {
  const v = new ChainVerifier(options);
  for await (const buf of store.readBuffers()) if (!v.pushBuffer(buf)) break;
  return v.result();
}
