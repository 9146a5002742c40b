import type { KeyObject } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { FromWorker, ToWorker } from './sign-worker.ts';
import { signInput } from './sign.ts';

/** Signs JWS signing inputs, off the event loop when a worker is running. */
export interface SigningPool {
  /** The base64url signature of `input` under `key`. */
  sign(input: string, key: KeyObject): Promise<string>;
  /** Stops the worker; later calls sign on the calling thread. */
  close(): Promise<void>;
}

/**
 * The most signatures one message to the worker carries. Without a cap, every request read in one
 * poll phase went over as one batch while the event loop waited, then every answer came back at
 * once while the worker waited: under pipelined load the two threads took turns instead of
 * overlapping (17.9k tokens/s uncapped against 27.8k with batches of 8, same run; batches of 4
 * and 16 within noise).
 */
const MAX_BATCH = 8;

interface Pending {
  readonly input: string;
  readonly keyId: number;
  readonly key: KeyObject;
  readonly resolve: (sig: string) => void;
  readonly reject: (err: Error) => void;
}

/**
 * The worker's module: beside this file in the sources; in the build (`npm run build`), where this
 * code may sit in a shared chunk, at dist/sts/token/sign-worker.js.
 */
function signWorkerUrl(): URL {
  const here = import.meta.url;
  if (here.endsWith('.ts')) return new URL('./sign-worker.ts', here);
  return new URL('sts/token/sign-worker.js', here.slice(0, here.lastIndexOf('/dist/') + '/dist/'.length));
}

/**
 * A one-thread signing pool (or, with `worker: false`, signing on the calling thread). The
 * signature is the single most expensive step of issuing a token (about a third of the STS's CPU
 * per token, profiled), so it runs beside the event loop, which meanwhile parses, checks and
 * answers other requests. Signatures requested in one turn of the event loop go to the worker
 * together, at most {@link MAX_BATCH} to a message, so that the worker starts on the first while
 * the event loop is still reading the rest. If the worker dies, what it held and everything after
 * is signed on the calling thread.
 */
export function createSigningPool(
  options: { readonly worker?: boolean; readonly onError?: (err: Error) => void } = {},
): SigningPool {
  let worker: Worker | undefined = options.worker === false ? undefined : new Worker(signWorkerUrl());
  worker?.unref();
  const keyIds = new WeakMap<KeyObject, number>();
  let nextKeyId = 1;
  let nextBatch = 1;
  let queue: Pending[] = [];
  let scheduled = false;
  const inflight = new Map<number, Pending[]>();

  // A worker that dies takes no token with it: what it held is signed here instead.
  const rescue = () => {
    for (const batch of inflight.values()) for (const p of batch) signHere(p);
    inflight.clear();
  };
  worker?.on('message', (m: FromWorker) => {
    const batch = inflight.get(m.batch);
    if (!batch) return;
    inflight.delete(m.batch);
    if (inflight.size === 0) worker?.unref();
    if (m.error !== undefined || !m.signatures) {
      const err = new Error(`signing failed: ${m.error}`);
      for (const p of batch) p.reject(err);
      return;
    }
    batch.forEach((p, i) => p.resolve(m.signatures![i]!));
  });
  worker?.on('error', (err) => {
    options.onError?.(err);
    worker = undefined;
    rescue();
  });
  worker?.on('exit', () => {
    worker = undefined;
    rescue();
  });

  const flush = () => {
    scheduled = false;
    if (queue.length === 0) return;
    const batch = queue;
    queue = [];
    // A lone signature with the worker idle is cheaper here: the hand-off and the worker's wake-up
    // cost more CPU than the signature (one token per new connection: 72 µs of worker CPU a token
    // against ~25 µs signed here, profiled). Batches, or a busy worker, go to the worker.
    if (!worker || (batch.length === 1 && inflight.size === 0)) {
      for (const p of batch) signHere(p);
      return;
    }
    const id = nextBatch++;
    inflight.set(id, batch);
    worker.ref();
    worker.postMessage({
      type: 'sign',
      batch: id,
      keyIds: batch.map((p) => p.keyId),
      inputs: batch.map((p) => p.input),
    } satisfies ToWorker);
  };
  const signHere = (p: Pending) => {
    try {
      p.resolve(signInput(p.key, p.input));
    } catch (err) {
      p.reject(err as Error);
    }
  };

  return {
    sign(input, key) {
      return new Promise((resolve, reject) => {
        if (!worker) return signHere({ input, keyId: 0, key, resolve, reject });
        let keyId = keyIds.get(key);
        if (keyId === undefined) {
          keyId = nextKeyId++;
          keyIds.set(key, keyId);
          worker?.postMessage({ type: 'key', id: keyId, key } satisfies ToWorker);
        }
        queue.push({ input, keyId, key, resolve, reject });
        if (queue.length >= MAX_BATCH) flush();
        else if (!scheduled) {
          scheduled = true;
          setImmediate(flush);
        }
      });
    },
    async close() {
      const w = worker;
      worker = undefined;
      if (w) await w.terminate();
    },
  };
}
