/** Resolves on the first SIGINT or SIGTERM. */
export function stopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
}

/**
 * Runs a part's graceful `close()` (which drains for at most its `drainTimeout`) with a bound on
 * the whole: past `limitMs`, or on a second SIGINT/SIGTERM, the process exits 1 at once saying
 * why, so that nothing (a stuck flush, a store that does not answer) keeps it running.
 */
export async function closeWithin(name: string, limitMs: number, close: () => Promise<void>): Promise<void> {
  const giveUp = (why: string) => {
    console.error(`portcullis ${name}: ${why}; exiting now`);
    process.exit(1);
  };
  const timer = setTimeout(() => giveUp(`shutdown took longer than ${Math.round(limitMs / 1000)}s`), limitMs);
  timer.unref();
  const again = () => giveUp('second stop signal');
  process.once('SIGINT', again);
  process.once('SIGTERM', again);
  try {
    await close();
  } finally {
    clearTimeout(timer);
    process.off('SIGINT', again);
    process.off('SIGTERM', again);
  }
}
