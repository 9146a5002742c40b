import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunningCollector } from '../../audit/index.ts';
import { openFileStore, openPostgresStore } from '../../audit/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { call, startTestCollector, workloadAgent } from './collector-harness.ts';
import { PG_URL, decision, pgSchema, tempDir } from './helpers.ts';

const CLI = new URL('../../cli/portcullis.ts', import.meta.url).pathname;

function run(
  args: string[],
  timeoutMs = 20_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

let pki: TestPki;
let tmp: ReturnType<typeof tempDir>;
let collector: RunningCollector;
let remote: (name: string) => string[];

before(async () => {
  pki = await makeTestPki();
  tmp = tempDir();
  collector = await startTestCollector(pki, join(tmp.dir, 'c'), {
    checkpoint: { everyRecords: 1, interval: '1h' },
  });
  remote = (name) => [
    '--url',
    collector.url,
    '--cert',
    pki.leaf(name).certFile,
    '--key',
    pki.leaf(name).keyFile,
    '--trust',
    pki.rootFile,
    '--collector-id',
    'spiffe://example.org/ns/portcullis/sa/audit',
  ];
  const agent = workloadAgent(pki, pki.leaf('web'));
  const res = await call(agent, `${collector.url}/v1/events`, {
    method: 'POST',
    body: { events: Array.from({ length: 6 }, (_, i) => decision(i)) },
  });
  assert.equal(res.status, 200);
  await agent.close();
  await collector.log.checkpoint();
});

after(async () => {
  await collector.close();
  tmp.cleanup();
  pki.cleanup();
});

async function fileLog(name: string, n: number): Promise<string> {
  const dir = join(tmp.dir, name);
  const store = await openFileStore({ dir });
  await store.append(Array.from({ length: n }, (_, i) => decision(i)));
  await store.close();
  return dir;
}

test('cli: audit verify exits 0 on an intact file log and 1 naming the first bad seq of a tampered one', async () => {
  const dir = await fileLog('v1', 10);
  const ok = await run(['audit', 'verify', '--store', `file:${dir}`]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /^intact: 10 records/);
  const seg = join(dir, '0000000000000000.jsonl');
  const lines = readFileSync(seg, 'utf8').split('\n');
  // A cut tail leaves a valid chain: without a checkpoint the answer must not pretend otherwise.
  writeFileSync(seg, lines.slice(0, 6).join('\n') + '\n');
  const cut = await run(['audit', 'verify', '--store', `file:${dir}`]);
  assert.equal(cut.code, 0, cut.stderr);
  assert.match(
    cut.stdout,
    /^intact: 6 records, .*; no --checkpoint: records cut from the end would not show/,
  );
  const cutJson = await run(['audit', 'verify', '--store', `file:${dir}`, '--json']);
  assert.equal(JSON.parse(cutJson.stdout).checkpoint, false);
  writeFileSync(seg, lines.join('\n'));
  lines[4] = lines[4]!.replace('GET /orders/4', 'GET /orders/X');
  writeFileSync(seg, lines.join('\n'));
  const bad = await run(['audit', 'verify', '--store', `file:${dir}`]);
  assert.equal(bad.code, 1);
  assert.equal(
    bad.stderr.trim(),
    'tampered: first bad record seq 4: hash does not match the record content [ERR_AUDIT_CHAIN_BROKEN]',
  );
  const json = await run(['audit', 'verify', '--store', `file:${dir}`, '--json']);
  assert.deepEqual(JSON.parse(json.stdout), {
    ok: false,
    code: 'ERR_AUDIT_CHAIN_BROKEN',
    seq: 4,
    reason: 'hash does not match the record content',
  });
});

test('cli: audit verify --public-key exits 3 naming records no seal covers, and 4 for a torn tail', async () => {
  // A copy of the collector's log (seals included), then a record appended by someone without the key.
  const logDir = join(tmp.dir, 'c', 'log');
  const dir = join(tmp.dir, 'forged');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(dir);
  const raw = readFileSync(join(logDir, '0000000000000000.jsonl'), 'utf8');
  writeFileSync(join(dir, '0000000000000000.jsonl'), raw);
  const key = collector.verifierKey;
  const verify = (...extra: string[]) =>
    run(['audit', 'verify', '--store', `file:${dir}`, '--public-key', key, ...extra]);
  const ok = await verify();
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /^intact: \d+ records, .*all covered by seals/);

  const records = raw.split('\n').filter((l) => l.startsWith('{"event":'));
  const { buildRecord } = await import('../../audit/index.ts');
  const last = JSON.parse(records.at(-1)!) as { seq: number; hash: string };
  const forged = buildRecord(last.seq + 1, '2026-05-05T00:00:00.000Z', decision(99), last.hash).line;
  writeFileSync(join(dir, '0000000000000000.jsonl'), `${raw}${forged}\n`);
  const named = await verify();
  assert.equal(named.code, 3, named.stderr);
  assert.match(
    named.stderr,
    new RegExp(`^not covered: records ${last.seq + 1}\\.\\.${last.seq + 1} are covered by no seal`),
  );
  const json = JSON.parse((await verify('--json')).stdout);
  assert.deepEqual(json.uncovered, { from: last.seq + 1, to: last.seq + 1 });
  assert.equal(json.ok, false);
  // Without the key the chain alone holds: exit 0, and it says nothing was checked against seals.
  assert.equal((await run(['audit', 'verify', '--store', `file:${dir}`])).code, 0);

  writeFileSync(join(dir, '0000000000000000.jsonl'), `${raw}{"event":{"act`);
  const torn = await verify();
  assert.equal(torn.code, 4, torn.stderr);
  assert.match(
    torn.stderr,
    /^torn tail: .*0000000000000000\.jsonl ends in 14 bytes that are no whole record/,
  );
});

