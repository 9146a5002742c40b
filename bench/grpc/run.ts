// gRPC bench (issue 17): unary calls to one app four ways in one run — direct (h2c), through nginx
// terminating mTLS with `grpc_pass`, through the barest Node HTTP/2 mTLS proxy (bare-proxy.ts: what
// Node's TLS and HTTP/2 cost), and through the inbound sidecar (mTLS with web's workload
// certificate, a bound token from a real STS, a policy whose matching `grpc:` rule comes after 100
// others, one audit event per call) — closed loop at a fixed number of calls in flight, then open
// loop at a fixed rate. The load generator and the app are Go by default (loadgen-go/, built with
// Debian's Go and golang.org/x/net, installed when missing): a Node load generator's own pauses
// were the tail it measured. Usage: node bench/grpc/run.ts [--duration 20s] [--rate-duration 15s]
// [--warmup 3s] [--slice 1s] [--interleave slice|call] [--concurrency 64] [--rate 1000]
// [--connections 1] [--client go|http2|grpc-js] [--app go|grpc-js] [--targets direct,nginx,bare,sidecar]
// [--runs 1] [--from built|sources] [--sidecar-node-options "…"] [--loadgen-node-options "…"]
// [--record]. Prints `BENCH_GRPC {json}` last; with --record replaces the generated block of the
// gRPC section of bench/RESULTS.md.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchFlags, durationFlag } from '../flags.ts';
import { cpuSeconds, machineFacts } from '../machine.ts';
import { SIDECAR_NODE_OPTIONS, buildHarness } from '../sidecar/entry.ts';
import { policyYaml } from '../sidecar/policy.ts';
import { GET_PATH } from './service.ts';
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
} from '../sidecar/harness.ts';

const TARGETS = ['direct', 'nginx', 'bare', 'sidecar'] as const;
/** How the report names each load generator. */
const CLIENTS = {
  go: 'bench/grpc/loadgen-go (Go, golang.org/x/net/http2; each call on its own goroutine; reply message and grpc-status checked)',
  http2: "gRPC framing over node:http2 (reply message and trailers' grpc-status checked)",
  'grpc-js': '@grpc/grpc-js',
} as const;
/** The Node load generator's V8 flags (`--client http2|grpc-js`): none unless `--loadgen-node-options` gives some. */
const LOADGEN_NODE_OPTIONS = '';
/** The generated block of bench/RESULTS.md that --record replaces. */
const START = '<!-- bench:grpc generated: start -->';
const END = '<!-- bench:grpc generated: end -->';
type Target = (typeof TARGETS)[number];
const { values: flags } = benchFlags({
  options: {
    duration: { type: 'string', default: '20s' },
    'rate-duration': { type: 'string', default: '15s' },
    warmup: { type: 'string', default: '3s' },
    concurrency: { type: 'string', default: '64' },
    rate: { type: 'string', default: '1000' },
    connections: { type: 'string', default: '1' },
    client: { type: 'string', default: 'go' },
    /** The app behind every target: the Go server (default) or the @grpc/grpc-js one. */
    app: { type: 'string', default: 'go' },
    slice: { type: 'string', default: '1s' },
    interleave: { type: 'string', default: 'slice' },
    rules: { type: 'string', default: '100' },
    /** Comma-separated subset of direct,nginx,bare,sidecar (nginx and sidecar always: the targets compare them). */
    targets: { type: 'string', default: TARGETS.join(',') },
    runs: { type: 'string', default: '1' },
    from: { type: 'string', default: 'built' },
    /** V8 flags of the sidecar process (as bench/sidecar/run.ts). */
    'sidecar-node-options': { type: 'string', default: SIDECAR_NODE_OPTIONS },
    /** V8 flags of the Node load generator. */
    'loadgen-node-options': { type: 'string', default: LOADGEN_NODE_OPTIONS },
    record: { type: 'boolean', default: false },
  },
  strict: true,
});

