// The gRPC bench's load generator: unary calls to `/shop.Orders/Get`, either closed loop (a fixed
// number of calls in flight: throughput) or open loop (a fixed rate: latency), over `connections`
// HTTP/2 connections per target. Given several targets, the open loop sends its rate to each in
// turn for `sliceMs` (1 s): the targets share the same minutes, so a noisy moment of the machine
// falls on each alike instead of on whichever ran then; with `sliceMs` 0 it alternates call by
// call (each target still gets `rate`), so every stall of the machine hits each target. Two clients:
// - `http2` (default): gRPC over node:http2 directly — a length-prefixed message in a POST with
//   `content-type: application/grpc` and `te: trailers`; the reply's message and its trailers'
//   `grpc-status` are checked. The load generator's own cost per call is a fraction of grpc-js's, so
//   the open loop's latency is the target's, not the generator's (as h2load/ghz are used).
// - `grpc-js`: @grpc/grpc-js channels, as an application would call.
// Usage: node loadgen.ts '<json options>'; prints one JSON line: each target's figures by name.
import { readFileSync } from 'node:fs';
import * as http2 from 'node:http2';
import { PerformanceObserver, createHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { GET_PATH, ORDERS_SERVICE } from './service.ts';

interface Target {
  /** A name for the results (several targets: the open loop alternates between them). */
  name: string;
  /** host:port */
  target: string;
  /** mTLS with a workload certificate (nginx, sidecar); plaintext h2c without (direct). */
  tls?: { certFile: string; keyFile: string; caFile: string };
  /** Sent as `authorization: Bearer …` metadata. */
  token?: string;
}

interface Options {
  targets: Target[];
  /** With several targets, the open loop sends to each in turn for this long (default 1 s). */
  sliceMs?: number;
  mode: 'closed' | 'rate';
  client?: 'http2' | 'grpc-js';
  concurrency: number;
  rate: number;
  durationMs: number;
  warmupMs: number;
  connections: number;
}

const options = JSON.parse(process.argv[2]!) as Options;

/** The outcome of one call: a reply message, or a gRPC status code and message. */
type Outcome = { reply: Buffer } | { code: number; details: string; transport: boolean };
type Caller = { call(n: number, req: Buffer, done: (out: Outcome) => void): void; close(): void };

function grpcJsCaller(o: Target): Caller {
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
    { length: options.connections },
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
  return {
    call(n, req, done) {
      clients[n % clients.length]!.get!(req, md, (err, res) =>
        done(
          err
            ? {
                code: err.code,
                details: err.details,
                transport: err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.CANCELLED,
              }
            : { reply: res ?? Buffer.alloc(0) },
        ),
      );
    },
    close: () => clients.forEach((c) => c.close()),
  };
}

function http2Caller(o: Target): Caller {
  const tls = o.tls
    ? {
        cert: readFileSync(o.tls.certFile),
        key: readFileSync(o.tls.keyFile),
        ca: readFileSync(o.tls.caFile),
        servername: 'orders',
        // The workload certificates name SPIFFE IDs, not host names; the chain is still checked.
        checkServerIdentity: () => undefined,
      }
    : undefined;
  const sessions = Array.from({ length: options.connections }, () => {
    const s = http2.connect(`${tls ? 'https' : 'http'}://${o.target}`, {
      ...tls,
      settings: { initialWindowSize: 1 << 20 },
    });
    s.on('error', (err) => console.error(`gRPC loadgen: connection error: ${err.message}`));
    return s;
  });
  const headers: http2.OutgoingHttpHeaders = {
    ':method': 'POST',
    ':path': GET_PATH,
    ':authority': 'orders',
    'content-type': 'application/grpc',
    te: 'trailers',
    ...(o.token ? { authorization: `Bearer ${o.token}` } : {}),
  };
  return {
    call(n, req, done) {
      const frame = Buffer.allocUnsafe(5 + req.length);
      frame[0] = 0;
      frame.writeUInt32BE(req.length, 1);
      req.copy(frame, 5);
      let stream: http2.ClientHttp2Stream;
      try {
        stream = sessions[n % sessions.length]!.request(headers, { endStream: false });
      } catch (err) {
        done({ code: 14, details: (err as Error).message, transport: true });
        return;
      }
      const chunks: Buffer[] = [];
      let status: string | undefined;
      let message = '';
      let settled = false;
      const finish = (out: Outcome) => {
        if (!settled) {
          settled = true;
          done(out);
        }
      };
      // A trailers-only answer (a refusal) carries grpc-status in the response headers.
      stream.on('response', (h) => {
        if (h['grpc-status'] !== undefined) {
          status = String(h['grpc-status']);
          message = String(h['grpc-message'] ?? '');
        }
      });
      stream.on('trailers', (t) => {
        status = String(t['grpc-status']);
        message = String(t['grpc-message'] ?? '');
      });
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('error', (err) => finish({ code: 14, details: err.message, transport: true }));
      stream.on('close', () => {
        if (status === undefined)
          return finish({ code: 14, details: `stream closed (${stream.rstCode})`, transport: true });
        if (status !== '0') return finish({ code: Number(status), details: message, transport: false });
        const body = Buffer.concat(chunks);
        // One uncompressed length-prefixed message, exactly.
        const ok = body.length >= 5 && body[0] === 0 && body.readUInt32BE(1) === body.length - 5;
        finish({ reply: ok ? body.subarray(5) : Buffer.alloc(0) });
      });
      stream.end(frame);
    },
    close: () => sessions.forEach((s) => s.close()),
  };
}

/** One target's caller and figures. */
class Load {
  readonly caller: Caller;
  readonly hist = createHistogram({ lowest: 1, highest: 60_000_000_000, figures: 3 });
  ok = 0;
  errors = 0;
  statusErrors = 0;
  badReplies = 0;
  sent = 0;
  /** Calls made to this target: which of its connections the next one takes. */
  calls = 0;
  readonly statuses: Record<string, number> = {};
  constructor(t: Target) {
    this.caller = (options.client ?? 'http2') === 'grpc-js' ? grpcJsCaller(t) : http2Caller(t);
  }
}
const loads = options.targets.map((t) => new Load(t));
const sliceMs = options.sliceMs ?? 1000;
let measuring = false;
let seq = 0;
let origin = performance.now();
let turn = 0;
/**
 * The target of the moment: with several, each in turn for `sliceMs`; with `sliceMs` 0, one call
 * each in turn (the open loop then sends `rate` to each: `rate` × targets in all).
 */
const current = () =>
  loads[
    sliceMs === 0 ? turn++ % loads.length : Math.floor((performance.now() - origin) / sliceMs) % loads.length
  ]!;

function one(l: Load): Promise<void> {
  const n = seq++;
  if (measuring) l.sent++;
  const req = Buffer.from(`order-${String(n).padStart(10, '0')}`);
  const t0 = process.hrtime.bigint();
  return new Promise((resolve) => {
    l.caller.call(l.calls++, req, (out) => {
      if (measuring) {
        if ('code' in out) {
          // A gRPC status from the far side (a refusal, an upstream error) or a transport failure.
          if (out.transport) l.errors++;
          else l.statusErrors++;
          const key = `${grpc.status[out.code] ?? out.code}: ${out.details}`.slice(0, 120);
          l.statuses[key] = (l.statuses[key] ?? 0) + 1;
        } else if (out.reply.length !== 128 || !out.reply.subarray(0, 16).equals(req.subarray(0, 16))) {
          l.badReplies++;
        } else {
          l.ok++;
          l.hist.record(Number(process.hrtime.bigint() - t0) || 1);
        }
      }
      resolve();
    });
  });
}

async function closedLoop(until: number): Promise<void> {
  await Promise.all(
    Array.from({ length: options.concurrency }, async () => {
      while (Date.now() < until) await one(current());
    }),
  );
}

async function openLoop(until: number): Promise<void> {
  const interval = 1000 / (options.rate * (sliceMs === 0 ? loads.length : 1));
  const start = performance.now();
  const inflight = new Set<Promise<void>>();
  let sent = 0;
  while (Date.now() < until) {
    const due = start + sent * interval;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const p = one(current()).finally(() => inflight.delete(p));
    inflight.add(p);
    sent++;
  }
  await Promise.all(inflight);
}

const run = options.mode === 'closed' ? closedLoop : openLoop;
// The warm-up reaches every target (a slice each at least).
await run(Date.now() + Math.max(options.warmupMs, loads.length * sliceMs));
// The load generator's own stalls (event-loop delay, garbage collection) while measuring: a
// latency tail they explain is the machine's or the generator's, not the target's.
const loopDelay = monitorEventLoopDelay({ resolution: 1 });
let gcMs = 0;
let gcMaxMs = 0;
const gcs = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gcMs += e.duration;
    gcMaxMs = Math.max(gcMaxMs, e.duration);
  }
});
measuring = true;
loopDelay.enable();
gcs.observe({ entryTypes: ['gc'] });
origin = performance.now();
const started = performance.now();
await run(Date.now() + options.durationMs);
// Each target's share of the time: its slices (all of it when calls alternate).
const elapsed = (performance.now() - started) / 1000 / (sliceMs === 0 ? 1 : loads.length);
measuring = false;
loopDelay.disable();
gcs.disconnect();
for (const l of loads) l.caller.close();
const ms = (ns: number) => Math.round(ns / 1e3) / 1e3;
const summary = (l: Load) => ({
  ok: l.ok,
  errors: l.errors,
  statusErrors: l.statusErrors,
  badReplies: l.badReplies,
  ...(l.errors || l.statusErrors ? { statuses: l.statuses } : {}),
  sent: l.sent,
  seconds: Math.round(elapsed * 100) / 100,
  rps: Math.round(l.ok / elapsed),
  p50ms: l.ok ? ms(l.hist.percentile(50)) : null,
  p90ms: l.ok ? ms(l.hist.percentile(90)) : null,
  p99ms: l.ok ? ms(l.hist.percentile(99)) : null,
  p999ms: l.ok ? ms(l.hist.percentile(99.9)) : null,
  maxms: l.ok ? ms(l.hist.max) : null,
});
console.log(
  JSON.stringify({
    ...Object.fromEntries(options.targets.map((t, i) => [t.name, summary(loads[i]!)])),
    loadgen: {
      loopDelayP99ms: ms(loopDelay.percentile(99)),
      loopDelayMaxms: ms(loopDelay.max),
      gcMs: Math.round(gcMs),
      gcMaxMs: Math.round(gcMaxMs * 10) / 10,
    },
  }),
);
