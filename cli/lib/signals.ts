/**
 * Resolves with the name of the first SIGINT or SIGTERM this process receives, after which a
 * long-running command drains and exits 0. Later signals are ignored:
 * a Ctrl-C reaches every process of the terminal's foreground group, and `npm run` forwards it to
 * its child once more, so a server that stopped listening after the first signal would die of the
 * second one (exit 130, nothing drained). The drain itself is bounded by each server's own
 * timeouts; `hardStopMs` is the last resort, after which the process exits 1.
 */
export function untilShutdownSignal(command: string, hardStopMs = 60_000): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let first: NodeJS.Signals | undefined;
    const on = (signal: NodeJS.Signals) => {
      if (first) return;
      first = signal;
      setTimeout(() => {
        process.stderr.write(
          `portcullis ${command}: did not stop within ${hardStopMs / 1000} s of ${signal}; exiting\n`,
        );
        process.exit(1);
      }, hardStopMs).unref();
      resolve(signal);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}
