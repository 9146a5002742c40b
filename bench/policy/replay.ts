// `portcullis policy replay` over a generated log of 1,000,000 events, on the file store and on
// the PostgreSQL store (issue #18: under 30 s each). Beside each figure, the baseline measured in
// the same run: reading the same records through the same source without deciding anything.
//
//   npx node bench/policy/replay.ts            full run (1,000,000 events per store, a few minutes)
//   npx node bench/policy/replay.ts --quick    100,000 events, to check it works
//   npx node bench/policy/replay.ts --events N
//
// The log is generated into a temp directory and a throw-away PostgreSQL schema, both removed at
// the end. Prints one human line per figure and a final machine-readable line:
// `BENCH_POLICY_REPLAY {json}`.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { openStore } from '../../audit/index.ts';
import { loadPolicyFile, openDecisionSource, replayDecisions } from '../../sidecar/index.ts';
import type { ReplayReport } from '../../sidecar/index.ts';
import { machineFacts } from '../machine.ts';
import { ORDERS, PROPOSED, expectedReplay, trafficEvent } from '../traffic.ts';

const run = promisify(execFile);
const args = process.argv.slice(2);
const eventsFlag = args.indexOf('--events');
const EVENTS =
  eventsFlag !== -1 ? Number(args[eventsFlag + 1]) : args.includes('--quick') ? 100_000 : 1_000_000;
if (!Number.isSafeInteger(EVENTS) || EVENTS < 1000) throw new Error('--events must be an integer ≥ 1000');
const PG_URL = process.env.PORTCULLIS_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
const BATCH = 10_000;

async function fill(spec: string): Promise<number> {
  const store = await openStore(spec);
  const started = performance.now();
  for (let at = 0; at < EVENTS; at += BATCH) {
    const n = Math.min(BATCH, EVENTS - at);
    await store.append(Array.from({ length: n }, (_, j) => trafficEvent(at + j, EVENTS)));
  }
  await store.close();
  return (performance.now() - started) / 1000;
}

/** Baseline: the same source, every record read and filtered as replay does, nothing decided. */
async function readOnly(from: string): Promise<number> {
  const started = performance.now();
  const source = await openDecisionSource(from, { service: ORDERS });
  let n = 0;
  for await (const r of source.records)
    if (r.event.type === 'authz.decision' && r.event.target === ORDERS) n++;
  await source.close();
  if (n === 0) throw new Error('baseline read no decisions');
  return (performance.now() - started) / 1000;
}

async function inProcess(
  from: string,
  policyFile: string,
): Promise<{ seconds: number; report: ReplayReport }> {
  const started = performance.now();
  const source = await openDecisionSource(from, { service: ORDERS });
  const report = await replayDecisions(loadPolicyFile(policyFile), source.records);
  await source.close();
  return { seconds: (performance.now() - started) / 1000, report };
}

async function cli(from: string, policyFile: string): Promise<{ seconds: number; report: ReplayReport }> {
  const started = performance.now();
  const { stdout } = await run(
    process.execPath,
    ['cli/portcullis.ts', 'policy', 'replay', '--policy', policyFile, '--from', from, '--json'],
    { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: 600_000 },
  );
  return { seconds: (performance.now() - started) / 1000, report: JSON.parse(stdout) as ReplayReport };
}

const fmt = (s: number) => `${s.toFixed(2)} s`;
const loadBefore = loadavg();
const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-replay-'));
const schema = `bench_replay_${process.pid}`;
const results: Record<string, unknown> = { events: EVENTS };
try {
  const policyFile = join(dir, 'orders-proposed.yaml');
  writeFileSync(policyFile, PROPOSED);
  const want = expectedReplay(EVENTS);
  const stores: [string, string][] = [
    ['file', `file:${join(dir, 'log')}`],
    ['postgres', `${PG_URL}?table=${schema}.log`],
  ];
  for (const [name, spec] of stores) {
    const fillSeconds = await fill(spec);
    console.log(`${name}: generated ${EVENTS.toLocaleString('en-US')} events in ${fmt(fillSeconds)}`);
    const base = await readOnly(spec);
    const mem = await inProcess(spec, policyFile);
    const proc = await cli(spec, policyFile);
    for (const r of [mem.report, proc.report])
      for (const [k, v] of Object.entries(want))
        if (r[k as keyof typeof want] !== v)
          throw new Error(`${name}: ${k} is ${String(r[k as keyof typeof want])}, expected ${v}`);
    console.log(
      `${name}: policy replay (CLI, whole process) ${fmt(proc.seconds)}; in process ${fmt(mem.seconds)}; ` +
        `baseline read without deciding ${fmt(base)} (replay / read ${(mem.seconds / base).toFixed(2)}); ` +
        `${(EVENTS / proc.seconds).toFixed(0)} events/s; ${proc.report.allowedToDenied} allowed→denied, ${proc.report.deniedToAllowed} denied→allowed in ${proc.report.groups.length} groups`,
    );
    results[name] = {
      cliSeconds: Math.round(proc.seconds * 100) / 100,
      inProcessSeconds: Math.round(mem.seconds * 100) / 100,
      readBaselineSeconds: Math.round(base * 100) / 100,
      fillSeconds: Math.round(fillSeconds * 100) / 100,
      groups: proc.report.groups.length,
      target: proc.seconds < 30 ? 'met' : 'missed',
    };
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await client.end();
}
console.log(`BENCH_POLICY_REPLAY ${JSON.stringify({ ...machineFacts(loadBefore, loadavg()), ...results })}`);
