// What the sidecar, start-up and gRPC benches share: the PKI with a real STS, the orders sidecar's
// config file, Node children that announce themselves with a JSON line, nginx (the baseline), free
// ports, a process with its children (for CPU figures), and a token bound to web's certificate.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { MemoryAuditSink, createLogger } from '../../core/index.ts';
import { parseStsConfig, startSts } from '../../sts/index.ts';
import type { RunningSts } from '../../sts/index.ts';
import { cpuSeconds } from '../machine.ts';
import { EXAMPLE_ISSUER, examplePki, exampleStsConfig } from '../pki.ts';
import { ORDERS } from './policy.ts';

/** The bench's PKI in `dir` (as `npm run certs` makes it) and a real STS on it, audit in memory. */
export async function startBenchSts(dir: string): Promise<{
  readonly ids: string;
  readonly certs: string;
  readonly sts: RunningSts;
  /** web's certificate and key (PEM), for tokens bound to it and for mTLS to orders. */
  readonly web: { readonly cert: string; readonly key: string };
}> {
  const { ids, certs } = await examplePki(dir);
  const sts = await startSts(parseStsConfig(exampleStsConfig(dir, { ids, certs })), {
    masterKey: randomBytes(32).toString('base64'),
    audit: new MemoryAuditSink(),
    logger: createLogger({ name: 'bench-sts', level: 'silent' }),
  });
  const web = {
    cert: readFileSync(join(certs, 'web.pem'), 'utf8'),
    key: readFileSync(join(certs, 'web-key.pem'), 'utf8'),
  };
  return { ids, certs, sts, web };
}

/**
 * Writes `DIR/sidecar-orders.yaml`: orders' certificate, the STS, and `inbound` (the flow-map
 * entries after `listen`: `app`, `policy`, …); `extra` is appended as it is. Returns the path.
 */
export function writeOrdersSidecarConfig(
  dir: string,
  certs: string,
  stsUrl: string,
  inbound: string,
  extra = '',
): string {
  const file = join(dir, 'sidecar-orders.yaml');
  writeFileSync(
    file,
    `service: ${ORDERS}
trustDomain: example.org
tls: { cert: ${join(certs, 'orders.pem')}, key: ${join(certs, 'orders-key.pem')}, trustBundle: ${join(certs, 'root.pem')} }
sts: { url: "${stsUrl}", spiffeId: spiffe://example.org/ns/portcullis/sa/sts, issuer: "${EXAMPLE_ISSUER}" }
inbound: { listen: { host: 127.0.0.1, port: 0 }, ${inbound} }
${extra}`,
  );
  return file;
}

/**
 * The list a bench pushes its children to. A crash (an exception in an event handler), Ctrl-C or
 * a timeout's SIGTERM skips the bench's own `finally`: on exit the children still running are
 * stopped and `dir` is removed, so nothing outlives the bench to idle on the machine and skew the
 * next run's figures.
 */
export function childrenStoppedOnExit(dir: string): ChildProcess[] {
  const children: ChildProcess[] = [];
  process.on('exit', () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });
  process.once('SIGINT', () => process.exit(130));
  process.once('SIGTERM', () => process.exit(143));
  return children;
}

/**
 * Starts a Node child (`args` after `node`; or `command` with `args`, such as the gRPC bench's Go
 * app) and resolves with its first JSON stdout line, the milliseconds to it and the child's CPU
 * until then; rejects if it exits first.
 */
export function startJsonChild(
  args: readonly string[],
  command: string = process.execPath,
): Promise<{ child: ChildProcess; info: Record<string, number>; readyMs: number; readyCpuMs: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    child.stdout!.on('data', function onData(c: Buffer) {
      buf += c;
      const nl = buf.indexOf('\n');
      if (nl === -1) return;
      child.stdout!.off('data', onData);
      let info: Record<string, number>;
      try {
        info = JSON.parse(buf.slice(0, nl)) as Record<string, number>;
      } catch {
        // A flag that prints to stdout (e.g. --trace-gc) came first: the child is stopped here,
        // since the caller never gets it to stop.
        child.kill('SIGTERM');
        reject(
          new Error(`${what}: the first line on stdout is not JSON: ${buf.slice(0, Math.min(nl, 120))}`),
        );
        return;
      }
      resolve({
        child,
        info,
        readyMs: Math.round(performance.now() - t0),
        readyCpuMs: Math.round(cpuSeconds([child.pid!]) * 1000),
      });
    });
    const what = args.find((a) => !a.startsWith('-')) ?? 'node';
    child.once('exit', (code) => reject(new Error(`${what} exited with ${code}`)));
  });
}

/**
 * Starts a bare Node mTLS proxy baseline (`script`: bench/sidecar/bare-proxy.ts for HTTP/1.1,
 * bench/grpc/bare-proxy.ts for HTTP/2) with orders' certificate in front of the app on `appPort`.
 * BENCH_BARE_NODE_ARGS adds node flags (e.g. `--cpu-prof`, to compare profiles with the sidecar's).
 */
export function startBareProxy(
  script: string,
  certs: string,
  appPort: number,
): ReturnType<typeof startJsonChild> {
  return startJsonChild([
    ...(process.env.BENCH_BARE_NODE_ARGS ?? '').split(' ').filter(Boolean),
    script,
    join(certs, 'orders.pem'),
    join(certs, 'orders-key.pem'),
    join(certs, 'root.pem'),
    String(appPort),
  ]);
}

/** The nginx binary; installs Debian's nginx (and stops its service) when there is none. */
export function ensureNginx(): string {
  const found = spawnSync('sh', ['-c', 'command -v nginx || ls /usr/sbin/nginx'], { encoding: 'utf8' })
    .stdout.trim()
    .split('\n')[0];
  if (found) return found;
  console.error('nginx missing: installing Debian nginx (apt-get install -y nginx)');
  execFileSync('apt-get', ['install', '-y', 'nginx'], {
    stdio: 'inherit',
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  execFileSync('sh', ['-c', 'service nginx stop || true'], { stdio: 'ignore' });
  return '/usr/sbin/nginx';
}

/** A loopback port that was free a moment ago (for nginx, which cannot report the one it got). */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** A process and its direct children (nginx: master and workers). */
export function withChildren(pid: number): number[] {
  const kids = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
    .stdout.split('\n')
    .filter(Boolean)
    .map(Number);
  return [pid, ...kids];
}

/** A token of web's for orders, from the STS over mTLS with web's certificate (so it is bound to it). */
export function token(stsUrl: string, cert: string, key: string): Promise<string> {
  const body = `grant_type=client_credentials&audience=${encodeURIComponent(ORDERS)}`;
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      `${stsUrl}/oauth2/token`,
      {
        method: 'POST',
        cert,
        key,
        rejectUnauthorized: false,
        agent: false,
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': body.length },
      },
      (res) => {
        let t = '';
        res.on('data', (c: Buffer) => (t += c));
        res.on('end', () =>
          res.statusCode === 200
            ? resolve(JSON.parse(t).access_token)
            : reject(new Error(`STS answered ${res.statusCode}: ${t}`)),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}
