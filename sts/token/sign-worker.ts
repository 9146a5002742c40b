// Worker thread of the signing pool: ES256/EdDSA signatures over JWS signing inputs, in batches.
import type { KeyObject } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { signInput } from './sign.ts';

/** Messages from the pool: a key to remember (one per rotation), or a batch of signing inputs. */
export type ToWorker =
  | { readonly type: 'key'; readonly id: number; readonly key: KeyObject }
  | { readonly type: 'sign'; readonly batch: number; readonly keyIds: number[]; readonly inputs: string[] };

/** The answer to one batch: base64url signatures in order, or an error message. */
export type FromWorker = { readonly batch: number; readonly signatures?: string[]; readonly error?: string };

const keys = new Map<number, KeyObject>();

parentPort?.on('message', (m: ToWorker) => {
  if (m.type === 'key') keys.set(m.id, m.key);
  else {
    try {
      const signatures = m.inputs.map((input, i) => {
        const key = keys.get(m.keyIds[i]!);
        if (!key) throw new Error(`unknown key ${m.keyIds[i]}`);
        return signInput(key, input);
      });
      parentPort!.postMessage({ batch: m.batch, signatures } satisfies FromWorker);
    } catch (err) {
      parentPort!.postMessage({ batch: m.batch, error: (err as Error).message } satisfies FromWorker);
    }
  }
});
