import { SidecarError } from '../../errors.ts';
import type { InboundContext, InboundLayer } from '../context.ts';

/** Limits of {@link fairShareLayer} (the config's `inbound.fairShare`, durations in ms). */
export interface FairShareOptions {
  /** Requests one caller may have at the app at once. */
  readonly perCaller: number;
  /** Requests of one caller that may wait for a slot; more are refused at once. */
  readonly queue: number;
  /** Longest wait for a slot; then the request is refused. */
  readonly queueTimeout: number;
  /** What a refused caller is told to wait (`Retry-After`, rounded up to whole seconds). */
  readonly retryAfter: number;
}

/** A caller's slots: how many of its requests are at the app, and who waits. */
interface Caller {
  active: number;
  readonly waiting: Waiter[];
}

interface Waiter {
  readonly admit: () => void;
}

/** Counts of the layer, for tests and metrics. */
export interface FairShareStats {
  /** Callers with a request at the app or waiting. */
  readonly callers: number;
  readonly active: number;
  readonly waiting: number;
}

/**
 * Layer 6, fair share: after authorization and before forwarding, a caller (the peer's SPIFFE ID)
 * may have `perCaller` requests at the app at once, and `queue` more waiting for one of its
 * slots, each for at most `queueTimeout`. Past that the request is refused with 429
 * `ERR_SIDECAR_CALLER_OVER_LIMIT` and `Retry-After` (and recorded like every refusal), while
 * other callers keep their own slots: one caller, however slow its bodies, holds at most
 * `perCaller` connections of the pool to the app. A slot is held until the handler records the
 * request (`ctx.releaseSlot`: answered, refused later, upstream failed or the client gone — the
 * exchange with the app is over by then); a waiter whose client goes away leaves the queue. No
 * listener or timer is added to a request that gets a slot at once.
 */
export function fairShareLayer(options: FairShareOptions): InboundLayer & { stats(): FairShareStats } {
  const callers = new Map<string, Caller>();
  const retryAfterSeconds = Math.max(1, Math.ceil(options.retryAfter / 1000));

  const release = (id: string, caller: Caller) => {
    const next = caller.waiting.shift();
    if (next) return next.admit();
    caller.active--;
    if (caller.active === 0) callers.delete(id);
  };

  const overLimit = (ctx: InboundContext, message: string) => {
    ctx.retryAfterSeconds = retryAfterSeconds;
    return new SidecarError('ERR_SIDECAR_CALLER_OVER_LIMIT', message);
  };

  const layer = (ctx: InboundContext): void | Promise<void> => {
    const id = ctx.peer!.spiffeId.uri;
    let caller = callers.get(id);
    if (!caller) {
      caller = { active: 0, waiting: [] };
      callers.set(id, caller);
    }
    const c = caller;
    if (c.active < options.perCaller) {
      c.active++;
      ctx.releaseSlot = () => release(id, c);
      return;
    }
    if (c.waiting.length >= options.queue)
      throw overLimit(ctx, 'too many concurrent requests from this caller; retry later');
    return new Promise<void>((resolve, reject) => {
      let state: 'waiting' | 'admitted' | 'gone' = 'waiting';
      const leave = () => {
        const i = c.waiting.indexOf(waiter);
        if (i >= 0) c.waiting.splice(i, 1);
        if (c.active === 0 && c.waiting.length === 0) callers.delete(id);
      };
      const timer = setTimeout(() => {
        if (state !== 'waiting') return;
        state = 'gone';
        leave();
        reject(overLimit(ctx, 'too many concurrent requests from this caller; retry later'));
      }, options.queueTimeout);
      timer.unref();
      const waiter: Waiter = {
        // A slot handed over by release(): `active` stays as it was (one left, one came in).
        admit: () => {
          state = 'admitted';
          clearTimeout(timer);
          ctx.releaseSlot = () => release(id, c);
          resolve();
        },
      };
      c.waiting.push(waiter);
      ctx.res.once('close', () => {
        if (state !== 'waiting') return;
        state = 'gone';
        clearTimeout(timer);
        leave();
        // Still recorded: the handler maps a body that stopped to its 408, anything else to this.
        reject(
          new SidecarError(
            'ERR_SIDECAR_UPSTREAM_UNAVAILABLE',
            'the client closed the connection while waiting for a slot',
          ),
        );
      });
    });
  };
  return Object.assign(layer, {
    stats(): FairShareStats {
      let active = 0;
      let waiting = 0;
      for (const c of callers.values()) {
        active += c.active;
        waiting += c.waiting.length;
      }
      return { callers: callers.size, active, waiting };
    },
  });
}
