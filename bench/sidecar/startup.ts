// Sidecar start-up and idle memory (issue 20): starts the real `portcullis sidecar --config` process
// from the build (dist/, `npm run build`) and from the sources, interleaved, against a real STS and
// app, and records per start: milliseconds from spawn to ready (the `sidecar listening` line, written
// once startSidecar has resolved: listener up, signing keys fetched from the STS, policy and
// certificate loaded), RSS after `--idle` seconds, /proc smaps_rollup and RSS by mapping, and the V8
// heap figures (bench/sidecar/report-memory.mjs). Mode `built-no-cache` runs the build without its
// compile cache (decision 0107); each mode starts once unmeasured first. Usage: node
// bench/sidecar/startup.ts [--runs 5] [--idle 3s] [--modes built,sources] [--node-options="…"]
// (with `=`: the value starts with a dash). Prints `BENCH_STARTUP {json}` last.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { benchFlags, durationFlag } from '../flags.ts';
import { cpuSeconds, machineFacts } from '../machine.ts';
import { rssByMapping, rssMb, smapsRollup } from '../memory.ts';
import { policyYaml } from './policy.ts';
import { childrenStoppedOnExit, startBenchSts, startJsonChild, writeOrdersSidecarConfig } from './harness.ts';
import { SIDECAR_NODE_OPTIONS, sidecarEntry } from './entry.ts';

const { values: flags } = benchFlags({
  options: {
    runs: { type: 'string', default: '5' },
    idle: { type: 'string', default: '3s' },
    modes: { type: 'string', default: 'built,sources' },
    rules: { type: 'string', default: '100' },
    'node-options': { type: 'string', default: SIDECAR_NODE_OPTIONS },
  },
  strict: true,
});
const runs = Number(flags.runs);
const idleMs = durationFlag('idle', flags.idle);
const modes = flags.modes.split(',');
for (const m of modes)
  if (m !== 'built' && m !== 'built-no-cache' && m !== 'sources' && !m.startsWith('/')) {
    console.error(
      `--modes: unknown mode "${m}" (built, built-no-cache, sources, or an entry file's absolute path)`,
    );
    process.exit(2);
  }
if (!Number.isInteger(runs) || runs < 1) {
  console.error('--runs must be a positive integer');
  process.exit(2);
}
const here = new URL('.', import.meta.url).pathname;

interface Start {
  mode: string;
  readyMs: number;
  /** CPU (user + system) the process used up to ready: less sensitive than wall time to other load. */
  readyCpuMs: number;
  idleRssMb: number;
  rollup: Record<string, number>;
  byMapping: Record<string, number>;
  heap: Record<string, unknown>;
}

/** Starts one sidecar process, waits for its ready line, lets it idle, measures it, stops it. */
async function startOnce(mode: string, config: string): Promise<Start> {
  const args = [
    ...flags['node-options'].split(' ').filter(Boolean),
    '--import',
    join(here, 'report-memory.mjs'),
    sidecarEntry(mode === 'built-no-cache' ? 'built' : mode),
    'sidecar',
    '--config',
    config,
  ];
  const t0 = performance.now();
  const child: ChildProcess = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      PORTCULLIS_LOG_LEVEL: 'info',
      ...(mode === 'built-no-cache' ? { PORTCULLIS_COMPILE_CACHE: 'off' } : {}),
    },
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c));
  const ready = await new Promise<{ ms: number; cpuMs: number }>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', function onData(c: Buffer) {
      buf += c;
      for (const line of buf.split('\n')) {
        if (!line.includes('"sidecar listening"')) continue;
        child.stdout!.off('data', onData);
        child.stdout!.resume();
        resolve({ ms: performance.now() - t0, cpuMs: Math.round(cpuSeconds([child.pid!]) * 1000) });
        return;
      }
    });
    child.once('exit', (code) => reject(new Error(`sidecar (${mode}) exited with ${code}: ${stderr}`)));
  });
  await new Promise((r) => setTimeout(r, idleMs));
  const pid = child.pid!;
  const idleRssMb = rssMb(pid);
  const rollup = smapsRollup(pid);
  const byMapping = rssByMapping(pid);
  const heapLine = new Promise<Record<string, unknown>>((resolve) => {
    const check = () => {
      const m = /MEMORY (\{.*\})\n/.exec(stderr);
      if (m) resolve(JSON.parse(m[1]!) as Record<string, unknown>);
      else setTimeout(check, 20);
    };
    check();
  });
  child.kill('SIGUSR2');
  const heap = await heapLine;
  await new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
  return {
    mode,
    readyMs: Math.round(ready.ms),
    readyCpuMs: ready.cpuMs,
    idleRssMb,
    rollup: { Rss: rollup.Rss!, Pss: rollup.Pss!, Pss_Anon: rollup.Pss_Anon!, Pss_File: rollup.Pss_File! },
    byMapping,
    heap,
  };
}

const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-startup-'));
const children = childrenStoppedOnExit(dir);
try {
  const { certs, sts } = await startBenchSts(dir);
  const app = await startJsonChild([join(here, 'app.ts')]);
  children.push(app.child);
  const appPort = app.info.port!;
  const policyFile = join(dir, 'orders-policy.yaml');
  writeFileSync(policyFile, policyYaml(Number(flags.rules)));
  const config = writeOrdersSidecarConfig(
    dir,
    certs,
    sts.url,
    `app: "http://127.0.0.1:${appPort}", policy: ${policyFile}`,
  );
  // One start per mode that is not measured: it fills the build's compile cache, as the image's
  // build does (decision 0107), and lets the STS and the app answer once.
  for (const mode of modes) await startOnce(mode, config);
  const loadBefore = loadavg();
  const starts: Start[] = [];
  for (let i = 0; i < runs; i++)
    for (const mode of i % 2 === 0 ? modes : [...modes].reverse()) {
      const s = await startOnce(mode, config);
      console.error(
        `[startup] ${mode}: ready ${s.readyMs} ms (${s.readyCpuMs} ms CPU), idle RSS ${s.idleRssMb} MB (Pss ${s.rollup.Pss}), heap used ${String(s.heap.heapUsed)} MB; ${JSON.stringify(s.byMapping)}`,
      );
      starts.push(s);
    }
  const loadAfter = loadavg();
  await sts.close();
  const summary = Object.fromEntries(
    modes.map((mode) => {
      const mine = starts.filter((s) => s.mode === mode);
      const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
      const ready = sorted(mine.map((s) => s.readyMs));
      const cpu = sorted(mine.map((s) => s.readyCpuMs));
      const rss = sorted(mine.map((s) => s.idleRssMb));
      return [
        mode,
        {
          readyMs: { min: ready[0], median: ready[Math.floor(ready.length / 2)], max: ready.at(-1) },
          readyCpuMs: { min: cpu[0], median: cpu[Math.floor(cpu.length / 2)], max: cpu.at(-1) },
          idleRssMb: { min: rss[0], median: rss[Math.floor(rss.length / 2)], max: rss.at(-1) },
        },
      ];
    }),
  );
  console.log(
    `BENCH_STARTUP ${JSON.stringify({ ...machineFacts(loadBefore, loadAfter), nodeOptions: flags['node-options'], idleS: idleMs / 1000, summary, starts })}`,
  );
} finally {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