test('cli: audit verify against a postgres log names the first bad seq', async () => {
  const { schema, drop } = await pgSchema('cli');
  try {
    const table = `${schema}.log`;
    const store = await openPostgresStore({ connectionString: PG_URL, table });
    await store.append(Array.from({ length: 8 }, (_, i) => decision(i)));
    await store.close();
    const spec = `${PG_URL}?table=${table}`;
    assert.equal((await run(['audit', 'verify', '--store', spec])).code, 0);
    const { sql } = await import('./helpers.ts');
    await sql(`DELETE FROM ${table} WHERE seq = 3`);
    const bad = await run(['audit', 'verify', '--store', spec]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /first bad record seq 3: seq 4 found where 3 was expected/);
    const missing = await run(['audit', 'verify', '--store', `${PG_URL}?table=${schema}.nope`]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /table .*nope does not exist \[ERR_AUDIT_STORE_UNAVAILABLE\]/);
  } finally {
    await drop();
  }
});

test('cli: audit checkpoint saves a verified checkpoint; verify reports a truncated log inconsistent with it', async () => {
  const out = join(tmp.dir, 'cp.note');
  const key = collector.verifierKey;
  const saved = await run(['audit', 'checkpoint', '--out', out, '--public-key', key, ...remote('web')]);
  assert.equal(saved.code, 0, saved.stderr);
  assert.match(saved.stdout, /saved checkpoint of example.org\/audit at size \d+/);
  // A second fetch must extend the first (consistency proof checked).
  const again = await run(['audit', 'checkpoint', '--out', out, '--public-key', key, ...remote('web')]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /extends the saved checkpoint/);

  const logDir = join(tmp.dir, 'c', 'log');
  const copy = join(tmp.dir, 'copy');
  // The segment as stored, its seals included.
  const raw = readFileSync(join(logDir, '0000000000000000.jsonl'), 'utf8');
  const lines = raw.split('\n').filter((l) => l.startsWith('{"event":'));
  const { mkdirSync } = await import('node:fs');
  mkdirSync(copy);
  writeFileSync(join(copy, '0000000000000000.jsonl'), raw);
  const intact = await run([
    'audit',
    'verify',
    '--store',
    `file:${copy}`,
    '--checkpoint',
    out,
    '--public-key',
    key,
  ]);
  assert.equal(intact.code, 0, intact.stderr);
  assert.match(intact.stdout, /; agrees with the checkpoint at size \d+$/m);
  writeFileSync(
    join(copy, '0000000000000000.jsonl'),
    lines
      .slice(0, 3)
      .map((l) => `${l}\n`)
      .join(''),
  );
  const cut = await run([
    'audit',
    'verify',
    '--store',
    `file:${copy}`,
    '--checkpoint',
    out,
    '--public-key',
    key,
  ]);
  assert.equal(cut.code, 1);
  assert.match(
    cut.stderr,
    /^inconsistent with the checkpoint: log has 3 records .* \[ERR_AUDIT_CHECKPOINT_INCONSISTENT\]/,
  );
});

