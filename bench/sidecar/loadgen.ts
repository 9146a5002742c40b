// The one load generator of the sidecar bench: undici over keep-alive connections, either closed
// loop at fixed concurrency (throughput) or open loop at a fixed rate (latency at 1,000 req/s).
// Usage: node loadgen.ts '<json options>'; prints one JSON summary line. In `slices` mode it warms
// its connections, prints `{"ready":true}`, then runs a closed loop of N ms for each line `N` read
// on stdin, printing `{"ok":…,"errors":…,"statusErrors":…,"seconds":…,"connects":…}` after each
// (`connects`: connections opened during the slice, 0 when the warmed ones stayed open); it exits
// when stdin ends.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { createHistogram } from 'node:perf_hooks';
import { Pool } from 'undici';

interface Options {
  url: string;
  path: string;
  mode: 'closed' | 'rate' | 'slices';
  concurrency: number;
  rate: number;
  durationMs: number;
  warmupMs: number;
  tls?: { certFile: string; keyFile: string; caFile: string };
  headers: Record<string, string>;
  /** When > 0: each request is a POST with a JSON body of this many bytes (default: GET, no body). */
  bodyBytes?: number;
}

const o = JSON.parse(process.argv[2]!) as Options;
const pool = new Pool(o.url, {
  connections: o.concurrency,
  pipelining: 1,
  keepAliveTimeout: 120_000,
  ...(o.tls
    ? {
        connect: {
          cert: readFileSync(o.tls.certFile),
          key: readFileSync(o.tls.keyFile),
          ca: readFileSync(o.tls.caFile),
          rejectUnauthorized: false,
          minVersion: 'TLSv1.3' as const,
        },
      }
    : {}),
});
const body = o.bodyBytes ? Buffer.from(`{"note":"${'x'.repeat(Math.max(0, o.bodyBytes - 11))}"}`) : null;
const request = body
  ? {
      method: 'POST' as const,
      path: o.path,
      body,
      headers: { ...o.headers, 'content-type': 'application/json' },
    }
  : { method: 'GET' as const, path: o.path, headers: o.headers };
const hist = createHistogram({ lowest: 1, highest: 60_000_000_000, figures: 3 });
let ok = 0;
let errors = 0;
let statusErrors = 0;
const statuses: Record<string, number> = {};
let measuring = false;

async function one(): Promise<void> {
  const t0 = process.hrtime.bigint();
  try {
    const res = await pool.request(request);
    await res.body.dump();
    if (!measuring) return;
    if (res.statusCode !== 200) {
      statusErrors++;
      statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
    } else ok++;
    hist.record(Number(process.hrtime.bigint() - t0) || 1);
  } catch {
    if (measuring) errors++;
  }
}

async function closedLoop(until: number): Promise<void> {
  await Promise.all(
    Array.from({ length: o.concurrency }, async () => {
      while (Date.now() < until) await one();
    }),
  );
}

async function openLoop(until: number): Promise<void> {
  const interval = 1000 / o.rate;
  const start = performance.now();
  const inflight = new Set<Promise<void>>();
  let sent = 0;
  while (Date.now() < until) {
    const due = start + sent * interval;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const p = one().finally(() => inflight.delete(p));
    inflight.add(p);
    sent++;
  }
  await Promise.all(inflight);
}

if (o.mode === 'slices') {
  let connects = 0;
  pool.on('connect', () => connects++);
  await closedLoop(Date.now() + o.warmupMs);
  console.log(JSON.stringify({ ready: true }));
  for await (const line of createInterface({ input: process.stdin })) {
    const sliceMs = Number(line);
    if (!Number.isFinite(sliceMs) || sliceMs <= 0)
      throw new Error(`slices: expected a duration in ms, got "${line}"`);
    ok = errors = statusErrors = connects = 0;
    measuring = true;
    const t0 = performance.now();
    await closedLoop(Date.now() + sliceMs);
    measuring = false;
    const seconds = Math.round(performance.now() - t0) / 1000;
    console.log(JSON.stringify({ ok, errors, statusErrors, seconds, connects }));
  }
  await pool.close();
  process.exit(0);
}
const run = o.mode === 'closed' ? closedLoop : openLoop;
await run(Date.now() + o.warmupMs);
measuring = true;
const started = performance.now();
await run(Date.now() + o.durationMs);
const elapsed = (performance.now() - started) / 1000;
measuring = false;
await pool.close();
const ms = (ns: number) => Math.round(ns / 1e3) / 1e3;
console.log(
  JSON.stringify({
    ok,
    errors,
    statusErrors,
    ...(statusErrors ? { statuses } : {}),
    seconds: Math.round(elapsed * 100) / 100,
    rps: Math.round(ok / elapsed),
    p50ms: ms(hist.percentile(50)),
    p99ms: ms(hist.percentile(99)),
    maxms: ms(hist.max),
  }),
);
