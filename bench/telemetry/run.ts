// Telemetry cost on the sidecar (issue 6): the inbound sidecar benchmark (bench/sidecar/run.ts,
// `--only sidecar`) with tracing off, on (OTLP/HTTP to a local sink that counts what it gets), on
// with 1 % sampling, and optionally the same benchmark from an earlier checkout (`--baseline DIR`,
// e.g. the commit before telemetry) — modes alternate round by round so that load drifts hit them
// alike.
// Usage: node bench/telemetry/run.ts [--duration 15s] [--rate-duration 5s] [--rounds 3]
// [--baseline DIR] [--record]. Prints `BENCH_TELEMETRY {json}` last; --record writes
// bench/RESULTS-telemetry.md (keeping its hand-written notes after "## Notes").
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadavg } from 'node:os';
import { machineFacts } from '../machine.ts';
import { join, resolve } from 'node:path';
import { benchFlags, durationFlag } from '../flags.ts';

const { values: flags } = benchFlags({
  options: {
    duration: { type: 'string', default: '15s' },
    'rate-duration': { type: 'string', default: '5s' },
    rounds: { type: 'string', default: '3' },
    baseline: { type: 'string' },
    record: { type: 'boolean', default: false },
  },
  strict: true,
});
// Passed on to bench/sidecar/run.ts as written; checked here, before anything starts.
durationFlag('duration', flags.duration);
durationFlag('rate-duration', flags['rate-duration']);
const rounds = Number(flags.rounds);
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) {
  console.error('--rounds: must be an integer from 1 to 20');
  process.exit(2);
}
const root = new URL('../../', import.meta.url).pathname;
const baselineDir = flags.baseline ? resolve(flags.baseline) : undefined;
if (baselineDir && !existsSync(join(baselineDir, 'bench/sidecar/run.ts'))) {
  console.error(`--baseline: ${baselineDir} has no bench/sidecar/run.ts`);
  process.exit(2);
}

// The OTLP sink: accepts every export, counts requests and bytes.
let exports = 0;
let exportedBytes = 0;
const sink = createServer((req, res) => {
  req.on('data', (c: Buffer) => (exportedBytes += c.length));
  req.on('end', () => {
    exports++;
    res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
  });
});
await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
const endpoint = `http://127.0.0.1:${(sink.address() as AddressInfo).port}`;

interface SidecarFigures {
  rps: number;
  p99ms: number;
  cpuUsPerRequest: number;
  p99msAtRate: number;
  rssMaxMb: number;
}
type Mode = 'baseline' | 'off' | 'on' | 'sampled';

function runOnce(mode: Mode): Promise<SidecarFigures> {
  const cwd = mode === 'baseline' ? baselineDir! : root;
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.OTEL_EXPORTER_OTLP_ENDPOINT;
  delete env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  delete env.BENCH_SIDECAR_NODE_ARGS;
  delete env.OTEL_TRACES_SAMPLER;
  delete env.OTEL_TRACES_SAMPLER_ARG;
  if (mode === 'on' || mode === 'sampled') {
    env.OTEL_EXPORTER_OTLP_ENDPOINT = endpoint;
    env.BENCH_SIDECAR_NODE_ARGS = `--import ${join(root, 'bench/telemetry/preload.ts')}`;
  }
  if (mode === 'sampled') {
    // The standard sampler variables: 1 % of new traces recorded (parents' decisions are honoured).
    env.OTEL_TRACES_SAMPLER = 'parentbased_traceidratio';
    env.OTEL_TRACES_SAMPLER_ARG = '0.01';
  }
  const args = [
    join(cwd, 'bench/sidecar/run.ts'),
    '--only',
    'sidecar',
    '--duration',
    flags.duration,
    '--rate-duration',
    flags['rate-duration'],
  ];
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('BENCH_SIDECAR '));
      if (code !== 0 || !line) return reject(new Error(`${mode}: bench/sidecar/run.ts exited ${code}`));
      const s = JSON.parse(line.slice('BENCH_SIDECAR '.length)).sidecar;
      resolvePromise({
        rps: s.throughput.rps,
        p99ms: s.throughput.p99ms,
        cpuUsPerRequest: s.cpuUsPerRequest,
        p99msAtRate: s.fixed.p99ms,
        rssMaxMb: s.rssMaxMb,
      });
    });
  });
}

const modes: Mode[] = [...(baselineDir ? (['baseline'] as const) : []), 'off', 'on', 'sampled'];
const runs: Record<Mode, SidecarFigures[]> = { baseline: [], off: [], on: [], sampled: [] };
const loadBefore = loadavg();
for (let round = 1; round <= rounds; round++) {
  for (const mode of modes) {
    const f = await runOnce(mode);
    runs[mode].push(f);
    console.error(`[telemetry] round ${round} ${mode}: ${JSON.stringify(f)}`);
  }
}
const loadAfter = loadavg();
sink.close();

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const summarize = (fs: SidecarFigures[]) =>
  fs.length === 0
    ? undefined
    : {
        rpsMedian: Math.round(median(fs.map((f) => f.rps))),
        rpsBest: Math.max(...fs.map((f) => f.rps)),
        cpuUsPerRequestMedian: median(fs.map((f) => f.cpuUsPerRequest)),
        cpuUsPerRequestBest: Math.min(...fs.map((f) => f.cpuUsPerRequest)),
        p99msAtRateMedian: median(fs.map((f) => f.p99msAtRate)),
        rssMaxMb: Math.max(...fs.map((f) => f.rssMaxMb)),
      };