test('cli: audit prove verifies a record offline against a saved checkpoint and refuses a modified bundle', async () => {
  const out = join(tmp.dir, 'cp2.note');
  const key = collector.verifierKey;
  assert.equal(
    (await run(['audit', 'checkpoint', '--out', out, '--public-key', key, ...remote('web')])).code,
    0,
  );
  const bundle = join(tmp.dir, 'proof.json');
  const proved = await run([
    'audit',
    'prove',
    '--seq',
    '2',
    '--checkpoint',
    out,
    '--public-key',
    key,
    '--save',
    bundle,
    ...remote('security-console'),
  ]);
  assert.equal(proved.code, 0, proved.stderr);
  assert.match(proved.stdout, /^included: record 2 \(authz.decision/);
  const beyond = await run([
    'audit',
    'prove',
    '--seq',
    '100000',
    '--checkpoint',
    out,
    '--public-key',
    key,
    ...remote('security-console'),
  ]);
  assert.equal(beyond.code, 1);
  assert.match(beyond.stderr, /record 100000 is not covered by the checkpoint .* \[ERR_AUDIT_PROOF_RANGE\]/);
  // Offline: no collector flags at all.
  const offline = await run(['audit', 'prove', '--bundle', bundle, '--checkpoint', out, '--public-key', key]);
  assert.equal(offline.code, 0, offline.stderr);
  const modified = JSON.parse(readFileSync(bundle, 'utf8'));
  modified.record.event.decision = modified.record.event.decision === 'allow' ? 'deny' : 'allow';
  writeFileSync(bundle, JSON.stringify(modified));
  const refused = await run(['audit', 'prove', '--bundle', bundle, '--checkpoint', out, '--public-key', key]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /ERR_AUDIT_PROOF_INVALID/);
  // A file that is JSON but no bundle at all: named as such, not a TypeError.
  for (const junk of ['null', '[]', '42']) {
    writeFileSync(bundle, junk);
    const notBundle = await run([
      'audit',
      'prove',
      '--bundle',
      bundle,
      '--checkpoint',
      out,
      '--public-key',
      key,
    ]);
    assert.equal(notBundle.code, 1);
    assert.match(notBundle.stderr, /a bundle must be an object .*\[ERR_AUDIT_PROOF_INVALID\]/);
  }
});

test('cli: audit query prints a table for an audit-reader, JSON lines with --json, and fails for a workload without the role', async () => {
  const table = await run([
    'audit',
    'query',
    '--type',
    'authz.decision',
    '--decision',
    'deny',
    ...remote('security-console'),
  ]);
  assert.equal(table.code, 0, table.stderr);
  const rows = table.stdout.trim().split('\n');
  assert.match(rows[0]!, /^SEQ\s+TIME\s+TYPE\s+SOURCE/);
  assert.equal(rows.length, 1 + 2, 'decisions 0 and 3 are denies');
  const json = await run([
    'audit',
    'query',
    '--limit',
    '1',
    '--oldest-first',
    '--json',
    ...remote('security-console'),
  ]);
  assert.equal(JSON.parse(json.stdout.trim()).seq, 0);
  const refused = await run(['audit', 'query', ...remote('web')]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /403: this route needs role audit-reader \[ERR_AUDIT_FORBIDDEN\]/);
  const local = await run([
    'audit',
    'query',
    '--store',
    `file:${join(tmp.dir, 'c', 'log')}`,
    '--subject',
    'spiffe://example.org/ns/shop/sa/web',
    '--json',
  ]);
  assert.equal(local.code, 0, local.stderr);
  assert.ok(local.stdout.trim().split('\n').length >= 6);
});

test('cli: audit query lists newest first, names the next page in a "more:" line, and filters by rule, reason and --since 24h', async () => {
  const dir = join(tmp.dir, 'paged');
  const store = await openFileStore({ dir });
  await store.append(
    Array.from({ length: 7 }, (_, i) => decision(i, { rule: i % 2 ? 'odd' : 'even', reason: `R${i % 3}` })),
  );
  await store.close();
  const args = [
    'audit',
    'query',
    '--store',
    `file:${dir}`,
    '--rule',
    'odd',
    '--since',
    '24h',
    '--limit',
    '2',
    '--json',
  ];
  const seqs = (out: string) =>
    out
      .trim()
      .split('\n')
      .filter((l) => l)
      .map((l) => JSON.parse(l).seq as number);
  const first = await run(args);
  assert.equal(first.code, 0, first.stderr);
  assert.deepEqual(seqs(first.stdout), [5, 3]);
  const more = /^more: portcullis audit query (.*) --cursor (\S+)$/m.exec(first.stderr);
  assert.ok(more, first.stderr);
  // The hint is the next command as it stands (the relative --since written as its instant).
  assert.match(more[1]!, /--since \d{4}-\d{2}-\d{2}T[\d:.]+Z/);
  const second = await run(['audit', 'query', ...more[1]!.split(' '), '--cursor', more[2]!]);
  assert.equal(second.code, 0, second.stderr);
  assert.deepEqual(seqs(second.stdout), [1]);
  assert.doesNotMatch(second.stderr, /more:/);
  const oldest = await run([
    'audit',
    'query',
    '--store',
    `file:${dir}`,
    '--reason',
    'R0',
    '--oldest-first',
    '--json',
  ]);
  assert.deepEqual(seqs(oldest.stdout), [0, 3, 6]);
  // A cursor of one query is refused by another.
  const other = await run([
    'audit',
    'query',
    '--store',
    `file:${dir}`,
    '--rule',
    'even',
    '--cursor',
    more[2]!,
  ]);
  assert.equal(other.code, 2);
  assert.match(other.stderr, /other filters/);
  const nothing = await run([
    'audit',
    'query',
    '--store',
    `file:${dir}`,
    '--since',
    '2020-01-01T00:00:00Z',
    '--until',
    '2020-01-02T00:00:00Z',
  ]);
  assert.equal(nothing.code, 0);
  assert.match(nothing.stdout, /no matching records/);
});

test('cli: audit stats counts by source and rule from a collector and a store', async () => {
  const remoteStats = await run([
    'audit',
    'stats',
    '--group-by',
    'source,decision',
    '--type',
    'authz.decision',
    '--json',
    ...remote('security-console'),
  ]);
  assert.equal(remoteStats.code, 0, remoteStats.stderr);
  const body = JSON.parse(remoteStats.stdout) as { groups: { key: Record<string, string>; count: number }[] };
  const web = 'spiffe://example.org/ns/shop/sa/web';
  assert.equal(body.groups.find((g) => g.key.source === web && g.key.decision === 'deny')?.count, 2);
  assert.equal(body.groups.find((g) => g.key.source === web && g.key.decision === 'allow')?.count, 4);
  const table = await run([
    'audit',
    'stats',
    '--group-by',
    'decision',
    '--interval',
    '1h',
    ...remote('security-console'),
  ]);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^BUCKET\s+DECISION\s+COUNT$/m);
  assert.match(table.stdout, /^total \d+ in \d+ groups$/m);
  const local = await run([
    'audit',
    'stats',
    '--store',
    `file:${join(tmp.dir, 'c', 'log')}`,
    '--type',
    'authz.decision',
  ]);
  assert.equal(local.code, 0, local.stderr);
  assert.match(local.stdout, /^total 6$/m);
  const bad = await run(['audit', 'stats', '--store', 'file:/x', '--group-by', 'colour']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--group-by: "colour" is not one of type, source/);
});

