// `npx node bench/sts/run.ts`: STS token issuance vs a bare fastify mTLS route, keep-alive and
// new-connection, in one run. Env: BENCH_DURATION_MS (default 10000 per phase), BENCH_CONNECTIONS
// (default 32), BENCH_PIPELINING (default 8), BENCH_CONCURRENCY (new-connection loops, default 16),
// BENCH_STS_AUDIT (default `open,closed`; empty to skip): keep-alive phases of the STS with the real
// audit client posting to a real collector (its own process) in each failMode, for the cost of
// closed (each token.issued fsynced to the spool before the token leaves) against open.
// Prints a human summary and one machine-readable line starting with `BENCH_STS_RESULT `.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, freemem, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { openFileStore } from '../../audit/index.ts';
import { COLLECTOR_ID, startBenchCollector } from '../collector.ts';
import { cpuSeconds } from '../machine.ts';
import { examplePki, exampleStsConfig } from '../pki.ts';
import { keepAliveLoad, newConnectionLoad } from './load.ts';
import type { Target } from './load.ts';

const DURATION = Number(process.env.BENCH_DURATION_MS ?? 10_000);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const PIPELINING = Number(process.env.BENCH_PIPELINING ?? 8);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const AUDIT_MODES = (process.env.BENCH_STS_AUDIT ?? 'open,closed').split(',').filter(Boolean) as (
  'open' | 'closed'
)[];
for (const m of AUDIT_MODES)
  if (m !== 'open' && m !== 'closed') throw new Error(`BENCH_STS_AUDIT: unknown mode ${m}`);
const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';

const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-sts-'));
const children: ChildProcess[] = [];

function startServer(
  mode: 'sts' | 'bare' | 'sts-audit',
  config: object,
): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(
    process.execPath,
    [new URL('./server.ts', import.meta.url).pathname, mode, JSON.stringify(config)],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, PORTCULLIS_MASTER_KEY: randomBytes(32).toString('base64') },
    },
  );
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /READY (\d+)/.exec(out);
      if (m) resolve({ port: Number(m[1]), child });
    });
    child.once('exit', (code) => reject(new Error(`${mode} server exited ${code}`)));
  });
}

