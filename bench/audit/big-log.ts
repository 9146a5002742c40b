// A log of maximum-size events (default 1 GiB) written through a sealed file store, then a
// collector process restarted on it and `portcullis audit verify` run on it, each reporting its
// peak RSS (getrusage maxRSS) and time. Target: the collector restarts and the log verifies with
// the collector's RSS under 300 MB.
//
//   npx node bench/audit/big-log.ts            1 GiB
//   npx node bench/audit/big-log.ts --mib 256  a smaller log
//
// Prints one human line per figure and `BENCH audit-big-log {json}`.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { AuditEvent } from '../../core/index.ts';
import { createSealer, loadCheckpointKey, openFileStore } from '../../audit/index.ts';
import { examplePki } from '../pki.ts';

const at = process.argv.indexOf('--mib');
const MIB = at > 0 ? Number(process.argv[at + 1]) : 1024;
const ORIGIN = 'bench.example/audit';

/** An event at the schema's limits, in characters canonical JSON escapes six bytes each (~240 KB stored). */
function maxSizeEvent(i: number): AuditEvent {
  const fill = (n: number) => `${i}`.padEnd(n, '\u0001');
  const attributes: Record<string, string> = {};
  for (let k = 0; k < 32; k++) attributes[`a${k}`.padEnd(64, 'x')] = fill(1024);
  return {
    type: 'authz.decision',
    time: '2026-01-02T03:04:05.000Z',
    subject: fill(2048),
    target: fill(2048),
    action: fill(4096),
    reason: fill(256),
    rule: fill(256),
    policyHash: fill(128),
    jti: fill(256),
    attributes,
  };
}

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-biglog-'));
try {
  mkdirSync(join(dir, 'pki'));
  const pki = await examplePki(join(dir, 'pki'));
  const dataDir = join(dir, 'data');
  const logDir = join(dir, 'log');
  const signer = loadCheckpointKey(dataDir, ORIGIN);
  const store = await openFileStore({ dir: logDir, sealer: createSealer(signer, ORIGIN) });
  let t = performance.now();
  let bytes = 0;
  let i = 0;
  const segmentBytes = () =>
    readdirSync(logDir)
      .filter((f) => f.endsWith('.jsonl'))
      .reduce((sum, f) => sum + statSync(join(logDir, f)).size, 0);
  while (bytes < MIB * 1_048_576) {
    await store.append(Array.from({ length: 16 }, (_, k) => maxSizeEvent(i + k)));
    i += 16;
    if (i % 256 === 0) bytes = segmentBytes();
  }
  await store.close();
  bytes = segmentBytes();
  const writeSeconds = (performance.now() - t) / 1000;
  console.log(
    `wrote     ${(bytes / 1_048_576).toFixed(0)} MiB, ${i} maximum-size events in ${readdirSync(logDir).filter((f) => f.endsWith('.jsonl')).length} segments, ${writeSeconds.toFixed(1)} s`,
  );

  const config = {
    listen: { host: '127.0.0.1', port: 0 },
    tls: {
      cert: join(pki.certs, 'audit.pem'),
      key: join(pki.certs, 'audit-key.pem'),
      trustBundle: join(pki.certs, 'root.pem'),
    },
    identities: pki.ids,
    origin: ORIGIN,
    dataDir,
    store: `file:${logDir}`,
  };
  // The collector: start (recovery + the Merkle tree of every record), sign, stop; its peak RSS.
  t = performance.now();
  const child = await run(
    process.execPath,
    [new URL('./big-log-child.ts', import.meta.url).pathname, JSON.stringify(config)],
    { maxBuffer: 1_048_576 },
  );
  const collector = JSON.parse(child.stdout) as { size: number; maxRssKiB: number; startSeconds: number };
  console.log(
    `collector restart on the log: ${collector.size} records adopted in ${collector.startSeconds.toFixed(1)} s, peak RSS ${(collector.maxRssKiB / 1024).toFixed(0)} MiB (target < 300 MB)`,
  );
  // verify as a user runs it, with the collector's key: chain, hashes, seals.
  t = performance.now();
  const verify = await run(
    process.execPath,
    [
      '--import',
      'data:text/javascript,process.on("exit",()=>process.stderr.write("maxrss "+process.resourceUsage().maxRSS+"\\n"))',
      new URL('../../cli/portcullis.ts', import.meta.url).pathname,
      'audit',
      'verify',
      '--store',
      `file:${logDir}`,
      '--public-key',
      join(dataDir, 'checkpoint.vkey'),
      '--json',
    ],
    { maxBuffer: 1_048_576 },
  );
  const verifySeconds = (performance.now() - t) / 1000;
  const verdict = JSON.parse(verify.stdout) as { ok: boolean; size: number; covered: number };
  const verifyRss = Number(/maxrss (\d+)/.exec(verify.stderr)![1]);
  if (!verdict.ok || verdict.covered !== verdict.size) throw new Error(`verify failed: ${verify.stdout}`);
  console.log(
    `verify    --public-key: ${verdict.size} records, all sealed, ${verifySeconds.toFixed(1)} s (${(bytes / 1_048_576 / verifySeconds).toFixed(0)} MiB/s), peak RSS ${(verifyRss / 1024).toFixed(0)} MiB`,
  );
  console.log(
    `BENCH audit-big-log ${JSON.stringify({
      mib: Math.round(bytes / 1_048_576),
      events: i,
      loadAverage1m: Number(loadavg()[0]!.toFixed(2)),
      writeSeconds: Number(writeSeconds.toFixed(1)),
      collectorStartSeconds: Number(collector.startSeconds.toFixed(1)),
      collectorMaxRssMiB: Math.round(collector.maxRssKiB / 1024),
      verifySeconds: Number(verifySeconds.toFixed(1)),
      verifyMaxRssMiB: Math.round(verifyRss / 1024),
    })}`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