test('cli: audit sources prints the spool table of GET /v1/sources, --json as it is, --check exits 1 when a source needs a look', async () => {
  const web = 'spiffe://example.org/ns/shop/sa/web';
  const orders = 'spiffe://example.org/ns/shop/sa/orders';
  // web posts a batch without a report (an older client); orders reports a damaged spool.
  const webAgent = workloadAgent(pki, pki.leaf('web'));
  const batch = await call(webAgent, `${collector.url}/v1/events`, {
    method: 'POST',
    body: { events: [decision(100)] },
  });
  assert.equal(batch.status, 200, batch.text);
  await webAgent.close();
  const agent = workloadAgent(pki, pki.leaf('orders'));
  const report = { pending: 7, pendingBytes: 2100, oldestPendingMs: 4200, missing: 1, lost: 0 };
  const res = await call(agent, `${collector.url}/v1/sources/report`, {
    method: 'POST',
    body: { ...report, state: 'delivering', intervalMs: 30_000 },
  });
  assert.equal(res.status, 200, res.text);
  await agent.close();
  const table = await run(['audit', 'sources', ...remote('security-console')]);
  assert.equal(table.code, 0, table.stderr);
  const lines = table.stdout.split('\n');
  assert.match(lines[0]!, /^SOURCE\s+LAST SEEN\s+PENDING\s+OLDEST\s+MISSING\s+LOST\s+SPOOL\s+HEALTH$/);
  const row = (id: string) => lines.find((l) => l.startsWith(`${id} `)) ?? '';
  assert.match(row(orders), /\s+\d+(ms|s) ago\s+7\s+4s\s+1\s+0\s+delivering\s+1 missing$/);
  assert.match(row(web), /\s+\d+(ms|s) ago\s+-\s+-\s+-\s+-\s+no reports\s+ok$/);
  assert.match(table.stdout, /^2 sources, 1 need a look$/m);
  const json = await run(['audit', 'sources', '--json', ...remote('security-console')]);
  assert.equal(json.code, 0, json.stderr);
  const body = JSON.parse(json.stdout) as { sources: { source: string; report: unknown }[] };
  assert.deepEqual(body.sources.find((s) => s.source === orders)?.report, {
    ...report,
    state: 'delivering',
    intervalMs: 30_000,
    receivedAt: (body.sources[0]!.report as { receivedAt: string }).receivedAt,
  });
  const check = await run(['audit', 'sources', '--check', ...remote('security-console')]);
  assert.equal(check.code, 1, check.stderr);
  const notReader = await run(['audit', 'sources', ...remote('web')]);
  assert.equal(notReader.code, 1);
  assert.match(notReader.stderr, /audit-reader/);
});

