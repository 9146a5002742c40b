// Sidecar benchmark (issue 4): the app called directly, behind nginx as an mTLS-terminating reverse
// proxy, and behind the inbound sidecar with token verification and a 100-rule policy — one load
// generator (bench/sidecar/loadgen.ts) over keep-alive connections at fixed concurrency, then at a
// fixed 1,000 req/s. Usage: node bench/sidecar/run.ts [--duration 60s] [--rate-duration 20s]
// [--concurrency 64] [--rate 1000] [--rules 100] [--body-bytes 0] [--cpu-slices 0] [--slice 2s]
// [--record]. Prints `BENCH_SIDECAR {json}` last; with --record writes bench/RESULTS-sidecar.md.
// With --cpu-slices N, each run ends with N rounds of closed-loop slices that alternate between
// nginx, bare and the sidecar over connections kept warm: their CPU per request is then measured
// within seconds of each other (decision 0106).
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { cpuSeconds, machineFacts } from '../machine.ts';
import { join } from 'node:path';
import { policyYaml } from './policy.ts';
import { SIDECAR_NODE_OPTIONS, buildHarness } from './entry.ts';
import {
  childrenStoppedOnExit,
  ensureNginx,
  freePort,
  startBareProxy,
  startBenchSts,
  startJsonChild,
  token,
  withChildren,
  writeOrdersSidecarConfig,
} from './harness.ts';
import { rssMb } from '../memory.ts';
import { benchFlags, durationFlag } from '../flags.ts';
import { openFileStore } from '../../audit/index.ts';
import { COLLECTOR_ID, startBenchCollector } from '../collector.ts';
import type { BenchCollector } from '../collector.ts';

/** sidecar-audit-*: the sidecar with the real audit client posting to a real collector, in each failMode. */
const TARGETS = ['direct', 'nginx', 'bare', 'sidecar', 'sidecar-audit-open', 'sidecar-audit-closed'];
const { values: flags } = benchFlags({
  options: {
    duration: { type: 'string', default: '60s' },
    'rate-duration': { type: 'string', default: '20s' },
    warmup: { type: 'string', default: '3s' },
    concurrency: { type: 'string', default: '64' },
    rate: { type: 'string', default: '1000' },
    rules: { type: 'string', default: '100' },
    record: { type: 'boolean', default: false },
    /** Comma-separated subset of direct,nginx,bare,sidecar (for profiling; the ratios need all four). */
    only: { type: 'string', default: TARGETS.join(',') },
    /** Access log on in every sidecar (lines go to a file in the bench directory), to measure its cost. */
    'access-log': { type: 'boolean', default: false },
    /** With --access-log: the fraction of successful requests logged. */
    'access-log-sample': { type: 'string', default: '1' },
    /** V8 flags of the sidecar process (docs/sidecar.md recommends them to bound resident memory). */
    'sidecar-node-options': { type: 'string', default: SIDECAR_NODE_OPTIONS },
    /** Full runs, each with a freshly started sidecar; targets interleaved (order reversed every other run). */
    runs: { type: 'string', default: '1' },
    /** The sidecar from the build (`built`, the default: `npm run build`'s bundling) or from the sources. */
    from: { type: 'string', default: 'built' },
    /** Seconds the fresh sidecar idles before its idle RSS is read. */
    idle: { type: 'string', default: '3s' },
    /** When > 0: every request is a POST with a JSON body of this many bytes (the policy then allows POST). */
    'body-bytes': { type: 'string', default: '0' },
    /** Rounds of alternating CPU slices after each run's phases (0: none). */
    'cpu-slices': { type: 'string', default: '0' },
    /** The length of one CPU slice. */
    slice: { type: 'string', default: '2s' },
  },
  strict: true,
});
const only = new Set(flags.only.split(','));
for (const name of only)
  if (!TARGETS.includes(name)) {
    console.error(`--only: unknown target "${name}" (expected some of ${TARGETS.join(', ')})`);
    process.exit(2);
  }
