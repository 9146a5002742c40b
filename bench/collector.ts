// A real audit collector for the STS and sidecar benches (issue 15: the cost of failMode closed
// against open): `portcullis audit serve` in its own process, on a file store under `dir`, with
// the example PKI. Resolves once it listens.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const COLLECTOR_ID = 'spiffe://example.org/ns/portcullis/sa/audit';

export interface BenchCollector {
  readonly url: string;
  readonly child: ChildProcess;
  /** SIGTERM; resolves once the collector has exited. */
  stop(): Promise<void>;
}

export async function startBenchCollector(dir: string, ids: string, certs: string): Promise<BenchCollector> {
  mkdirSync(dir, { recursive: true });
  const config = join(dir, 'audit.json');
  writeFileSync(
    config,
    JSON.stringify({
      listen: { host: '127.0.0.1', port: 0 },
      origin: 'example.org/bench/audit',
      identities: ids,
      tls: {
        cert: join(certs, 'audit.pem'),
        key: join(certs, 'audit-key.pem'),
        trustBundle: join(certs, 'root.pem'),
      },
      dataDir: join(dir, 'audit-data'),
      store: `file:${join(dir, 'audit-data', 'log')}`,
      checkpoint: { everyRecords: 100000, interval: '10s' },
    }),
  );
  const root = new URL('../', import.meta.url).pathname;
  const child = spawn(
    process.execPath,
    [join(root, 'cli/portcullis.ts'), 'audit', 'serve', '--config', config],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    const onData = (c: Buffer) => {
      out += c.toString();
      const m = /"url":"(https:\/\/127\.0\.0\.1:\d+)"/.exec(out);
      if (m) {
        child.stdout!.off('data', onData);
        child.stdout!.resume();
        resolve(m[1]!);
      }
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`audit collector exited ${code}: ${out}`)));
  });
  return {
    url,
    child,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
