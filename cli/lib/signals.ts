/** A repeat of the stop signal sooner than this after the first is the same Ctrl-C delivered twice. */
const REPEAT_WINDOW_MS = 1_000;

let first: { signal: NodeJS.Signals; at: number } | undefined;

/**
 * Resolves with the first SIGINT or SIGTERM this process receives; the long-running command then
 * drains through {@link closeWithin}. A Ctrl-C reaches every process of the terminal's foreground
 * group, and `npm run` forwards it to its child once more: the server must survive that second
 * copy, or it dies with 130 and nothing drains.
 */
export function untilShutdownSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals) => {
      if (first) return;
      first = { signal, at: Date.now() };
      resolve(signal);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

/**
 * Runs a part's graceful `close()` (which drains for at most its `drainTimeout`) with a bound on
 * the whole: past `limitMs`, or on a stop signal given again on purpose (more than a second after
 * the first: copies of the same Ctrl-C arrive together and are ignored), the process exits 1 at
 * once saying why, so that nothing (a stuck flush, a store that does not answer) keeps it running.
 */
export async function closeWithin(name: string, limitMs: number, close: () => Promise<void>): Promise<void> {
  const giveUp = (why: string) => {
    console.error(`portcullis ${name}: ${why}; exiting now`);
    process.exit(1);
  };
  const timer = setTimeout(() => giveUp(`shutdown took longer than ${Math.round(limitMs / 1000)}s`), limitMs);
  timer.unref();
  const again = () => {
    if (!first || Date.now() - first.at >= REPEAT_WINDOW_MS) giveUp('second stop signal');
  };
  process.on('SIGINT', again);
  process.on('SIGTERM', again);
  try {
    await close();
  } finally {
    clearTimeout(timer);
    process.off('SIGINT', again);
    process.off('SIGTERM', again);
  }
}