if (flags.record && ['nginx', 'bare', 'sidecar'].some((t) => !only.has(t))) {
  console.error('--record needs nginx, bare and sidecar at least: the recorded ratios compare them');
  process.exit(2);
}
const runCount = Number(flags.runs);
if (!Number.isInteger(runCount) || runCount < 1 || runCount > 50) {
  console.error('--runs must be an integer from 1 to 50');
  process.exit(2);
}
if (flags.from !== 'built' && flags.from !== 'sources') {
  console.error(`--from must be built or sources, got "${flags.from}"`);
  process.exit(2);
}
const idleMs = durationFlag('idle', flags.idle);
const durationMs = durationFlag('duration', flags.duration);
const rateDurationMs = durationFlag('rate-duration', flags['rate-duration']);
const warmupMs = durationFlag('warmup', flags.warmup);
const concurrency = Number(flags.concurrency);
const rate = Number(flags.rate);
const ruleCount = Number(flags.rules);
const bodyBytes = Number(flags['body-bytes']);
// The body is `{"note":"x…x"}`: 11 bytes at the least.
if (!Number.isInteger(bodyBytes) || (bodyBytes !== 0 && bodyBytes < 11) || bodyBytes > 1_048_576) {
  console.error('--body-bytes must be 0 or an integer from 11 to 1048576');
  process.exit(2);
}
const cpuSlices = Number(flags['cpu-slices']);
if (!Number.isInteger(cpuSlices) || cpuSlices < 0 || cpuSlices > 100) {
  console.error('--cpu-slices must be an integer from 0 to 100');
  process.exit(2);
}
const sliceMs = durationFlag('slice', flags.slice);
if (sliceMs < 500 || sliceMs > 10_000) {
  // A target's connections idle for up to four slices (the order rotates), within the proxies'
  // keep-alive (the sidecar's 60 s is the shortest): the slices' figures hold no handshakes.
  console.error('--slice must be from 500ms to 10s');
  process.exit(2);
}
if (flags.record && bodyBytes > 0) {
  console.error("--record measures GET requests (issue 20's runs of record): drop --body-bytes");
  process.exit(2);
}
const node = process.execPath;
const here = new URL('.', import.meta.url).pathname;
const root = new URL('../../', import.meta.url).pathname;

function stop(child: ChildProcess): Promise<string> {
  return new Promise((resolve) => {
    let out = '';
    child.stdout?.on('data', (c: Buffer) => (out += c));
    child.once('exit', () => resolve(out));
    child.kill('SIGTERM');
  });
}

interface Phase {
  ok: number;
  errors: number;
  statusErrors: number;
  seconds: number;
  rps: number;
  p50ms: number;
  p99ms: number;
  maxms: number;
}

/** The command line of one load generator (bench/sidecar/loadgen.ts) with this run's settings and `opts`. */
function loadgenArgs(opts: Record<string, unknown>): string[] {
  return [
    join(here, 'loadgen.ts'),
    JSON.stringify({ warmupMs, concurrency, rate, headers: {}, bodyBytes, ...opts }),
  ];
}

interface Slice {
  ok: number;
  errors: number;
  statusErrors: number;
  seconds: number;
  /** Connections the load generator opened during the slice (0 when the warmed ones stayed open). */
  connects: number;
}

/**
 * A load generator in `slices` mode, its connections to one target open and warmed: `slice(ms)`
 * runs one closed loop of `ms` on them and resolves to its counts.
 */
async function startSlicer(
  opts: Record<string, unknown>,
): Promise<{ slice(ms: number): Promise<Slice>; close(): Promise<void> }> {
  const child = spawn(node, loadgenArgs({ ...opts, mode: 'slices' }), { stdio: ['pipe', 'pipe', 'inherit'] });
  const waiting: { resolve(line: string): void; reject(e: Error): void }[] = [];
  let buffered = '';
  child.stdout.on('data', (c: Buffer) => {
    buffered += c;
    for (let nl = buffered.indexOf('\n'); nl !== -1; nl = buffered.indexOf('\n')) {
      waiting.shift()?.resolve(buffered.slice(0, nl));
      buffered = buffered.slice(nl + 1);
    }
  });
  let gone: Error | undefined;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code) => {
      gone = new Error(`loadgen (slices) exited with ${code}`);
      for (const w of waiting.splice(0)) w.reject(gone);
      resolve();
    }),
  );
  const next = () =>
    new Promise<string>((resolve, reject) => (gone ? reject(gone) : waiting.push({ resolve, reject })));
  await next(); // {"ready":true}: warmed
  return {
    async slice(ms) {
      const line = next();
      child.stdin.write(`${ms}\n`);
      return JSON.parse(await line) as Slice;
    },
    async close() {
      child.stdin.end();
      await exited;
    },
  };
}