test('cli: audit query --follow prints records as they arrive and exits 0 on SIGINT', async () => {
  const child = spawn(
    process.execPath,
    [CLI, 'audit', 'query', '--follow', '--rule', 'followed', '--json', ...remote('security-console')],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  try {
    // The tail is open once the collector counts it.
    const agent = workloadAgent(pki, pki.leaf('security-console'));
    const until = Date.now() + 15_000;
    for (;;) {
      const status = await call(agent, `${collector.url}/v1/status`);
      if ((status.body as { collector: { liveTails: number } }).collector.liveTails > 0) break;
      if (Date.now() > until) throw new Error(`the tail never opened: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await agent.close();
    const web = workloadAgent(pki, pki.leaf('web'));
    await call(web, `${collector.url}/v1/events`, {
      method: 'POST',
      body: {
        events: [decision(40, { rule: 'followed' }), decision(41), decision(42, { rule: 'followed' })],
      },
    });
    await web.close();
    const seen = Date.now() + 5000;
    while (
      stdout
        .trim()
        .split('\n')
        .filter((l) => l).length < 2 &&
      Date.now() < seen
    )
      await new Promise((r) => setTimeout(r, 25));
    child.kill('SIGINT');
    assert.equal(await exited, 0, stderr);
    const actions = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).event.action);
    assert.deepEqual(actions, ['GET /orders/40', 'GET /orders/42']);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});

const usageErrors: [string, string[], RegExp][] = [
  ['an unknown flag', ['audit', 'verify', '--store', 'file:/x', '--bogus'], /Unknown option '--bogus'/],
  ['a missing --store', ['audit', 'verify'], /--store is required/],
  [
    'a bad --decision',
    ['audit', 'query', '--store', 'file:/x', '--decision', 'maybe'],
    /--decision must be allow or deny/,
  ],
  [
    'a bad --limit',
    ['audit', 'query', '--store', 'file:/x', '--limit=abc'],
    /--limit must be a non-negative integer/,
  ],
  [
    'a bad --since',
    ['audit', 'query', '--store', 'file:/x', '--since', 'yesterday'],
    /--since must be a duration/,
  ],
  [
    '--follow with --store',
    ['audit', 'query', '--store', 'file:/x', '--follow'],
    /--follow needs a collector/,
  ],
  ['a foreign --cursor', ['audit', 'query', '--store', 'file:/x', '--cursor', 'abc'], /not a cursor/],
  [
    'a bad --interval',
    ['audit', 'stats', '--store', 'file:/x', '--interval', '2h'],
    /--interval must be one of/,
  ],
  ['a missing --out', ['audit', 'checkpoint', '--public-key', 'k'], /--out is required/],
];
for (const [label, args, message] of usageErrors) {
  test(`cli: ${label} exits 2 with one line`, async () => {
    const r = await run(args);
    assert.equal(r.code, 2);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  });
}

test('cli: a bad store spec, a missing store dir and a bad config exit 1 with one line naming the problem', async () => {
  const spec = await run(['audit', 'verify', '--store', 'mysql://x']);
  assert.equal(spec.code, 1);
  assert.match(spec.stderr, /expected file:DIR or postgres:URL \[ERR_AUDIT_STORE_SPEC\]/);
  const missing = await run(['audit', 'verify', '--store', `file:${join(tmp.dir, 'none')}`]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /cannot open the store directory \(ENOENT\)/);
  const config = join(tmp.dir, 'bad.yaml');
  writeFileSync(
    config,
    'origin: example.org/audit\nstore: file:log\ndataDir: d\nidentities: i\ntls: {cert: a, key: b, trustBundle: c}\ncheckpoint: {everyRecord: 5}\n',
  );
  const bad = await run(['audit', 'serve', '--config', config]);
  assert.equal(bad.code, 1);
  assert.equal(
    bad.stderr.trim(),
    `portcullis: ${config}: checkpoint.everyRecord: unknown key (did you mean "everyRecords"?) [ERR_CONFIG_INVALID]`,
  );
  const gone = await run(['audit', 'serve', '--config', join(tmp.dir, 'nope.yaml')]);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /nope.yaml: no such file \[ERR_CONFIG_NOT_FOUND\]/);
});

test(
  'cli: audit serve runs a collector from a config file and stops cleanly on SIGTERM',
  { timeout: 30_000 },
  async () => {
    const dir = join(tmp.dir, 'serve');
    const config = join(tmp.dir, 'serve.yaml');
    writeFileSync(
      config,
      [
        'listen: {host: 127.0.0.1, port: 0}',
        'origin: example.org/audit',
        `identities: ${pki.identitiesDir}`,
        `tls: {cert: ${pki.leaf('audit').certFile}, key: ${pki.leaf('audit').keyFile}, trustBundle: ${pki.rootFile}}`,
        `dataDir: ${join(dir, 'data')}`,
        `store: file:${join(dir, 'log')}`,
      ].join('\n'),
    );
    const child = spawn(process.execPath, [CLI, 'audit', 'serve', '--config', config], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const listening = new Promise<Record<string, unknown>>((resolve, reject) => {
      child.on('exit', (code) => reject(new Error(`exited ${code}`)));
      child.stdout.on('data', (d) => {
        out += d;
        const line = out.split('\n').find((l) => l.includes('audit collector listening'));
        if (line) resolve(JSON.parse(line));
      });
    });
    const info = await listening;
    assert.match(String(info.url), /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.match(String(info.verifierKey), /^example\.org\/audit\+[0-9a-f]{8}\+/);
    child.removeAllListeners('exit');
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  },
);

test('cli: audit import of an event the collector refuses for good fails at once naming why, and keeps the file', async () => {
  const file = join(tmp.dir, 'reserved.jsonl');
  writeFileSync(file, `${JSON.stringify({ ...decision(0), type: 'admin.audit.read' })}\n`);
  const refused = await run(['audit', 'import', '--file', file, ...remote('web')], 40_000);
  assert.equal(refused.code, 1, refused.stderr);
  assert.match(
    refused.stderr,
    /1 of 1 audit events not delivered \(audit events lost: invalid event: type admin\.audit\.read is written by the collector only\)/,
  );
  assert.ok(existsSync(file), 'what was not delivered stays in the file');
});
