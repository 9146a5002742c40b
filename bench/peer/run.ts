// What the X.509-SVID peer policy costs a listener per connection, over real TLS 1.3 sockets on
// loopback: a leaf seen for the first time (parse, every check, one signature), a known leaf on a
// new connection (fingerprint cache), and the same connection again (per-request re-check of
// expiry and revocation). Baseline in the same run: `getPeerCertificate(true)` alone, the
// detailed peer object the verifier read on every new connection before decision 0006.
// Env: BENCH_CONNECTIONS (default 300 per round), BENCH_ROUNDS (default 5).
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import { chainIntermediatesPem, createPeerVerifier } from '../../ca/index.ts';
import { machineFacts } from '../machine.ts';
import { examplePki } from '../pki.ts';

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 300);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const loadBefore = loadavg();
const dir = mkdtempSync(join(tmpdir(), 'bench-peer-'));
const { certs } = await examplePki(dir);
const read = (f: string) => readFileSync(join(certs, f), 'utf8');
const root = read('root.pem');
/** Every workload of identities/example.yaml: one new leaf each per round. */
const names = ['sts', 'audit', 'web', 'orders', 'admin-console', 'security-console'];
const server = createServer({
  cert: read('sts.pem'),
  key: read('sts-key.pem'),
  ca: root,
  requestCert: true,
  rejectUnauthorized: false,
  minVersion: 'TLSv1.3',
});
server.listen(0, '127.0.0.1');
await once(server, 'listening');
const port = (server.address() as { port: number }).port;

/** `n` accepted server-side sockets, the client presenting `name`'s certificate. */
async function accept(n: number, name: string): Promise<{ sockets: TLSSocket[]; close(): void }> {
  const sockets: TLSSocket[] = [];
  const clients: TLSSocket[] = [];
  for (let i = 0; i < n; i++) {
    const seen = once(server, 'secureConnection') as Promise<[TLSSocket]>;
    clients.push(
      connect({
        port,
        host: '127.0.0.1',
        cert: read(`${name}.pem`),
        key: read(`${name}-key.pem`),
        ca: root,
        rejectUnauthorized: false,
      }),
    );
    sockets.push((await seen)[0]);
  }
  return { sockets, close: () => [...sockets, ...clients].forEach((s) => s.destroy()) };
}

const cpuPer = (items: readonly TLSSocket[], f: (s: TLSSocket) => unknown): number => {
  const t = process.cpuUsage();
  for (const s of items) f(s);
  const d = process.cpuUsage(t);
  return (d.user + d.system) / items.length;
};

const rounds: { newLeafUs: number; knownLeafUs: number; sameConnUs: number; baselineUs: number }[] = [];
for (let r = 0; r < ROUNDS; r++) {
  // A fresh verifier per round, so that the first connection of each workload is a new leaf.
  const verifier = createPeerVerifier({
    trustAnchorsPem: root,
    intermediatesPem: chainIntermediatesPem(read('sts.pem')),
    trustDomain: 'example.org',
    purpose: 'clientAuth',
  });
  const firsts = await Promise.all(names.map((n) => accept(1, n)));
  const newLeafUs = cpuPer(
    firsts.map((f) => f.sockets[0]!),
    (s) => verifier.verifySocket(s),
  );
  const many = await accept(CONNECTIONS, 'web');
  const knownLeafUs = cpuPer(many.sockets, (s) => verifier.verifySocket(s));
  const sameConnUs = cpuPer(many.sockets, (s) => verifier.verifySocket(s));
  const baseline = await accept(CONNECTIONS, 'web');
  const baselineUs = cpuPer(baseline.sockets, (s) => s.getPeerCertificate(true));
  rounds.push({ newLeafUs, knownLeafUs, sameConnUs, baselineUs });
  for (const c of [...firsts, many, baseline]) c.close();
}
server.close();
rmSync(dir, { recursive: true, force: true });

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pick = (k: keyof (typeof rounds)[number]) => Math.round(median(rounds.map((x) => x[k])) * 100) / 100;
const result = {
  ...machineFacts(loadBefore, loadavg()),
  connections: CONNECTIONS,
  rounds: ROUNDS,
  newLeafUsPerConn: pick('newLeafUs'),
  knownLeafUsPerConn: pick('knownLeafUs'),
  sameConnUsPerCall: pick('sameConnUs'),
  baselineGetPeerCertificateUs: pick('baselineUs'),
};
console.log(
  `peer policy, CPU per verifySocket (median of ${ROUNDS} rounds): new leaf ${result.newLeafUsPerConn} µs; ` +
    `known leaf, new connection ${result.knownLeafUsPerConn} µs; same connection ${result.sameConnUsPerCall} µs; ` +
    `baseline getPeerCertificate(true) ${result.baselineGetPeerCertificateUs} µs`,
);
console.log(`BENCH_PEER_RESULT ${JSON.stringify(result)}`);