function integer(name: string, min: number, max: number): number {
  const v = Number(flags[name as keyof typeof flags]);
  if (!Number.isInteger(v) || v < min || v > max) {
    console.error(
      `--${name} must be an integer from ${min} to ${max}, got "${flags[name as keyof typeof flags]}"`,
    );
    process.exit(2);
  }
  return v;
}
function duration(name: string): number {
  return durationFlag(name, flags[name as keyof typeof flags]);
}
const only = new Set(String(flags.targets).split(','));
for (const t of only)
  if (!(TARGETS as readonly string[]).includes(t)) {
    console.error(`--targets: unknown target "${t}" (direct, nginx, bare, sidecar)`);
    process.exit(2);
  }
if (!only.has('nginx') || !only.has('sidecar')) {
  console.error('--targets must include nginx and sidecar: the targets compare them');
  process.exit(2);
}
const chosen = TARGETS.filter((t) => only.has(t));
const concurrency = integer('concurrency', 1, 1000);
const rate = integer('rate', 1, 100_000);
const connections = integer('connections', 1, 64);
const ruleCount = integer('rules', 2, 10_000);
const runCount = integer('runs', 1, 20);
const durationMs = duration('duration');
const rateDurationMs = duration('rate-duration');
const warmupMs = duration('warmup');
if (flags.interleave !== 'slice' && flags.interleave !== 'call') {
  console.error(`--interleave must be slice or call, got "${flags.interleave}"`);
  process.exit(2);
}
/** The open loop's turns between targets: `--slice` long, or call by call (0). */
const sliceMs = flags.interleave === 'call' ? 0 : duration('slice');
if (flags.client !== 'go' && flags.client !== 'http2' && flags.client !== 'grpc-js') {
  console.error(`--client must be go, http2 or grpc-js, got "${flags.client}"`);
  process.exit(2);
}
if (flags.app !== 'go' && flags.app !== 'grpc-js') {
  console.error(`--app must be go or grpc-js, got "${flags.app}"`);
  process.exit(2);
}
if (flags.from !== 'built' && flags.from !== 'sources') {
  console.error(`--from must be built or sources, got "${flags.from}"`);
  process.exit(2);
}
const node = process.execPath;
/** Space-separated node flags. */
const words = (s: string | undefined) => (s ?? '').split(' ').filter(Boolean);
const here = new URL('.', import.meta.url).pathname;
const root = new URL('../../', import.meta.url).pathname;

