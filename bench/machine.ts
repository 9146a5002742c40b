import { readFileSync } from 'node:fs';
// What a benchmark records about the machine and the run, beside its figures.
import { cpus, freemem, totalmem } from 'node:os';

/** Date, Node version, cores, memory (GiB) and the load average before and after the run. */
export function machineFacts(loadBefore: readonly number[], loadAfter: readonly number[]) {
  const two = (x: number) => Math.round(x * 100) / 100;
  return {
    date: new Date().toISOString(),
    node: process.version,
    nproc: cpus().length,
    memGb: Math.round(totalmem() / 2 ** 30),
    freeGb: Math.round(freemem() / 2 ** 30),
    load: { before: loadBefore.map(two), after: loadAfter.map(two) },
  };
}

/** CPU seconds (user + system) used so far by `pids` (Linux /proc; 100 ticks per second). */
export function cpuSeconds(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // a process that is gone has nothing more to count
    }
  }
  return ticks / 100;
}
