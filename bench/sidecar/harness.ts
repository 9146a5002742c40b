// What the sidecar bench and the gRPC bench share: nginx (the baseline), free ports, a process
// with its children (for CPU figures), and a token bound to web's certificate.
import { execFileSync, spawnSync } from 'node:child_process';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { ORDERS } from './policy.ts';

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