/** Resolves once something accepts TCP connections on `port` (nginx prints nothing when ready). */
async function listening(port: number, what: string): Promise<void> {
  const { connect } = await import('node:net');
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
      s.on('error', () => resolve(false));
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} is not listening on ${port} after 10 s`);
}

interface Phase {
  ok: number;
  errors: number;
  statusErrors: number;
  badReplies: number;
  statuses?: Record<string, number>;
  sent: number;
  seconds: number;
  rps: number;
  p50ms: number | null;
  p90ms?: number | null;
  p99ms: number | null;
  p999ms?: number | null;
  maxms: number | null;
}

/** A load generator's target: where, with which certificate and token. */
interface LoadTarget {
  name: string;
  target: string;
  tls?: { certFile: string; keyFile: string; caFile: string };
  token?: string;
}

/** The load generator's own stalls while it measured (see loadgen.ts). */
interface Stalls {
  loopDelayP99ms: number;
  loopDelayMaxms: number;
  gcMs: number;
  gcMaxMs: number;
}

/** One load phase in its own process (the STS in this process stays responsive); figures by target. */
function load(opts: {
  mode: 'closed' | 'rate';
  durationMs: number;
  targets: LoadTarget[];
}): Promise<{ byTarget: Record<string, Phase>; loadgen: Stalls }> {
  const json = JSON.stringify({
    warmupMs,
    concurrency,
    rate,
    connections,
    client: flags.client,
    sliceMs,
    ...opts,
  });
  return new Promise((resolve, reject) => {
    const child =
      flags.client === 'go'
        ? spawn(goLoadgen!, [json], { stdio: ['ignore', 'pipe', 'inherit'] })
        : spawn(node, [...words(flags['loadgen-node-options']), join(here, 'loadgen.ts'), json], {
            stdio: ['ignore', 'pipe', 'inherit'],
          });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c));
    child.on('exit', (code) =>
      code === 0
        ? resolve(
            (({ loadgen, ...byTarget }) => ({ byTarget, loadgen }))(
              JSON.parse(out.trim().split('\n').at(-1)!) as Record<string, Phase> & { loadgen: Stalls },
            ),
          )
        : reject(new Error(`gRPC loadgen exited with ${code}`)),
    );
  });
}

/**
 * Builds the Go load generator (loadgen-go/main.go) into `dir` with Debian's Go toolchain and its
 * packaged golang.org/x/net (GOPATH mode: no module download), installing both when missing.
 */
function buildGoLoadgen(dir: string): string {
  const GOPATH = '/usr/share/gocode';
  if (
    spawnSync('sh', ['-c', 'command -v go']).status !== 0 ||
    !existsSync(join(GOPATH, 'src/golang.org/x/net/http2'))
  ) {
    console.error('Go or golang.org/x/net missing: apt-get install -y golang-go golang-golang-x-net-dev');
    execFileSync('apt-get', ['install', '-y', 'golang-go', 'golang-golang-x-net-dev'], {
      stdio: 'inherit',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  }
  const out = join(dir, 'loadgen-go');
  execFileSync('go', ['build', '-o', out, 'main.go'], {
    cwd: join(here, 'loadgen-go'),
    stdio: 'inherit',
    env: { ...process.env, GO111MODULE: 'off', GOPATH, GOCACHE: join(dir, 'gocache'), GOFLAGS: '' },
  });
  return out;
}

/** The orders policy of the HTTP/1.1 bench (filler rules first) with the gRPC rule last. */
function grpcPolicy(rules: number): string {
  return (
    policyYaml(rules) +
    ['  - id: storefront-gets-orders', '    role: storefront', `    grpc: [${GET_PATH.slice(1)}]`, ''].join(
      '\n',
    )
  );
}

const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-grpc-'));
const goLoadgen = flags.client === 'go' || flags.app === 'go' ? buildGoLoadgen(dir) : undefined;
const children = childrenStoppedOnExit(dir);
try {
  const nginxBin = ensureNginx();
  const { certs, sts, web } = await startBenchSts(dir);

  const app =
    flags.app === 'go'
      ? await startJsonChild(['serve'], goLoadgen)
      : await startJsonChild([join(here, 'app.ts')]);
  children.push(app.child);
  const appPort = app.info.port!;

  // nginx: HTTP/2 over mTLS (ALPN h2), grpc_pass to the app over a keep-alive upstream pool; one
  // worker, like the one Node process of the sidecar. Its own prefix, pid and logs under the temp dir.
  const nginxPort = await freePort();
  const nginxDir = join(dir, 'nginx');
  mkdirSync(join(nginxDir, 'tmp'), { recursive: true });
  writeFileSync(
    join(nginxDir, 'nginx.conf'),
    `worker_processes 1;
