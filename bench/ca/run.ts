// Online issuance benchmark: CSR in, certificate out, audited, through the STS's EST renewal route
// (`simplereenroll` over keep-alive mTLS), beside a bare signing loop with the same key type in the
// same run. Usage: node bench/ca/run.ts [--seconds 10] [--connections 32] [--record]
import { spawn } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'undici';
import { generateKeyPair, issueFromCsr, loadCaDirectory, x509 } from '../../ca/index.ts';
import { loadRegistry } from '../../core/index.ts';
import { cpuSeconds, machineFacts } from '../machine.ts';
import { examplePki, exampleStsConfig } from '../pki.ts';
import { benchFlags } from '../flags.ts';

const { values } = benchFlags({
  options: {
    seconds: { type: 'string', default: '10' },
    connections: { type: 'string', default: '32' },
    record: { type: 'boolean', default: false },
  },
});
const seconds = Number(values.seconds);
const connections = Number(values.connections);
if (!(seconds > 0 && seconds <= 120) || !(connections > 0 && connections <= 256))
  throw new Error('--seconds must be in (0, 120] and --connections in (0, 256]');

const dir = mkdtempSync(join(tmpdir(), 'bench-ca-'));
const loadBefore = loadavg();
try {
  const { ids, certs } = await examplePki(dir);
  const ca = await loadCaDirectory(join(dir, 'ca'));
  const web = loadRegistry(ids).byName('web')!;
  // A pool of CSRs (each a fresh P-256 key): the server verifies and signs every one it gets.
  const csrs: string[] = [];
  for (let i = 0; i < 64; i++) {
    const keys = await generateKeyPair('ecdsa-p256');
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: 'CN=bench',
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
    });
    csrs.push(Buffer.from(csr.rawData).toString('base64'));
  }

  // 1. Bare signing loop: ECDSA P-256 signatures of a certificate-sized message with the intermediate's key type.
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const tbs = Buffer.alloc(420, 1);
  const bare = (ms: number) => {
    const t = performance.now();
    let n = 0;
    while (performance.now() - t < ms) {
      for (let i = 0; i < 100; i++) sign('sha256', tbs, privateKey);
      n += 100;
    }
    return n / ((performance.now() - t) / 1000);
  };

  // 2. issueFromCsr alone, in this process (no HTTP, no audit).
  const inProcess = async (ms: number) => {
    const t = performance.now();
    let n = 0;
    while (performance.now() - t < ms) {
      await issueFromCsr({
        csrDer: Buffer.from(csrs[n % csrs.length]!, 'base64'),
        workload: web,
        issuer: ca.intermediate,
        trustDomain: ca.trustDomain,
        validityMs: 3_600_000,
        deps: { now: () => new Date() },
      });
      n++;
    }
    return n / ((performance.now() - t) / 1000);
  };

  // 3. Through the STS: simplereenroll over mTLS, audited, in a child process.
  const config = {
    ...exampleStsConfig(dir, { ids, certs }),
    state: { type: 'memory' },
    ca: { dir: join(dir, 'ca'), perSecond: 1_000_000, burst: 1_000_000 },
    rateLimit: { perSecond: 1_000_000, burst: 1_000_000 },
  };
  const child = spawn(
    process.execPath,
    [new URL('./server.ts', import.meta.url).pathname, JSON.stringify(config)],
    {
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    },
  );
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /READY (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  const pool = new Pool(`https://127.0.0.1:${port}`, {
    connections,
    pipelining: 1,
    connect: {
      cert: readFileSync(join(certs, 'web.pem')),
      key: createPrivateKey(readFileSync(join(certs, 'web-key.pem'))).export({
        type: 'pkcs8',
        format: 'pem',
      }),
      ca: readFileSync(join(certs, 'root.pem')),
      servername: 'localhost',
    },
  });
  const over = async (ms: number) => {
    let ok = 0;
    let failed = 0;
    const until = performance.now() + ms;
    const cpu0 = cpuSeconds([child.pid!]);
    const t = performance.now();
    await Promise.all(
      Array.from({ length: connections }, async (_, w) => {
        let i = w;
        while (performance.now() < until) {
          const res = await pool.request({
            path: '/.well-known/est/simplereenroll',
            method: 'POST',
            headers: { 'content-type': 'application/pkcs10' },
            body: csrs[i++ % csrs.length]!,
          });
          await res.body.text();
          if (res.statusCode === 200) ok++;
          else failed++;
        }
      }),
    );
    const elapsed = (performance.now() - t) / 1000;
    return { perSecond: ok / elapsed, failed, serverCpu: (cpuSeconds([child.pid!]) - cpu0) / elapsed };
  };
  await over(1000); // warm-up: connections, templates, JIT
  const bareRate = bare(seconds * 300);
  const inProcessRate = await inProcess(seconds * 300);
  const online = await over(seconds * 1000);
  const issued = await new Promise<{ issued: number }>((resolve) => {
    child.once('message', (m) => resolve(m as { issued: number }));
    child.send('count');
  });
  await pool.close();
  child.kill('SIGTERM');
  const result = {
    bench: 'ca-online-issuance',
    ...machineFacts(loadBefore, loadavg()),
    seconds,
    connections,
    bareSignaturesPerSecond: Math.round(bareRate),
    issueFromCsrPerSecond: Math.round(inProcessRate),
    estCertificatesPerSecond: Math.round(online.perSecond),
    estFailed: online.failed,
    auditedCertIssuedEvents: issued.issued,
    stsCpuCores: Math.round(online.serverCpu * 100) / 100,
    ratioToBareSigning: Math.round((online.perSecond / bareRate) * 1000) / 1000,
    target: 2200,
  };
  console.log(JSON.stringify(result, null, 2));
  if (values.record)
    appendFileSync(new URL('../RESULTS-ca.jsonl', import.meta.url), JSON.stringify(result) + '\n');
} finally {
  rmSync(dir, { recursive: true, force: true });
}
