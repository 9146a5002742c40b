// The gRPC bench's load generator: @grpc/grpc-js unary calls to `/shop.Orders/Get`, either closed
// loop (a fixed number of calls in flight: throughput) or open loop (a fixed rate: latency), over
// `connections` HTTP/2 connections (gRPC channels; 1 by default, as one client channel is).
// Usage: node loadgen.ts '<json options>'; prints one JSON summary line.
import { readFileSync } from 'node:fs';
import { createHistogram } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { ORDERS_SERVICE } from './service.ts';

interface Options {
  /** host:port */
  target: string;
  mode: 'closed' | 'rate';
  concurrency: number;
  rate: number;
  durationMs: number;
  warmupMs: number;
  connections: number;
  /** mTLS with a workload certificate (nginx, sidecar); plaintext h2c without (direct). */
  tls?: { certFile: string; keyFile: string; caFile: string };
  /** Sent as `authorization: Bearer …` metadata. */
  token?: string;
}

const o = JSON.parse(process.argv[2]!) as Options;
const Client = grpc.makeGenericClientConstructor(ORDERS_SERVICE, 'Orders');
type Unary = (
  req: Buffer,
  md: grpc.Metadata,
  cb: (err: grpc.ServiceError | null, res?: Buffer) => void,
) => grpc.ClientUnaryCall;

const credentials = o.tls
  ? grpc.credentials.createSsl(
      readFileSync(o.tls.caFile),
      readFileSync(o.tls.keyFile),
      readFileSync(o.tls.certFile),
      // The workload certificates name SPIFFE IDs, not host names; the chain is still checked.
      { checkServerIdentity: () => undefined },
    )
  : grpc.credentials.createInsecure();
const clients = Array.from(
  { length: o.connections },
  () =>
    new Client(o.target, credentials, {
      'grpc.default_authority': 'orders',
      ...(o.tls ? { 'grpc.ssl_target_name_override': 'orders' } : {}),
      // One HTTP/2 connection per client: without a local pool, clients share one subchannel.
      'grpc.use_local_subchannel_pool': 1,
    }) as unknown as Record<string, Unary> & grpc.Client,
);
const md = new grpc.Metadata();
if (o.token) md.set('authorization', `Bearer ${o.token}`);

const hist = createHistogram({ lowest: 1, highest: 60_000_000_000, figures: 3 });
let ok = 0;
let errors = 0;
let statusErrors = 0;
let badReplies = 0;
const statuses: Record<string, number> = {};
let measuring = false;
let seq = 0;

function one(): Promise<void> {
  const n = seq++;
  const req = Buffer.from(`order-${String(n).padStart(10, '0')}`);
  const client = clients[n % clients.length]!;
  const t0 = process.hrtime.bigint();
  return new Promise((resolve) => {
    client.get!(req, md, (err, res) => {
      if (measuring) {
        if (err) {
          // A gRPC status from the far side (a refusal, an upstream error) or a transport failure.
          if (err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.CANCELLED) errors++;
          else statusErrors++;
          const key = `${grpc.status[err.code] ?? err.code}: ${err.details}`.slice(0, 120);
          statuses[key] = (statuses[key] ?? 0) + 1;
        } else if (!res || res.length !== 128 || !res.subarray(0, 16).equals(req.subarray(0, 16))) {
          badReplies++;
        } else {
          ok++;
          hist.record(Number(process.hrtime.bigint() - t0) || 1);
        }
      }
      resolve();
    });
  });
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

const run = o.mode === 'closed' ? closedLoop : openLoop;
await run(Date.now() + o.warmupMs);
measuring = true;
const started = performance.now();
const calls0 = seq;
await run(Date.now() + o.durationMs);
const elapsed = (performance.now() - started) / 1000;
measuring = false;
for (const c of clients) c.close();
const ms = (ns: number) => Math.round(ns / 1e3) / 1e3;
console.log(
  JSON.stringify({
    ok,
    errors,
    statusErrors,
    badReplies,
    ...(errors || statusErrors ? { statuses } : {}),
    sent: seq - calls0,
    seconds: Math.round(elapsed * 100) / 100,
    rps: Math.round(ok / elapsed),
    p50ms: ok ? ms(hist.percentile(50)) : null,
    p99ms: ok ? ms(hist.percentile(99)) : null,
    maxms: ok ? ms(hist.max) : null,
  }),
);