/** Runs one load phase in its own process (asynchronously, so that the STS in this process stays responsive). */
function load(opts: Record<string, unknown>): Promise<Phase> {
  return new Promise((resolve, reject) => {
    const child = spawn(node, loadgenArgs(opts), { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c));
    child.on('exit', (code) =>
      code === 0
        ? resolve(JSON.parse(out.trim().split('\n').at(-1)!) as Phase)
        : reject(new Error(`loadgen exited with ${code}`)),
    );
  });
}

const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-sidecar-'));
const children = childrenStoppedOnExit(dir);
try {
  const nginxBin = ensureNginx();
  // PKI and identities exactly as `npm run certs` would make them, and a real STS.
  const { ids: idDir, certs, sts, web } = await startBenchSts(dir);
  // A fresh token per target (web's tokens live 5 minutes; the whole run is longer).
  const freshHeaders = async () => ({ authorization: `Bearer ${await token(sts.url, web.cert, web.key)}` });

  const app = await startJsonChild([join(here, 'app.ts')]);
  children.push(app.child);
  const appPort = app.info.port!;

  // nginx: mTLS-terminating reverse proxy with a keep-alive upstream pool; one worker, like the one Node process of the sidecar.
  const nginxPort = await freePort();
  const nginxDir = join(dir, 'nginx');
  mkdirSync(join(nginxDir, 'tmp'), { recursive: true });
  writeFileSync(
    join(nginxDir, 'nginx.conf'),
    `user root root;
worker_processes 1;
daemon off;
pid ${nginxDir}/nginx.pid;
error_log ${nginxDir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${nginxDir}/tmp/body; proxy_temp_path ${nginxDir}/tmp/proxy;
  fastcgi_temp_path ${nginxDir}/tmp/fcgi; uwsgi_temp_path ${nginxDir}/tmp/uwsgi; scgi_temp_path ${nginxDir}/tmp/scgi;
  upstream app { server 127.0.0.1:${appPort}; keepalive 128; }
  server {
    listen 127.0.0.1:${nginxPort} ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate ${join(certs, 'orders.pem')};
    ssl_certificate_key ${join(certs, 'orders-key.pem')};
    ssl_client_certificate ${join(certs, 'root.pem')};
    ssl_verify_client on;
    ssl_verify_depth 3;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Client-Verify $ssl_client_verify;
    }
  }
}
`,
  );
  const nginx = spawn(nginxBin, ['-c', join(nginxDir, 'nginx.conf'), '-p', nginxDir], { stdio: 'inherit' });
  children.push(nginx);
  await new Promise((r) => setTimeout(r, 500));

  const policyFile = join(dir, 'orders-policy.yaml');
  writeFileSync(policyFile, policyYaml(ruleCount, bodyBytes > 0 ? ['GET', 'POST'] : ['GET']));
  const sidecarConfig = writeOrdersSidecarConfig(
    dir,
    certs,
    sts.url,
    `app: "http://127.0.0.1:${appPort}", policy: ${policyFile}, upstreamConnections: 128`,
    flags['access-log'] ? `accessLog: { enabled: true, sample: ${flags['access-log-sample']} }\n` : '',
  );
  // BENCH_SIDECAR_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the sidecar process.
  const extraArgs = `${flags['sidecar-node-options']} ${process.env.BENCH_SIDECAR_NODE_ARGS ?? ''}`
    .split(' ')
    .filter(Boolean);
  // The sidecar processes run the harness (sidecar-proc.ts) bundled exactly as `npm run build`
  // bundles the deployable commands (--from built), or from the sources through type stripping.
  const harness = flags.from === 'built' ? buildHarness(join(dir, 'harness')) : join(here, 'sidecar-proc.ts');
  if (flags.from === 'built') {
    // One start that is not measured fills the harness's compile cache, as the image's build fills
    // dist/.compile-cache (decision 0107): every measured start then finds it, the first one too.
    const warm = await startJsonChild([...extraArgs, harness, sidecarConfig]);
    await stop(warm.child);
  }

  // The same sidecar with the real audit client and a real collector (its own process), per failMode.
  const audited: Record<
    string,
    { port: number; child: ChildProcess; collector: BenchCollector; dir: string }
  > = {};
  for (const failMode of ['open', 'closed'] as const) {
    if (!only.has(`sidecar-audit-${failMode}`)) continue;
    const auditDir = join(dir, `audit-${failMode}`);
    const collector = await startBenchCollector(auditDir, idDir, certs);
    children.push(collector.child);
    const file = join(auditDir, 'sidecar-orders.yaml');
    writeFileSync(
      file,
      `${readFileSync(sidecarConfig, 'utf8')}audit: { sink: collector, collector: "${collector.url}", collectorId: ${COLLECTOR_ID}, spoolDir: ${join(auditDir, 'spool')}, failMode: ${failMode} }\n`,
    );
    const proc = await startJsonChild([...extraArgs, harness, file, 'config-sink']);
    children.push(proc.child);
    audited[`sidecar-audit-${failMode}`] = {
      port: proc.info.port!,
      child: proc.child,
      collector,
      dir: auditDir,
    };
  }

  // BENCH_BARE_NODE_ARGS does the same for the bare Node proxy (to compare profiles).
  const bare = await startBareProxy(join(here, 'bare-proxy.ts'), certs, appPort);
  children.push(bare.child);
  const tls = {
    certFile: join(certs, 'web.pem'),
    keyFile: join(certs, 'web-key.pem'),
    caFile: join(certs, 'root.pem'),
  };
  const headers = await freshHeaders();
  const targets = {
    direct: { url: `http://127.0.0.1:${appPort}`, path: '/orders/1', headers },
    nginx: { url: `https://127.0.0.1:${nginxPort}`, path: '/orders/1', headers, tls },
    bare: { url: `https://127.0.0.1:${bare.info.port}`, path: '/orders/1', headers, tls },
    ...Object.fromEntries(
      Object.entries(audited).map(([name, a]) => [
        name,
        { url: `https://127.0.0.1:${a.port}`, path: '/orders/1', headers, tls },
      ]),
    ),
  } as Record<string, { url: string; path: string; headers: Record<string, string>; tls?: typeof tls }>;

  const loadBefore = loadavg();
  type Result = {
    throughput: Phase;
    fixed: Phase;
    cpuUsPerRequest: number;
    rssMaxMb?: number;
    rssStartMb?: number;
    rssEndOfSaturationMb?: number;
  };
  const empty: Result = {
    cpuUsPerRequest: 0,
    throughput: { ok: 0, errors: 0, statusErrors: 0, seconds: 0, rps: 0, p50ms: 0, p99ms: 0, maxms: 0 },
    fixed: { ok: 0, errors: 0, statusErrors: 0, seconds: 0, rps: 0, p50ms: 0, p99ms: 0, maxms: 0 },
  };
  const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;
  const runs: { targets: Record<string, boolean> | null; [field: string]: unknown }[] = [];
  /**
   * CPU per request of nginx, bare and the sidecar (those measured), in `cpuSlices` rounds of one
   * closed-loop slice each, the order rotated every round, over connections opened and warmed
   * beforehand: the machine's speed, which on a shared 2-vCPU machine changes from one minute to
   * the next, weighs on every target alike.
   */
  async function cpuInSlices(
    runTargets: typeof targets,
    proxyPids: Record<string, () => number[]>,
  ): Promise<
    Record<
      string,
      { requests: number; errors: number; connects: number; rps: number; cpuUsPerRequest: number }
    >
  > {
    const names = ['nginx', 'bare', 'sidecar'].filter((t) => only.has(t));
    console.error(`[bench] CPU in ${cpuSlices} rounds of ${sliceMs / 1000}s slices: ${names.join(', ')}`);
    const headers = await freshHeaders();
    const slicers = await Promise.all(names.map((name) => startSlicer({ ...runTargets[name]!, headers })));
    const sums = names.map(() => ({ cpu: 0, requests: 0, errors: 0, connects: 0, seconds: 0 }));
    try {
      for (let round = 0; round < cpuSlices; round++)
        for (let k = 0; k < names.length; k++) {
          const i = (round + k) % names.length;
          const cpu0 = cpuSeconds(proxyPids[names[i]!]!());
          const r = await slicers[i]!.slice(sliceMs);
          sums[i]!.cpu += cpuSeconds(proxyPids[names[i]!]!()) - cpu0;
          sums[i]!.requests += r.ok + r.statusErrors;
          sums[i]!.errors += r.errors + r.statusErrors;
          sums[i]!.seconds += r.seconds;
          sums[i]!.connects += r.connects;
        }
    } finally {
      await Promise.all(slicers.map((s) => s.close()));
    }
    const out = Object.fromEntries(
      names.map((name, i) => [
        name,
        {
          requests: sums[i]!.requests,
          errors: sums[i]!.errors,
          connects: sums[i]!.connects,
          rps: Math.round(sums[i]!.requests / Math.max(0.001, sums[i]!.seconds)),
          cpuUsPerRequest: Math.round((sums[i]!.cpu * 1e6) / Math.max(1, sums[i]!.requests)),
        },
      ]),
    );
    console.error(`[bench] CPU in slices: ${JSON.stringify(out)}`);
    return out;
  }
  for (let runIndex = 0; runIndex < runCount; runIndex++) {
    // A fresh sidecar each run: start-up (spawn to listening with keys, policy and certificate
    // loaded) and resident memory once idle are measured on it before any request.
    const sidecar = await startJsonChild([...extraArgs, harness, sidecarConfig]);
    children.push(sidecar.child);
    await new Promise((r) => setTimeout(r, idleMs));
    const idleRssMb = rssMb(sidecar.child.pid!);
    console.error(
      `[bench] run ${runIndex + 1}/${runCount}: sidecar ready in ${sidecar.readyMs} ms (${sidecar.readyCpuMs} ms CPU), ${idleRssMb} MB idle`,
    );
    const runTargets: typeof targets = {
      ...targets,
      sidecar: { url: `https://127.0.0.1:${sidecar.info.port}`, path: '/orders/1', headers, tls },
    };
    const results: Record<string, Result> = {};
    const proxyPids: Record<string, () => number[]> = {
      direct: () => [app.child.pid!],
      nginx: () => withChildren(nginx.pid!),
      bare: () => [bare.child.pid!],
      sidecar: () => [sidecar.child.pid!],
      ...Object.fromEntries(Object.entries(audited).map(([name, a]) => [name, () => [a.child.pid!]])),
    };
    // Interleaved with the baselines: every other run takes the targets in reverse order.
    const order = TARGETS.filter((t) => only.has(t) && t in runTargets);
    if (runIndex % 2 === 1) order.reverse();
    for (const name of order) {
      const target = runTargets[name]!;
      console.error(`[bench] ${name}: closed loop, concurrency ${concurrency}, ${durationMs / 1000}s`);
      const rss: number[] = [];
      const sampler =
        name === 'sidecar' ? setInterval(() => rss.push(rssMb(sidecar.child.pid!)), 1000) : undefined;
      const startRss = name === 'sidecar' ? rssMb(sidecar.child.pid!) : undefined;
      // CPU time of the proxy process(es) per request: robust to other load on a shared machine.
      const cpu0 = cpuSeconds(proxyPids[name]!());
      const phaseHeaders = await freshHeaders();
      const throughput = await load({ ...target, headers: phaseHeaders, mode: 'closed', durationMs });
      const cpuUsPerRequest = Math.round(
        ((cpuSeconds(proxyPids[name]!()) - cpu0) * 1e6) /
          Math.max(1, throughput.ok + throughput.statusErrors + (warmupMs / durationMs) * throughput.ok),
      );
      const rssEnd = name === 'sidecar' ? rssMb(sidecar.child.pid!) : undefined;
      console.error(`[bench] ${name}: open loop ${rate} req/s, ${rateDurationMs / 1000}s`);
      const fixed = await load({
        ...target,
        headers: phaseHeaders,
        mode: 'rate',
        durationMs: rateDurationMs,
      });
      if (sampler) clearInterval(sampler);
      results[name] = {
        throughput,
        fixed,
        cpuUsPerRequest,
        ...(sampler
          ? { rssMaxMb: Math.max(...rss, startRss!), rssStartMb: startRss!, rssEndOfSaturationMb: rssEnd! }
          : {}),
      };
      console.error(`[bench] ${name}: ${JSON.stringify(results[name])}`);
    }
    const sliced = cpuSlices > 0 ? await cpuInSlices(runTargets, proxyPids) : null;
    const sidecarOut = await stop(sidecar.child);
    const n = results.nginx ?? empty;
    const s = results.sidecar ?? empty;
    const b = results.bare ?? empty;
    const d = results.direct ?? empty;
    const ao = results['sidecar-audit-open'];
    const ac = results['sidecar-audit-closed'];
    const measured = Boolean(results.sidecar && results.nginx && results.bare);
    runs.push({
      run: runIndex + 1,
      order,
      startupMs: sidecar.readyMs,
      startupCpuMs: sidecar.readyCpuMs,
      idleRssMb,
      direct: results.direct ?? null,
      bare: b,
      nginx: n,
      sidecar: s,
      sidecarAuditOpen: ao ?? null,
      sidecarAuditClosed: ac ?? null,
      ratios: {
        auditClosedToOpenThroughput: ao && ac ? ratio(ac.throughput.rps, ao.throughput.rps) : null,
        auditClosedToOpenCpuPerRequest: ao && ac ? ratio(ac.cpuUsPerRequest, ao.cpuUsPerRequest) : null,
        auditClosedMinusOpenP99AtRateMs:
          ao && ac ? Math.round((ac.fixed.p99ms - ao.fixed.p99ms) * 1000) / 1000 : null,
        sidecarToNginxThroughput: ratio(s.throughput.rps, n.throughput.rps),
        sidecarToDirectThroughput: results.direct ? ratio(s.throughput.rps, d.throughput.rps) : null,
        nginxToDirectThroughput: results.direct ? ratio(n.throughput.rps, d.throughput.rps) : null,
        bareToNginxThroughput: ratio(b.throughput.rps, n.throughput.rps),
        sidecarToNginxCpuPerRequest: ratio(s.cpuUsPerRequest, n.cpuUsPerRequest),
        sidecarToBareCpuPerRequest: ratio(s.cpuUsPerRequest, b.cpuUsPerRequest),
        sidecarMinusNginxP99AtRateMs: Math.round((s.fixed.p99ms - n.fixed.p99ms) * 1000) / 1000,
        sidecarToNginxCpuPerRequestSliced:
          sliced?.sidecar && sliced.nginx
            ? ratio(sliced.sidecar.cpuUsPerRequest, sliced.nginx.cpuUsPerRequest)
            : null,
        sidecarToNginxThroughputSliced:
          sliced?.sidecar && sliced.nginx ? ratio(sliced.sidecar.rps, sliced.nginx.rps) : null,
        sidecarToBareCpuPerRequestSliced:
          sliced?.sidecar && sliced.bare
            ? ratio(sliced.sidecar.cpuUsPerRequest, sliced.bare.cpuUsPerRequest)
            : null,
      },
      sliced,
      // Issue 20's targets. A target whose parts were not measured (--only) is null, never a pass.
      targets: measured
        ? {
            idleRssAtMost60Mb: idleRssMb <= 60,
            rssAfterSaturationAtMost100Mb: (s.rssEndOfSaturationMb ?? Infinity) <= 100,
            cpuPerRequestAtMost2xNginx: s.cpuUsPerRequest <= 2 * n.cpuUsPerRequest,
            cpuPerRequestAtMost13xBare: s.cpuUsPerRequest <= 1.3 * b.cpuUsPerRequest,
            throughputAtLeast06xNginx: s.throughput.rps >= 0.6 * n.throughput.rps,
            p99Within05msOfNginxAtRate: s.fixed.p99ms - n.fixed.p99ms <= 0.5,
            startupAtMost300Ms: sidecar.readyMs <= 300,
            ...(sliced
              ? {
                  cpuPerRequestAtMost2xNginxSliced:
                    sliced.sidecar!.cpuUsPerRequest <= 2 * sliced.nginx!.cpuUsPerRequest,
                  cpuPerRequestAtMost13xBareSliced:
                    sliced.sidecar!.cpuUsPerRequest <= 1.3 * sliced.bare!.cpuUsPerRequest,
                  throughputAtLeast06xNginxSliced: sliced.sidecar!.rps >= 0.6 * sliced.nginx!.rps,
                }
              : {}),
          }
        : null,
      sidecarExit: sidecarOut.trim(),
    });
  }
  const loadAfter = loadavg();
  // The audited sidecars flush their spools on SIGTERM; then what reached each log is counted.
  // With each audited sidecar's exit figures (memory, collections), taken over all its runs.
  const auditLogs: Record<string, { decisions: number; responses: number; sidecarExit: string }> = {};
  for (const [name, a] of Object.entries(audited)) {
    const sidecarExit = (await stop(a.child)).trim();
    await a.collector.stop();
    const store = await openFileStore({ dir: join(a.dir, 'audit-data', 'log'), readOnly: true });
    const counts = { decisions: 0, responses: 0 };
    for await (const r of store.read(0)) {
      if (r.event.type === 'authz.decision') counts.decisions++;
      if (r.event.type === 'authz.response') counts.responses++;
    }
    await store.close();
    auditLogs[name] = { ...counts, sidecarExit };
  }
  await sts.close();

  // Every target, met in every run (null when some run did not measure it).
  const everyRun = Object.fromEntries(
    Object.keys(runs[0]!.targets ?? {}).map((k) => [
      k,
      runs.every((r) => r.targets) ? runs.every((r) => r.targets![k]) : null,
    ]),
  );
  const summary = {
    ...machineFacts(loadBefore, loadAfter),
    from: flags.from,
    only: flags.only === TARGETS.join(',') ? null : flags.only,
    concurrency,
    durationS: durationMs / 1000,
    rate,
    rateDurationS: rateDurationMs / 1000,
    rules: ruleCount,
    cpuSlices,
    sliceS: sliceMs / 1000,
    idleS: idleMs / 1000,
    sidecarNodeOptions: flags['sidecar-node-options'],
    targetsMetEveryRun: everyRun,
    auditLogs,
    runs,
  };
  if (flags.record) {
    // The generated part is replaced; the hand-written sections (from the first `## ` heading:
    // earlier runs, analysis) are kept.
    const file = join(root, 'bench/RESULTS-sidecar.md');
    const kept = existsSync(file) ? (/\n## [\s\S]*$/.exec(readFileSync(file, 'utf8'))?.[0] ?? '') : '';
    writeFileSync(file, renderResults(summary) + kept);
  }
  console.log(`BENCH_SIDECAR ${JSON.stringify(summary)}`);
} finally {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 300));
  rmSync(dir, { recursive: true, force: true });
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- renders the summary object built just above
function renderResults(x: any): string {
  const row = (name: string, r: { throughput: Phase; fixed: Phase; cpuUsPerRequest: number } | null) =>
    r
      ? `| ${name} | ${r.throughput.rps} | ${r.throughput.p50ms} | ${r.throughput.p99ms} | ${r.throughput.errors + r.throughput.statusErrors} | ${r.cpuUsPerRequest} | ${r.fixed.rps} | ${r.fixed.p50ms} | ${r.fixed.p99ms} |`
      : '';
  const yes = (v: boolean | null | undefined) => (v === null || v === undefined ? '–' : v ? 'yes' : '**no**');
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- one run of the summary
  const perRun = x.runs.map((r: any) => {
    const t = r.targets ?? {};
    return `| ${r.run} | ${r.order.join(' → ')} | ${r.startupMs} ${yes(t.startupAtMost300Ms)} (CPU ${r.startupCpuMs}) | ${r.idleRssMb} ${yes(t.idleRssAtMost60Mb)} | ${r.sidecar.rssEndOfSaturationMb} ${yes(t.rssAfterSaturationAtMost100Mb)} (max ${r.sidecar.rssMaxMb}) | ${r.sidecar.cpuUsPerRequest} / ${r.nginx.cpuUsPerRequest} / ${r.bare.cpuUsPerRequest} | ${r.ratios.sidecarToNginxCpuPerRequest} ${yes(t.cpuPerRequestAtMost2xNginx)} | ${r.ratios.sidecarToBareCpuPerRequest} ${yes(t.cpuPerRequestAtMost13xBare)} | ${r.ratios.sidecarToNginxThroughput} ${yes(t.throughputAtLeast06xNginx)} | ${r.ratios.sidecarMinusNginxP99AtRateMs} ${yes(t.p99Within05msOfNginxAtRate)} |`;
  });
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- one run of the summary
  const slicedRows = x.runs.flatMap((r: any) => {
    if (!r.sliced) return [];
    const t = r.targets ?? {};
    const { sidecar: s, nginx: n, bare: b } = r.sliced;
    return [
      `| ${r.run} | ${s.rps} / ${n.rps} / ${b.rps} | ${r.ratios.sidecarToNginxThroughputSliced} ${yes(t.throughputAtLeast06xNginxSliced)} | ${s.cpuUsPerRequest} / ${n.cpuUsPerRequest} / ${b.cpuUsPerRequest} | ${r.ratios.sidecarToNginxCpuPerRequestSliced} ${yes(t.cpuPerRequestAtMost2xNginxSliced)} | ${r.ratios.sidecarToBareCpuPerRequestSliced} ${yes(t.cpuPerRequestAtMost13xBareSliced)} | ${s.errors + n.errors + b.errors} | ${s.connects} / ${n.connects} / ${b.connects} |`,
    ];
  });
  const slicedSection = slicedRows.length
    ? `
The same three targets measured in alternating slices (\`--cpu-slices ${x.cpuSlices}\`, decision 0106): at the end of each run, ${x.cpuSlices} rounds of one ${x.sliceS} s closed loop per target, the order rotated every round, each target's connections opened and warmed before the first round and idle between its slices ("new connections" counts those opened during slices). Each target's figures are the sums over its slices, so a change of the machine's speed within the run weighs on all three alike; the load is bursts of ${x.sliceS} s with two to four slices' idle between them, not the sustained load of the phases:

| run | req/s sidecar / nginx / bare | req/s ÷ nginx | CPU µs/req sidecar / nginx / bare | CPU ÷ nginx | CPU ÷ bare | errors | new connections sidecar / nginx / bare |
|---|---|---|---|---|---|---|---|
${slicedRows.join('\n')}
`
    : '';
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- one run of the summary
  const tables = x.runs.map((r: any) =>
    [
      `Run ${r.run}:\n`,
      '| target | req/s (closed loop) | p50 ms | p99 ms | errors | proxy CPU µs/request | req/s (fixed rate) | p50 ms @rate | p99 ms @rate |',
      '|---|---|---|---|---|---|---|---|---|',
      row('direct', r.direct),
      row('nginx (mTLS)', r.nginx),
      row('bare Node mTLS proxy (node:https + undici, no checks)', r.bare),
      row('sidecar (mTLS + token + policy + audit)', r.sidecar),
      row('sidecar, real audit client + collector, failMode open', r.sidecarAuditOpen),
      row('sidecar, real audit client + collector, failMode closed', r.sidecarAuditClosed),
    ]
      .filter(Boolean)
      .join('\n'),
  );
  return `# Sidecar benchmark results

Command: \`node bench/sidecar/run.ts --runs ${x.runs.length} --from ${x.from}${x.only ? ` --only ${x.only}` : ''} --duration ${x.durationS}s --rate-duration ${x.rateDurationS}s --concurrency ${x.concurrency} --rate ${x.rate} --rules ${x.rules}${x.cpuSlices ? ` --cpu-slices ${x.cpuSlices} --slice ${x.sliceS}s` : ''} --record\`

- Date: ${x.date}; Node ${x.node}; nproc ${x.nproc}; memory ${x.memGb} GiB (free ${x.freeGb} GiB)
- Load average (1/5/15 min) before: ${x.load.before.join(' / ')}; after: ${x.load.after.join(' / ')}
- One machine: load generator, app, proxies and STS share its ${x.nproc} cores.
- Sidecar from: **${x.from}** (\`built\`: the harness bundled the way \`npm run build\` bundles the commands, no type stripping at run time; \`sources\`: \`node file.ts\`). V8 flags of the sidecar process: \`${x.sidecarNodeOptions}\`.
- Each run starts a fresh sidecar: start-up is spawn → listening with keys, policy and certificate loaded; idle RSS is read ${x.idleS} s later, before any request; "RSS after saturation" is read at the end of the ${x.durationS} s closed loop. Targets run in the order shown (reversed every other run), baselines interleaved with the sidecar.
- Load generator: \`bench/sidecar/loadgen.ts\` (undici Pool, ${x.concurrency} keep-alive connections, one request in flight per connection); closed loop for ${x.durationS} s after a warm-up, then open loop at ${x.rate} req/s for ${x.rateDurationS} s. "proxy CPU µs/request" is user+system CPU of the proxy process(es) from /proc over the closed loop divided by requests.
- nginx: Debian nginx, TLS 1.3, \`ssl_verify_client on\`, keep-alive upstream pool (128), \`worker_processes 1\`, no token, no policy. bare: node:https + undici, no checks. sidecar: peer check, bearer token (ES256, real STS) verified and cached per (token, certificate), binding, path checks, a ${x.rules}-rule policy (the matching rule last), forward over an undici pool, one audit event per request, validated and serialized into the collector client's pending buffer as the client does (decision 0104).

Issue 20's targets per run (start-up ≤ 300 ms; RSS ≤ 60 MB idle, ≤ 100 MB after saturation; CPU/request ≤ 2× nginx and ≤ 1.3× bare; throughput ≥ 0.6× nginx; p99 at ${x.rate} req/s within 0.5 ms of nginx):

| run | order | start-up ms (CPU ms) | idle RSS MB | RSS after saturation MB | CPU µs/req sidecar / nginx / bare | CPU ÷ nginx | CPU ÷ bare | req/s ÷ nginx | p99 @rate − nginx ms |
|---|---|---|---|---|---|---|---|---|---|
${perRun.join('\n')}

${slicedSection}
Met in every run: ${JSON.stringify(x.targetsMetEveryRun)}

${tables.join('\n\n')}

Audit events in each collector's log (all runs): ${JSON.stringify(x.auditLogs)}.

Machine-readable line: \`BENCH_SIDECAR {…}\` on stdout.
`;
}
