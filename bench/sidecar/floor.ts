// Issue 20's memory floor: the resident memory of the barest Node mTLS reverse proxy
// (floor-proxy.mjs), idle 3 s after it listens and after a saturation run like the sidecar bench's
// (64 keep-alive mTLS connections, closed loop), with no V8 flags and with the sidecar's. It tells
// how much of the sidecar's RSS any Node process serving TLS and HTTP pays before doing anything.
// Usage: node bench/sidecar/floor.ts [--runs 3] [--duration 20s]; prints `BENCH_FLOOR {json}`.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { Agent, request } from 'node:https';
import type { AddressInfo } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchFlags, durationFlag } from '../flags.ts';
import { machineFacts } from '../machine.ts';
import { rssMb, smapsRollup } from '../memory.ts';
import { examplePki } from '../pki.ts';
import { SIDECAR_NODE_OPTIONS } from './entry.ts';

const { values: flags } = benchFlags({
  options: { runs: { type: 'string', default: '3' }, duration: { type: 'string', default: '20s' } },
  strict: true,
});
const runs = Number(flags.runs);
if (!Number.isInteger(runs) || runs < 1 || runs > 20) {
  console.error(`--runs must be an integer from 1 to 20, got "${flags.runs}"`);
  process.exit(2);
}
const durationMs = durationFlag('duration', flags.duration);

const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-floor-'));
const loadBefore = loadavg();
const { certs } = await examplePki(dir);
const app = createServer((_req, res) => res.end('ok')).listen(0, '127.0.0.1');
await new Promise((r) => app.once('listening', r));
const appPort = (app.address() as AddressInfo).port;
const proxy = new URL('./floor-proxy.mjs', import.meta.url).pathname;
const results: { flags: string; idleMb: number; idlePssMb: number; afterMb: number; requests: number }[] = [];
try {
  for (let i = 0; i < runs; i++) {
    for (const v8 of ['', SIDECAR_NODE_OPTIONS]) {
      const child = spawn(
        process.execPath,
        [
          ...(v8 ? v8.split(' ') : []),
          proxy,
          ...['orders.pem', 'orders-key.pem', 'root.pem'].map((f) => join(certs, f)),
          String(appPort),
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      const port = await new Promise<number>((resolve) =>
        child.stdout!.once('data', (d: Buffer) => resolve((JSON.parse(String(d)) as { port: number }).port)),
      );
      await new Promise((r) => setTimeout(r, 3000));
      const idleMb = rssMb(child.pid!);
      const idlePssMb = smapsRollup(child.pid!).Pss ?? 0;
      const agent = new Agent({
        keepAlive: true,
        maxSockets: 64,
        cert: readFileSync(join(certs, 'web.pem')),
        key: readFileSync(join(certs, 'web-key.pem')),
        ca: readFileSync(join(certs, 'root.pem')),
        checkServerIdentity: () => undefined,
      });
      let requests = 0;
      const until = Date.now() + durationMs;
      await Promise.all(
        Array.from({ length: 64 }, async () => {
          while (Date.now() < until) {
            await new Promise<void>((resolve, reject) =>
              request({ host: '127.0.0.1', port, path: '/orders/1', agent }, (r) => {
                r.resume();
                r.on('end', () => resolve());
              })
                .on('error', reject)
                .end(),
            );
            requests++;
          }
        }),
      );
      const afterMb = rssMb(child.pid!);
      agent.destroy();
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      results.push({ flags: v8 || '(none)', idleMb, idlePssMb, afterMb, requests });
      console.error(`[floor] ${JSON.stringify(results.at(-1))}`);
    }
  }
} finally {
  app.close();
  rmSync(dir, { recursive: true, force: true });
}
console.log(
  `BENCH_FLOOR ${JSON.stringify({ ...machineFacts(loadBefore, loadavg()), durationS: durationMs / 1000, results })}`,
);