daemon off;
pid ${nginxDir}/nginx.pid;
error_log ${nginxDir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${nginxDir}/tmp/body; proxy_temp_path ${nginxDir}/tmp/proxy;
  fastcgi_temp_path ${nginxDir}/tmp/fcgi; uwsgi_temp_path ${nginxDir}/tmp/uwsgi; scgi_temp_path ${nginxDir}/tmp/scgi;
  upstream app { server 127.0.0.1:${appPort}; keepalive 128; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:${nginxPort} ssl http2;
    ssl_protocols TLSv1.3;
    ssl_certificate ${join(certs, 'orders.pem')};
    ssl_certificate_key ${join(certs, 'orders-key.pem')};
    ssl_client_certificate ${join(certs, 'root.pem')};
    ssl_verify_client on;
    ssl_verify_depth 3;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    location / {
      grpc_pass grpc://app;
      grpc_set_header X-Client-Verify $ssl_client_verify;
    }
  }
}
`,
  );
  const nginx = spawn(nginxBin, ['-c', join(nginxDir, 'nginx.conf'), '-p', nginxDir], { stdio: 'inherit' });
  children.push(nginx);
  await listening(nginxPort, 'nginx');

  const policyFile = join(dir, 'orders-policy.yaml');
  writeFileSync(policyFile, grpcPolicy(ruleCount));
  const sidecarConfig = writeOrdersSidecarConfig(
    dir,
    certs,
    sts.url,
    `app: "h2c://127.0.0.1:${appPort}", policy: ${policyFile}`,
  );
  // The sidecar harness of the HTTP/1.1 bench (the real sidecar, audit validated and batched in
  // process), bundled as `npm run build` bundles the commands, or from the sources.
  const harness =
    flags.from === 'built' ? buildHarness(join(dir, 'harness')) : join(root, 'bench/sidecar/sidecar-proc.ts');
  // BENCH_SIDECAR_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the sidecar process.
  const sidecar = await startJsonChild([
    ...words(`${flags['sidecar-node-options']} ${process.env.BENCH_SIDECAR_NODE_ARGS ?? ''}`),
    harness,
    sidecarConfig,
  ]);
  children.push(sidecar.child);
  // The barest Node HTTP/2 mTLS proxy (no token, policy or audit): what Node's TLS and HTTP/2 cost.
  const bare = await startBareProxy(join(here, 'bare-proxy.ts'), certs, appPort);
  children.push(bare.child);

  const tls = {
    certFile: join(certs, 'web.pem'),
    keyFile: join(certs, 'web-key.pem'),
    caFile: join(certs, 'root.pem'),
  };
  const targets: Record<Target, { target: string; tls?: typeof tls; pids: () => number[] }> = {
    direct: { target: `127.0.0.1:${appPort}`, pids: () => [app.child.pid!] },
    nginx: { target: `127.0.0.1:${nginxPort}`, tls, pids: () => withChildren(nginx.pid!) },
    bare: { target: `127.0.0.1:${bare.info.port}`, tls, pids: () => [bare.child.pid!] },
    sidecar: { target: `127.0.0.1:${sidecar.info.port}`, tls, pids: () => [sidecar.child.pid!] },
  };

  type Result = { throughput: Phase; fixed: Phase; cpuUsPerCall: number };
  const ratio = (a: number, b: number) => (b ? Math.round((a / b) * 100) / 100 : null);
  const ms3 = (x: number) => Math.round(x * 1000) / 1000;
  const loadBefore = loadavg();
  interface RunResult extends Partial<Record<Target, Result>> {
    run: number;
    order: Target[];
    /** The load generator's stalls during the open loop. */
    loadgen: Stalls;
    ratios: Record<string, number | null>;
    targets: Record<
      'noFailedCalls' | 'rateHeld' | 'throughputAtLeast05xNginx' | 'p99Within1msOfNginxAtRate',
      boolean
    >;
  }
  const runs: RunResult[] = [];
  for (let runIndex = 0; runIndex < runCount; runIndex++) {
    const order: Target[] = [...chosen];
    if (runIndex % 2 === 1) order.reverse();
    const results = {} as Record<Target, Result>;
    const partial = {} as Record<Target, Omit<Result, 'fixed'>>;
    const tokens = {} as Record<Target, string>;
    for (const name of order) {
      const t = targets[name];
      // A fresh token per target (web's tokens live 5 minutes); direct gets it too and ignores it.
      tokens[name] = await token(sts.url, web.cert, web.key);
      console.error(
        `[grpc bench] run ${runIndex + 1}: ${name}: closed loop, ${concurrency} in flight, ${durationMs / 1000}s`,
      );
      // CPU of the process(es) between client and app (for direct: the app itself), per call.
      const cpu0 = cpuSeconds(t.pids());
      const throughput = (
        await load({
          mode: 'closed',
          durationMs,
          targets: [{ name, target: t.target, tls: t.tls, token: tokens[name] }],
        })
      ).byTarget[name]!;
      const calls = throughput.ok + throughput.statusErrors + throughput.badReplies;
      // The warm-up's calls are served too: counted at the measured rate.
      const cpuUsPerCall = Math.round(
        ((cpuSeconds(t.pids()) - cpu0) * 1e6) / Math.max(1, calls * (1 + warmupMs / durationMs)),
      );
      partial[name] = { throughput, cpuUsPerCall };
      console.error(`[grpc bench] ${name}: ${JSON.stringify(partial[name])}`);
    }
    // Fresh tokens for the open loop: web's live 5 minutes, and long closed loops can outlast one.
    for (const name of order) tokens[name] = await token(sts.url, web.cert, web.key);
    // The open loop: the three targets in turn, a slice each, in one load generator, so that the
    // machine's noisy moments fall on each alike.
    console.error(
      `[grpc bench] run ${runIndex + 1}: open loop ${rate}/s per target, ${rateDurationMs / 1000}s per target, ${sliceMs === 0 ? 'call by call' : `${sliceMs} ms slices`} (${order.join(', ')})`,
    );
    const fixed = await load({
      mode: 'rate',
      durationMs: sliceMs === 0 ? rateDurationMs : rateDurationMs * order.length,
      targets: order.map((name) => ({
        name,
        target: targets[name].target,
        tls: targets[name].tls,
        token: tokens[name],
      })),
    });
    for (const name of order) results[name] = { ...partial[name], fixed: fixed.byTarget[name]! };
    console.error(`[grpc bench] open loop: ${JSON.stringify(fixed)}`);
    const s = results.sidecar;
    const n = results.nginx;
    const b = results.bare;
    const clean = (p: Phase) => p.errors + p.statusErrors + p.badReplies === 0 && p.ok > 0;
    const p99Gap =
      s.fixed.p99ms !== null && n.fixed.p99ms !== null ? ms3(s.fixed.p99ms - n.fixed.p99ms) : null;
    runs.push({
      run: runIndex + 1,
      order,
      ...results,
      loadgen: fixed.loadgen,
      ratios: {
        sidecarToNginxThroughput: ratio(s.throughput.rps, n.throughput.rps),
        sidecarToDirectThroughput: results.direct
          ? ratio(s.throughput.rps, results.direct.throughput.rps)
          : null,
        nginxToDirectThroughput: results.direct
          ? ratio(n.throughput.rps, results.direct.throughput.rps)
          : null,
        sidecarToNginxCpuPerCall: ratio(s.cpuUsPerCall, n.cpuUsPerCall),
        sidecarMinusNginxP99AtRateMs: p99Gap,
        ...(b && {
          bareToNginxThroughput: ratio(b.throughput.rps, n.throughput.rps),
          sidecarToBareCpuPerCall: ratio(s.cpuUsPerCall, b.cpuUsPerCall),
          bareMinusNginxP99AtRateMs:
            b.fixed.p99ms !== null && n.fixed.p99ms !== null ? ms3(b.fixed.p99ms - n.fixed.p99ms) : null,
          sidecarMinusBareP99AtRateMs:
            b.fixed.p99ms !== null && s.fixed.p99ms !== null ? ms3(s.fixed.p99ms - b.fixed.p99ms) : null,
        }),
      },
      // Issue 17's targets; a run with failed calls on either side meets none of them.
      targets: {
        noFailedCalls: Object.values(results).every((r) => clean(r.throughput) && clean(r.fixed)),
        rateHeld: [s, n].every((r) => r.fixed.rps >= 0.95 * rate),
        throughputAtLeast05xNginx: s.throughput.rps >= 0.5 * n.throughput.rps,
        p99Within1msOfNginxAtRate: p99Gap !== null && p99Gap <= 1,
      },
    });
  }
  const loadAfter = loadavg();
  await sts.close();
  const targetsMetEveryRun = Object.fromEntries(
    Object.keys(runs[0]!.targets).map((k) => [
      k,
      runs.every((r) => r.targets[k as keyof RunResult['targets']]),
    ]),
  );
  const summary = {
    ...machineFacts(loadBefore, loadAfter),
    from: flags.from,
    client: flags.client,
    app: flags.app,
    targets: chosen,
    concurrency,
    connections,
    durationS: durationMs / 1000,
    rate,
    rateDurationS: rateDurationMs / 1000,
    warmupS: warmupMs / 1000,
    sliceMs,
    rules: ruleCount,
    targetsMetEveryRun,
    runs,
  };
  if (flags.record) record(renderResults(summary));
  console.log(`BENCH_GRPC ${JSON.stringify(summary)}`);
} finally {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 300));
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Replaces the generated block of bench/RESULTS.md (between the markers) and keeps everything
 * else, including the hand-written notes after it; without the markers, appends a new section.
 */
function record(block: string): void {
  const file = join(root, 'bench/RESULTS.md');
  const text = readFileSync(file, 'utf8');
  const a = text.indexOf(START);
  const b = text.indexOf(END);
  const generated = `${START}\n${block}${END}`;
  writeFileSync(
    file,
    a !== -1 && b > a
      ? text.slice(0, a) + generated + text.slice(b + END.length)
      : `${text.trimEnd()}\n\n## gRPC through the sidecar vs nginx grpc_pass (issue 17)\n\n${generated}\n`,
  );
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- renders the summary object built above
function renderResults(x: any): string {
  const yes = (v: boolean) => (v ? 'yes' : '**no**');
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- one target's result
  const row = (name: string, r: any) =>
    `| ${name} | ${r.throughput.rps} | ${r.throughput.p50ms} | ${r.throughput.p99ms} | ${r.throughput.errors + r.throughput.statusErrors + r.throughput.badReplies} | ${r.cpuUsPerCall} | ${r.fixed.rps} | ${r.fixed.p50ms} | ${r.fixed.p90ms ?? '–'} | ${r.fixed.p99ms} | ${r.fixed.p999ms ?? '–'} | ${r.fixed.errors + r.fixed.statusErrors + r.fixed.badReplies} |`;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- one run
  const perRun = x.runs.map((r: any) =>
    [
      `Run ${r.run} (${r.order.join(' → ')}): sidecar ÷ nginx throughput **${r.ratios.sidecarToNginxThroughput}** (≥ 0.5: ${yes(r.targets.throughputAtLeast05xNginx)}); p99 at ${x.rate}/s sidecar − nginx **${r.ratios.sidecarMinusNginxP99AtRateMs} ms** (≤ 1 ms: ${yes(r.targets.p99Within1msOfNginxAtRate)}); CPU per call sidecar ÷ nginx ${r.ratios.sidecarToNginxCpuPerCall}; ${r.bare ? `the bare Node proxy: p99 − nginx's **${r.ratios.bareMinusNginxP99AtRateMs} ms**, sidecar − bare ${r.ratios.sidecarMinusBareP99AtRateMs} ms, throughput ÷ nginx ${r.ratios.bareToNginxThroughput}, sidecar CPU per call ÷ bare ${r.ratios.sidecarToBareCpuPerCall}; ` : ''}sidecar ÷ direct ${r.ratios.sidecarToDirectThroughput}, nginx ÷ direct ${r.ratios.nginxToDirectThroughput}; rate held ${yes(r.targets.rateHeld)}; no failed calls ${yes(r.targets.noFailedCalls)}. The load generator during the open loop: event-loop delay p99 ${r.loadgen.loopDelayP99ms} ms, max ${r.loadgen.loopDelayMaxms} ms; garbage collection ${r.loadgen.gcMs} ms in all, longest ${r.loadgen.gcMaxMs} ms.`,
      '',
      `| target | calls/s (closed loop) | p50 ms | p99 ms | failed | proxy CPU µs/call | calls/s (${x.rate}/s) | p50 ms @rate | p90 ms @rate | p99 ms @rate | p99.9 ms @rate | failed @rate |`,
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...(r.direct ? [row('direct (h2c to the app)', r.direct)] : []),
      row('nginx (mTLS, grpc_pass)', r.nginx),
      ...(r.bare ? [row('bare Node HTTP/2 proxy (mTLS only)', r.bare)] : []),
      row('sidecar (mTLS + token + policy + audit)', r.sidecar),
    ].join('\n'),
  );
  return `Command: \`node bench/grpc/run.ts --runs ${x.runs.length} --from ${x.from} --duration ${x.durationS}s --rate-duration ${x.rateDurationS}s --warmup ${x.warmupS}s ${x.sliceMs === 0 ? '--interleave call' : `--slice ${x.sliceMs}ms`} --concurrency ${x.concurrency} --rate ${x.rate} --connections ${x.connections} --client ${x.client} --app ${x.app} --targets ${x.targets.join(',')} --rules ${x.rules} --record\`

- Date: ${x.date}; Node ${x.node}; nproc ${x.nproc}; memory ${x.memGb} GiB (free ${x.freeGb} GiB)
- Load average (1/5/15 min) before: ${x.load.before.join(' / ')}; after: ${x.load.after.join(' / ')}
- One machine: the load generator, the app, nginx, the bare Node proxy, the sidecar and the STS share its ${x.nproc} cores.
- Calls: unary \`${GET_PATH}\`, 22-byte request, 128-byte reply checked by the client; the client ${CLIENTS[x.client as keyof typeof CLIENTS]}, the app ${x.app === 'go' ? "bench/grpc/loadgen-go's server (Go, h2c: its own pauses stay under a millisecond, so the tail left is the proxies')" : '@grpc/grpc-js (h2c)'}, raw messages. ${x.connections} HTTP/2 connection(s) per load generator. Closed loop: ${x.concurrency} calls in flight for ${x.durationS} s after a ${x.warmupS} s warm-up, one target after the other; open loop: ${x.rate} calls/s for ${x.rateDurationS} s per target, ${x.sliceMs === 0 ? `the ${x.targets.length} targets called in turn call by call from one load generator (${x.targets.length * x.rate} calls/s in all, each target at ${x.rate}/s, every stall of the machine falls on each)` : `the ${x.targets.length} targets in turn in ${x.sliceMs} ms slices from one load generator (the same minutes for each)`}. "proxy CPU µs/call": user+system CPU from /proc of the process(es) between client and app over the closed loop (for direct: the app itself) divided by calls.
- nginx: Debian nginx, HTTP/2 over TLS 1.3, \`ssl_verify_client on\`, \`grpc_pass grpc://\` to a keep-alive upstream, \`worker_processes 1\`; no token, no policy. Bare Node proxy (bench/grpc/bare-proxy.ts): node:http2's secure server, client certificate required, each stream relayed to the app over one h2c session, nothing else — what any Node HTTP/2 proxy pays. Sidecar (${x.from}): \`app: h2c://\`, peer check, bearer token from a real STS (ES256) bound to web's certificate, a ${x.rules + 1}-rule policy whose matching \`grpc:\` rule is last, one audit event per call (validated and batched in process).
- Issue 17's targets: throughput ≥ 0.5× nginx; p99 at ${x.rate} calls/s within 1 ms of nginx's. Met in every run: ${JSON.stringify(x.targetsMetEveryRun)}

${perRun.join('\n\n')}

Machine-readable line: \`BENCH_GRPC {…}\` on stdout.
`;
}
