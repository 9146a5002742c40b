// What keeping the query index as it appends costs the file store's writer (decision 0095): the
// query bench's events written straight into a fresh file store (sealed, fdatasync per batch,
// batches of 10,000, segments of 100,000), timed from the first append to the end of `close()`
// (which waits for the index files to be saved), by this tree and by a baseline tree — a checkout
// of the commit to compare with, its node_modules linked — in alternating child processes.
//
//   git archive <commit> | tar -x -C /tmp/base && ln -s $PWD/node_modules /tmp/base/node_modules
//   node bench/query/file-append-cost.ts --baseline /tmp/base [--events 300000] [--pairs 3]
//
// Prints one line per run and a final machine-readable line: `BENCH_FILE_APPEND {json}`.
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import type * as AuditModule from '../../audit/index.ts';
import { machineFacts } from '../machine.ts';
import { trafficEvent } from '../traffic.ts';

const args = process.argv.slice(2);
const flag = (name: string) => {
  const i = args.indexOf(name);
  return i === -1 ? undefined : args[i + 1];
};
const BATCH = 10_000;

if (args[0] === '--child') {
  // One run: argv = --child TREE DIR EVENTS
  const [, tree, dir, events] = args as [string, string, string, string];
  const audit = (await import(pathToFileURL(join(tree, 'audit/index.ts')).href)) as typeof AuditModule;
  const origin = 'example.org/bench/append';
  const signer = audit.loadCheckpointKey(join(dir, 'data'), origin);
  const store = await audit.openFileStore({
    dir: join(dir, 'log'),
    sealer: audit.createSealer(signer, origin),
  });
  const n = Number(events);
  const batches = Array.from({ length: Math.ceil(n / BATCH) }, (_, b) =>
    Array.from({ length: Math.min(BATCH, n - b * BATCH) }, (_, j) => trafficEvent(b * BATCH + j, n)),
  );
  const cpu = process.cpuUsage();
  const started = performance.now();
  for (const batch of batches) await store.append(batch);
  await store.close();
  const seconds = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  let indexFiles = 0;
  try {
    indexFiles = readdirSync(join(dir, 'log', 'index')).length;
  } catch {
    // none
  }
  process.stdout.write(
    `${JSON.stringify({ seconds, eventsPerSec: Math.round(n / seconds), cpuUsPerEvent: (used.user + used.system) / n, indexFiles })}\n`,
  );
  process.exit(0);
}

const baseline = flag('--baseline');
if (!baseline) throw new Error('--baseline DIR (a checkout of the commit to compare with) is required');
const EVENTS = Number(flag('--events') ?? 300_000);
const PAIRS = Number(flag('--pairs') ?? 3);
const here = resolve(new URL('../..', import.meta.url).pathname);
const trees = { branch: here, baseline: resolve(baseline) };
const loadBefore = loadavg();
const runs: Record<string, { eventsPerSec: number; cpuUsPerEvent: number; indexFiles: number }[]> = {
  branch: [],
  baseline: [],
};
for (let p = 0; p < PAIRS; p++) {
  const order = p % 2 ? (['baseline', 'branch'] as const) : (['branch', 'baseline'] as const);
  for (const name of order) {
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-append-'));
    try {
      const { stdout } = await promisify(execFile)(
        process.execPath,
        [new URL(import.meta.url).pathname, '--child', trees[name], dir, String(EVENTS)],
        { maxBuffer: 1_048_576 },
      );
      const r = JSON.parse(stdout) as { eventsPerSec: number; cpuUsPerEvent: number; indexFiles: number };
      runs[name]!.push({ ...r, cpuUsPerEvent: Math.round(r.cpuUsPerEvent * 10) / 10 });
      console.log(
        `${name}: ${r.eventsPerSec} events/s, ${r.cpuUsPerEvent.toFixed(1)} µs CPU per event, ${r.indexFiles} index files`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const ratio = (k: 'eventsPerSec' | 'cpuUsPerEvent') =>
  Math.round((mean(runs.branch!.map((r) => r[k])) / mean(runs.baseline!.map((r) => r[k]))) * 1000) / 1000;
const summary = {
  events: EVENTS,
  pairs: PAIRS,
  ...runs,
  throughputRatio: ratio('eventsPerSec'),
  cpuRatio: ratio('cpuUsPerEvent'),
};
console.log(`branch / baseline: throughput ${summary.throughputRatio}, CPU per event ${summary.cpuRatio}`);
console.log(`BENCH_FILE_APPEND ${JSON.stringify({ ...machineFacts(loadBefore, loadavg()), ...summary })}`);