const summary = {
  ...machineFacts(loadBefore, loadAfter),
  rounds,
  duration: flags.duration,
  baseline: baselineDir ?? null,
  modes: Object.fromEntries(modes.map((m) => [m, summarize(runs[m])])),
  runs,
  otlp: { exports, bytes: exportedBytes },
  ratios: {} as Record<string, number | null>,
};
const r = (a: number | undefined, b: number | undefined) => (a && b ? +(a / b).toFixed(3) : null);
const m = summary.modes as Record<Mode, ReturnType<typeof summarize>>;
summary.ratios = {
  offToBaselineRpsBest: r(m.off?.rpsBest, m.baseline?.rpsBest),
  offToBaselineCpuBest: r(m.off?.cpuUsPerRequestBest, m.baseline?.cpuUsPerRequestBest),
  onToOffRpsBest: r(m.on?.rpsBest, m.off?.rpsBest),
  onToOffCpuBest: r(m.on?.cpuUsPerRequestBest, m.off?.cpuUsPerRequestBest),
  sampledToOffRpsBest: r(m.sampled?.rpsBest, m.off?.rpsBest),
  sampledToOffCpuBest: r(m.sampled?.cpuUsPerRequestBest, m.off?.cpuUsPerRequestBest),
};
console.log(`BENCH_TELEMETRY ${JSON.stringify(summary)}`);

if (flags.record) {
  const file = join(root, 'bench/RESULTS-telemetry.md');
  const notes = existsSync(file) ? (readFileSync(file, 'utf8').split('\n## Notes\n')[1] ?? '') : '';
  const row = (mode: Mode) => {
    const s = m[mode];
    return s
      ? `| ${mode} | ${s.rpsBest} | ${s.rpsMedian} | ${s.cpuUsPerRequestBest} | ${s.cpuUsPerRequestMedian} | ${s.p99msAtRateMedian} | ${s.rssMaxMb} |`
      : '';
  };
  writeFileSync(
    file,
    `# Telemetry benchmark results

Command: \`node bench/telemetry/run.ts --duration ${flags.duration} --rate-duration ${flags['rate-duration']} --rounds ${rounds}${baselineDir ? ' --baseline <checkout of the commit before telemetry>' : ''} --record\`

- Date: ${summary.date}; Node ${summary.node}; nproc ${summary.nproc}; memory ${summary.memGb} GiB (free ${summary.freeGb} GiB)
- Load average (1/5/15 min) before: ${summary.load.before.join(' / ')}; after: ${summary.load.after.join(' / ')}
- Each run is \`bench/sidecar/run.ts --only sidecar\` (the inbound sidecar: mTLS, token, binding, 100-rule policy, forward, audit event; 64 keep-alive connections closed loop, then 1,000 req/s). Modes alternate within each round.
- Modes: ${baselineDir ? '`baseline` = the same benchmark from the commit before telemetry; ' : ''}\`off\` = this tree, no telemetry started (the default); \`on\` = this tree with \`startTelemetry\` preloaded (\`bench/telemetry/preload.ts\`), 3 spans per request (\`sidecar.inbound\`, \`sidecar.authorize\`, \`sidecar.upstream\`), batch-exported over OTLP/HTTP (protobuf) to a local sink (${exports} exports, ${Math.round(exportedBytes / 1e6)} MB received over all runs); \`sampled\` = \`on\` with \`OTEL_TRACES_SAMPLER=parentbased_traceidratio\`, \`OTEL_TRACES_SAMPLER_ARG=0.01\`.

| mode | req/s best | req/s median | CPU µs/request best | CPU µs/request median | p99 ms @1000 req/s (median) | RSS max MB |
|---|---|---|---|---|---|---|
${modes.map(row).join('\n')}

Ratios (best of ${rounds}): ${baselineDir ? `off / baseline throughput **${summary.ratios.offToBaselineRpsBest}**, CPU per request ${summary.ratios.offToBaselineCpuBest}; ` : ''}on / off throughput **${summary.ratios.onToOffRpsBest}**, CPU per request ${summary.ratios.onToOffCpuBest}; sampled (1 %) / off throughput **${summary.ratios.sampledToOffRpsBest}**, CPU per request ${summary.ratios.sampledToOffCpuBest}.

Machine-readable line: \`BENCH_TELEMETRY {…}\` on stdout.

## Notes
${notes}`,
  );
  console.error(`[telemetry] wrote ${file}`);
}