async function stop(child: ChildProcess) {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

async function main() {
  const { ids, certs } = await examplePki(dir);
  const config = {
    ...exampleStsConfig(dir, { ids, certs }),
    rateLimit: { perSecond: 1_000_000, burst: 1_000_000 },
  };
  const body = `grant_type=client_credentials&audience=${encodeURIComponent(ORDERS)}`;
  const request = Buffer.from(
    `POST /oauth2/token HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    'latin1',
  );
  const tls = {
    cert: readFileSync(join(certs, 'web.pem')),
    key: readFileSync(join(certs, 'web-key.pem')),
    ca: readFileSync(join(certs, 'root.pem')),
    servername: 'localhost',
  };
  const results: Record<
    string,
    { perSecond: number; completed: number; non2xx: number; errors: number; resumed?: number }
  > = {};
  // CPU µs per keep-alive request, server process (all threads) and load generator: steadier than
  // requests per second when the two cores are shared with whatever else the machine runs.
  const cpuPerRequest: Record<string, { server: number; loadgen: number }> = {};
  for (const mode of ['bare', 'sts'] as const) {
    const { port, child } = await startServer(mode, config);
    const target: Target = { host: '127.0.0.1', port, tls, request };
    await keepAliveLoad(target, {
      connections: CONNECTIONS,
      pipelining: PIPELINING,
      durationMs: Math.min(2000, DURATION / 5),
    }); // warm-up
    const cpu0 = { server: cpuSeconds([child.pid!]), loadgen: process.cpuUsage() };
    const ka = await keepAliveLoad(target, {
      connections: CONNECTIONS,
      pipelining: PIPELINING,
      durationMs: DURATION,
    });
    const loadgenCpu = process.cpuUsage(cpu0.loadgen);
    cpuPerRequest[mode] = {
      server: Math.round(((cpuSeconds([child.pid!]) - cpu0.server) * 1e6) / ka.completed),
      loadgen: Math.round((loadgenCpu.user + loadgenCpu.system) / ka.completed),
    };
    if (mode === 'sts' && !/"access_token":"eyJ/.test(ka.sample))
      throw new Error(`unexpected STS answer: ${ka.sample}`);
    const nc = await newConnectionLoad(target, {
      concurrency: CONCURRENCY,
      durationMs: DURATION,
      resume: true,
    });
    results[`${mode}KeepAlive`] = ka;
    results[`${mode}NewConnection`] = nc;
    await stop(child);
    console.log(
      `${mode.padEnd(4)} keep-alive: ${ka.perSecond}/s (${ka.completed} ok, ${ka.non2xx} non-2xx, ${ka.errors} errors); ` +
        `new connection: ${nc.perSecond}/s (${nc.completed} ok, ${nc.resumed} resumed, ${nc.non2xx} non-2xx, ${nc.errors} errors)`,
    );
  }
  // The real audit client against a real collector, in each failMode: keep-alive tokens/s, STS CPU
  // per token, and the events that reached the log (each run gets a fresh collector and spool).
  const audit: Record<
    string,
    { perSecond: number; cpuUsPerToken: number; tokens: number; eventsLogged: number; errors: number }
  > = {};
  for (const failMode of AUDIT_MODES) {
    const auditDir = join(dir, `audit-${failMode}`);
    const collector = await startBenchCollector(auditDir, ids, certs);
    children.push(collector.child);
    const { port, child } = await startServer('sts-audit', {
      ...config,
      // Each server process gets its own master key, so its own keystore.
      keystore: { type: 'file', dir: join(auditDir, 'keys') },
      audit: {
        sink: 'collector',
        collector: collector.url,
        collectorId: COLLECTOR_ID,
        spoolDir: join(auditDir, 'spool'),
        failMode,
      },
    });
    const target: Target = { host: '127.0.0.1', port, tls, request };
    const warm = await keepAliveLoad(target, {
      connections: CONNECTIONS,
      pipelining: PIPELINING,
      durationMs: Math.min(2000, DURATION / 5),
    });
    const cpu0 = cpuSeconds([child.pid!]);
    const ka = await keepAliveLoad(target, {
      connections: CONNECTIONS,
      pipelining: PIPELINING,
      durationMs: DURATION,
    });
    const cpuUsPerToken = Math.round(((cpuSeconds([child.pid!]) - cpu0) * 1e6) / ka.completed);
    await stop(child);
    await collector.stop();
    const store = await openFileStore({ dir: join(auditDir, 'audit-data', 'log'), readOnly: true });
    let eventsLogged = 0;
    for await (const r of store.read(0)) if (r.event.type === 'token.issued') eventsLogged++;
    await store.close();
    audit[failMode] = {
      perSecond: ka.perSecond,
      cpuUsPerToken,
      tokens: warm.completed + ka.completed,
      eventsLogged,
      errors: ka.errors + ka.non2xx + warm.errors + warm.non2xx,
    };
    console.log(
      `sts with audit failMode ${failMode}: ${ka.perSecond}/s keep-alive, ${cpuUsPerToken} µs STS CPU/token; ` +
        `${eventsLogged} token.issued events logged for ${warm.completed + ka.completed} tokens`,
    );
  }
  const summary = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    memTotalGiB: +(totalmem() / 2 ** 30).toFixed(1),
    memFreeGiB: +(freemem() / 2 ** 30).toFixed(1),
    loadavg: loadavg().map((l) => +l.toFixed(2)),
    durationMs: DURATION,
    connections: CONNECTIONS,
    pipelining: PIPELINING,
    concurrency: CONCURRENCY,
    stsKeepAlivePerSec: results.stsKeepAlive!.perSecond,
    bareKeepAlivePerSec: results.bareKeepAlive!.perSecond,
    keepAliveRatio: +(results.stsKeepAlive!.perSecond / results.bareKeepAlive!.perSecond).toFixed(3),
    stsCpuUsPerToken: cpuPerRequest.sts!.server,
    bareCpuUsPerRequest: cpuPerRequest.bare!.server,
    loadgenCpuUsPerRequest: { sts: cpuPerRequest.sts!.loadgen, bare: cpuPerRequest.bare!.loadgen },
    stsNewConnPerSec: results.stsNewConnection!.perSecond,
    bareNewConnPerSec: results.bareNewConnection!.perSecond,
    newConnRatio: +(results.stsNewConnection!.perSecond / results.bareNewConnection!.perSecond).toFixed(3),
    stsNewConnResumed: results.stsNewConnection!.resumed,
    stsErrors:
      results.stsKeepAlive!.errors +
      results.stsNewConnection!.errors +
      results.stsKeepAlive!.non2xx +
      results.stsNewConnection!.non2xx,
    audit,
    ...(audit.open && audit.closed
      ? {
          auditClosedToOpenKeepAlive: +(audit.closed.perSecond / audit.open.perSecond).toFixed(3),
          auditClosedToOpenCpuPerToken: +(audit.closed.cpuUsPerToken / audit.open.cpuUsPerToken).toFixed(3),
        }
      : {}),
  };
  console.log(`BENCH_STS_RESULT ${JSON.stringify(summary)}`);
}

main()
  .catch((err: unknown) => {
    console.error(`bench failed: ${(err as Error).message}`);
    process.exitCode = 1;
  })
  .finally(() => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });
