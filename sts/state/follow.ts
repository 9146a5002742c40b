import type { Logger } from '../../core/index.ts';
import type { DenyList } from '../revocations/deny-list.ts';
import type { StsStateStore } from './store.ts';

/** A running copy of the store's revocations into the in-memory deny-list. */
export interface RevocationFollower {
  /** Copies now; resolves when done (rejects when the store cannot be read). */
  sync(): Promise<void>;
  stop(): void;
}

/**
 * Keeps the deny-list (what every request checks, in memory) up to date with the durable store:
 * once at start, then every `intervalMs`, so that a revocation another replica took is refused
 * here within one interval. A failed read keeps what is known and logs; it never empties the list.
 */
export function followRevocations(options: {
  readonly store: StsStateStore;
  readonly denyList: DenyList;
  readonly intervalMs: number;
  readonly clock: { now(): number };
  readonly logger: Logger;
}): RevocationFollower {
  const { store, denyList, clock, logger } = options;
  let failing = false;
  const sync = async () => {
    for (const e of await store.revocations(clock.now())) {
      if (e.kind === 'jti') denyList.revokeJti(e.value, e.expiresAt);
      else denyList.revokeSerial(e.value, e.expiresAt);
    }
  };
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    sync()
      .then(
        () => {
          if (failing) logger.info({ store: store.kind }, 'state store readable again');
          failing = false;
        },
        (err: unknown) => {
          if (!failing)
            logger.error(
              { err: (err as Error).message, store: store.kind },
              'cannot read revocations from the state store; keeping the known ones',
            );
          failing = true;
        },
      )
      .finally(() => {
        running = false;
      });
  }, options.intervalMs);
  timer.unref();
  return { sync, stop: () => clearInterval(timer) };
}
