// What the audit client sends and how it obeys the collector's answers (idempotency keys, 409, 422,
// 429 with Retry-After), and what failMode closed promises before `record` resolves. The server
// here is a real mTLS server that records what arrives: it asserts what the client sends and
// answers as the collector's contract says; the collector's own behaviour is tested with the
// real collector elsewhere.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { AuditClient, AuditClientOptions } from '../../audit/index.ts';
import { checkSpoolReport, createAuditClient, parseSpoolReport } from '../../audit/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { quiet } from './collector-harness.ts';
import { decision, tempDir } from './helpers.ts';

const COLLECTOR_ID = 'spiffe://example.org/ns/portcullis/sa/audit';
let pki: TestPki;
before(async () => {
  pki = await makeTestPki();
});
after(() => pki.cleanup());

interface Seen {
  readonly key: string | undefined;
  readonly body: string;
  readonly at: number;
  /** The batch's `portcullis-spool` header (decision 0096). */
  readonly spool?: string | undefined;
}
type Answer = { status: number; headers?: Record<string, string>; body?: unknown };

/** A real mTLS server with the collector's certificate that records each POST and answers with `answer`. */
async function recordingServer(
  answer: (seen: Seen, all: Seen[]) => Answer,
  options: { holdReports?: boolean } = {},
) {
  const seen: Seen[] = [];
  /** Spool reports sent on their own (`POST /v1/sources/report`), parsed. */
  const reports: Record<string, unknown>[] = [];
  const leaf = pki.leaf('audit');
  const server: Server = createServer(
    { cert: leaf.certPem, key: leaf.keyPem, ca: pki.rootPem, requestCert: true, rejectUnauthorized: true },
    (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.url === '/v1/sources/report') {
          reports.push(JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>);
          if (options.holdReports) return; // a collector that never answers
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
          return;
        }
        const key = req.headers['idempotency-key'];
        const s: Seen = {
          key: Array.isArray(key) ? key[0] : key,
          body: Buffer.concat(chunks).toString(),
          at: Date.now(),
          spool: req.headers['portcullis-spool'] as string | undefined,
        };
        seen.push(s);
        const a = answer(s, seen);
        const events = (JSON.parse(s.body) as { events: unknown[] }).events.length;
        const body = JSON.stringify(a.body ?? { accepted: events, firstSeq: 0, lastSeq: events - 1 });
        res.writeHead(a.status, { 'content-type': 'application/json', ...(a.headers ?? {}) }).end(body);
      });
    },
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    reports,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

function options(url: string, spoolDir: string, extra: Partial<AuditClientOptions> = {}): AuditClientOptions {
  const leaf = pki.leaf('web');
  return {
    url,
    tls: { cert: leaf.certFile, key: leaf.keyFile, trustBundle: pki.rootFile },
    collectorId: COLLECTOR_ID,
    spoolDir,
    spoolMaxBytes: 10_000_000,
    failMode: 'closed',
    batchSize: 100,
    retryMinMs: 20,
    retryMaxMs: 100,
    logger: quiet,
    ...extra,
  };
}

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const actionsOf = (body: string) =>
  (JSON.parse(body) as { events: { action: string }[] }).events.map((e) => e.action);

test('client: every POST carries an Idempotency-Key; a retried batch has the same key and the same bytes, the next batch another key', async () => {
  const tmp = tempDir();
  // The first two attempts fail, as a collector that stored the batch but died before answering.
  const server = await recordingServer((_s, all) => ({ status: all.length <= 2 ? 503 : 200 }));
  const client = createAuditClient(options(server.url, join(tmp.dir, 'spool')));
  try {
    for (let i = 0; i < 30; i++) client.emit(decision(i));
    await until(() => client.metrics().delivered === 30);
    for (let i = 30; i < 40; i++) client.emit(decision(i));
    await until(() => client.metrics().delivered === 40);
    const [a, b, c, ...rest] = server.seen;
    assert.ok(a!.key && /^[A-Za-z0-9._:-]{1,128}$/.test(a!.key), `key ${a!.key}`);
    assert.deepEqual([b!.key, b!.body], [a!.key, a!.body]);
    assert.deepEqual([c!.key, c!.body], [a!.key, a!.body]);
    assert.ok(rest.every((s) => s.key !== a!.key));
    assert.equal(new Set(server.seen.map((s) => s.key)).size, server.seen.length - 2);
    assert.deepEqual(
      server.seen.slice(2).flatMap((s) => actionsOf(s.body)),
      Array.from({ length: 40 }, (_, i) => `GET /orders/${i}`),
    );
  } finally {
    await client.close();
    await server.close();
    tmp.cleanup();
  }
});

test('client: a new process replays the batch the previous one left unanswered with the same key and bytes', async () => {
  const tmp = tempDir();
  const spool = join(tmp.dir, 'spool');
  let up = false;
  const server = await recordingServer(() => ({ status: up ? 200 : 500 }));
  try {
    const first = createAuditClient(options(server.url, spool));
    for (let i = 0; i < 25; i++) first.emit(decision(i));
    await until(() => server.seen.length >= 1);
    await first.close();
    const sent = server.seen[0]!;
    up = true;
    const second = createAuditClient(options(server.url, spool));
    await until(() => second.metrics().delivered >= 25);
    await second.close();
    const replay = server.seen.find((s, i) => i > 0 && s.key === sent.key)!;
    assert.ok(replay, 'the batch was sent again under its key');
    assert.equal(replay.body, sent.body);
    const delivered = server.seen.filter((s, i) => i > 0 && (s.key !== sent.key || s === replay));
    assert.deepEqual(
      [...new Set(delivered.map((s) => s.key))].flatMap((k) =>
        actionsOf(delivered.find((s) => s.key === k)!.body),
      ),
      Array.from({ length: 25 }, (_, i) => `GET /orders/${i}`),
    );
  } finally {
    await server.close();
    tmp.cleanup();
  }
});

test('client: 429 and 409 are retried after the Retry-After the collector gave, while new events keep reaching the spool', async () => {
  const tmp = tempDir();
  const server = await recordingServer((_s, all) =>
    all.length === 1
      ? { status: 429, headers: { 'retry-after': '1' }, body: { error: 'ERR_AUDIT_RATE_LIMITED' } }
      : all.length === 2
        ? { status: 409, headers: { 'retry-after': '1' }, body: { error: 'ERR_AUDIT_IDEMPOTENCY_IN_FLIGHT' } }
        : { status: 200 },
  );
  const client = createAuditClient(
    options(server.url, join(tmp.dir, 'spool'), { retryMinMs: 10, retryMaxMs: 20 }),
  );
  try {
    client.emit(decision(0));
    await until(() => server.seen.length === 1);
    // During the back-off, events are written to the spool at once (they do not wait for it in memory).
    await client.record(decision(1));
    assert.equal(client.metrics().queueDepth, 0);
    assert.equal(client.metrics().spoolDepth, 2);
    await until(() => client.metrics().delivered === 2, 5_000);
    const [a, b, c] = server.seen;
    assert.ok(b!.at - a!.at >= 950, `waited ${b!.at - a!.at} ms after 429, not the 20 ms backoff`);
    assert.ok(c!.at - b!.at >= 950, `waited ${c!.at - b!.at} ms after 409`);
    assert.equal(b!.key, a!.key);
    assert.equal(client.metrics().lost, 0);
  } finally {
    await client.close();
    await server.close();
    tmp.cleanup();
  }
});

test('client: a 422 idempotency mismatch is not retried forever: the batch is set aside on disk, logged, counted, and delivery goes on', async () => {
  const tmp = tempDir();
  const server = await recordingServer((_s, all) =>
    all.length === 1
      ? { status: 422, body: { error: 'ERR_AUDIT_IDEMPOTENCY_MISMATCH', message: 'same key, other body' } }
      : { status: 200 },
  );
  const client = createAuditClient(options(server.url, join(tmp.dir, 'spool')));
  try {
    await client.record(decision(0));
    await until(() => client.metrics().rejected === 1);
    await client.record(decision(1));
    await until(() => client.metrics().delivered === 1);
    assert.equal(
      server.seen.filter((s) => s.key === server.seen[0]!.key).length,
      1,
      'the refused key was sent once',
    );
    const [file] = readdirSync(join(tmp.dir, 'spool')).filter((f) => f.startsWith('rejected-'));
    const kept = JSON.parse(readFileSync(join(tmp.dir, 'spool', file!), 'utf8')) as {
      key: string;
      body: unknown;
    };
    assert.equal(kept.key, server.seen[0]!.key);
    assert.deepEqual(kept.body, JSON.parse(server.seen[0]!.body));
  } finally {
    await client.close();
    await server.close();
    tmp.cleanup();
  }
});

test('client: in failMode closed, record resolves only once the event is in the spool file, and concurrent events share spool writes', async () => {
  const tmp = tempDir();
  // The collector is away: the spool is all there is.
  const client: AuditClient = createAuditClient(options('https://127.0.0.1:1', join(tmp.dir, 'spool')));
  try {
    const spoolText = () =>
      readdirSync(join(tmp.dir, 'spool'))
        .filter((f) => f.startsWith('spool-'))
        .map((f) => readFileSync(join(tmp.dir, 'spool', f), 'utf8'))
        .join('');
    await client.record(decision(0));
    assert.match(spoolText(), /GET \/orders\/0"/);
    const writesBefore = client.metrics().spoolWrites;
    const n = 400;
    await Promise.all(
      Array.from({ length: n }, (_, i) =>
        client.record(decision(i + 1)).then(() => {
          assert.ok(
            spoolText().includes(`"GET /orders/${i + 1}"`),
            `event ${i + 1} is on disk when record resolves`,
          );
        }),
      ),
    );
    const writes = client.metrics().spoolWrites - writesBefore;
    assert.ok(writes < n / 10, `${n} concurrent events took ${writes} spool writes`);
  } finally {
    await client.close();
    tmp.cleanup();
  }
});

test('client: in failMode closed, record rejects with ERR_AUDIT_SPOOL_FULL when the spool cannot keep the event, and after close with ERR_AUDIT_CLIENT_CLOSED', async () => {
  const tmp = tempDir();
  const client = createAuditClient(
    options('https://127.0.0.1:1', join(tmp.dir, 'spool'), { spoolMaxBytes: 2048 }),
  );
  let refused: unknown;
  for (let i = 0; i < 40 && !refused; i++)
    await client.record(decision(i)).catch((err: unknown) => (refused = err));
  assert.equal((refused as { code?: string }).code, 'ERR_AUDIT_SPOOL_FULL');
  assert.equal(client.accepting(), false);
  await client.close();
  await assert.rejects(client.record(decision(99)), { code: 'ERR_AUDIT_CLIENT_CLOSED' });
  tmp.cleanup();
});

test('client: in failMode open, record does not wait for the disk and events reach the spool within the loss window', async () => {
  const tmp = tempDir();
  const client = createAuditClient(
    options('https://127.0.0.1:1', join(tmp.dir, 'spool'), {
      failMode: 'open',
      lossWindow: { events: 10, ms: 150 },
    }),
  );
  try {
    await client.record(decision(0));
    assert.equal(client.metrics().spooled, 0, 'record resolved before any spool write');
    for (let i = 1; i < 5; i++) client.emit(decision(i));
    await until(() => client.metrics().spooled === 5, 2_000);
    // Reaching the window's count writes at once, without waiting for its time.
    const t = Date.now();
    for (let i = 5; i < 15; i++) client.emit(decision(i));
    await until(() => client.metrics().spooled === 15, 2_000);
    assert.ok(Date.now() - t < 150, `count-triggered write after ${Date.now() - t} ms`);
  } finally {
    await client.close();
    tmp.cleanup();
  }
});

test('client: a bad loss window is a TypeError', () => {
  for (const lossWindow of [{ events: 0 }, { events: 1.5 }, { ms: -1 }, { ms: Number.NaN }])
    assert.throws(
      () => createAuditClient(options('https://127.0.0.1:1', '/nonexistent', { lossWindow })),
      TypeError,
    );
});

test('client: in failMode closed, a spool that cannot be written refuses with ERR_AUDIT_SPOOL_UNWRITABLE for a moment, then takes events again', async () => {
  const tmp = tempDir();
  const spoolDir = join(tmp.dir, 'spool');
  const client = createAuditClient(options('https://127.0.0.1:1', spoolDir));
  try {
    await client.flush(); // the spool is open, no file yet
    // The directory turns into a plain file: the first spool file cannot be created.
    rmSync(spoolDir, { recursive: true, force: true });
    writeFileSync(spoolDir, 'not a directory');
    await assert.rejects(client.record(decision(0)), { code: 'ERR_AUDIT_SPOOL_UNWRITABLE' });
    assert.equal(client.accepting(), false);
    assert.equal(client.metrics().lost, 1);
    rmSync(spoolDir);
    mkdirSync(spoolDir);
    await until(() => client.accepting(), 3_000);
    await client.record(decision(1));
    assert.match(readdirSync(spoolDir).join(' '), /spool-\d{16}\.jsonl/);
  } finally {
    await client.close();
    tmp.cleanup();
  }
});

test('client: a wall clock set back an hour after a failed delivery or a failed spool write stalls neither the retry nor accepting()', async () => {
  const tmp = tempDir();
  const realNow = Date.now;
  let answered = 0;
  const server = await recordingServer(() => ({ status: ++answered === 1 ? 503 : 200 }));
  const client = createAuditClient(options(server.url, join(tmp.dir, 'spool'), { retryMinMs: 300 }));
  try {
    client.emit(decision(0));
    await until(() => server.seen.length === 1);
    // The failure is recorded with the clock as it was; then the clock goes back an hour (NTP step).
    await new Promise((r) => setTimeout(r, 100));
    Date.now = () => realNow() - 3_600_000;
    await until(() => client.metrics().delivered === 1, 3_000);
  } finally {
    Date.now = realNow;
    await client.close();
    await server.close();
  }
  const spoolDir = join(tmp.dir, 'spool2');
  const closed = createAuditClient(options('https://127.0.0.1:1', spoolDir));
  try {
    await closed.flush();
    rmSync(spoolDir, { recursive: true, force: true });
    writeFileSync(spoolDir, 'not a directory');
    await assert.rejects(closed.record(decision(1)), { code: 'ERR_AUDIT_SPOOL_UNWRITABLE' });
    rmSync(spoolDir);
    mkdirSync(spoolDir);
    Date.now = () => realNow() - 3_600_000;
    await until(() => closed.accepting(), 3_000);
  } finally {
    Date.now = realNow;
    await closed.close();
    tmp.cleanup();
  }
});

test('client: in failMode closed, a spool that filled while the collector was away takes events again once it is delivered, whatever its size', async () => {
  for (const spoolMaxBytes of [1024, 1800, 3000, 20_000]) {
    const tmp = tempDir();
    let up = false;
    const server = await recordingServer(() => ({ status: up ? 200 : 503 }));
    const client = createAuditClient(options(server.url, join(tmp.dir, 'spool'), { spoolMaxBytes }));
    try {
      let kept = 0;
      let refused: unknown;
      for (let i = 0; i < 1000 && !refused; i++)
        await client.record(decision(i)).then(
          () => kept++,
          (err: unknown) => (refused = err),
        );
      assert.equal((refused as { code?: string }).code, 'ERR_AUDIT_SPOOL_FULL', `${spoolMaxBytes}`);
      assert.equal(client.accepting(), false);
      up = true;
      await until(() => client.metrics().delivered === kept);
      await until(() => client.accepting(), 3_000).catch(() => {
        throw new Error(`spoolMaxBytes ${spoolMaxBytes}: still refusing after delivering all ${kept} events`);
      });
      await client.record(decision(1000));
      await until(() => client.metrics().delivered === kept + 1);
    } finally {
      await client.close();
      await server.close();
      tmp.cleanup();
    }
  }
});

test('client: each batch carries its spool report (what stays behind it, the age of its first event); an idle client reports on its own every interval', async () => {
  const tmp = tempDir();
  // The collector is away until the 35 events are in the spool: they pile up there.
  let away = true;
  const server = await recordingServer(() => ({ status: away ? 503 : 200 }));
  const client = createAuditClient(
    options(server.url, join(tmp.dir, 'spool'), { batchSize: 10, reportIntervalMs: 1000 }),
  );
  try {
    for (let i = 0; i < 35; i++) await client.record(decision(i));
    await until(() => server.seen.length >= 1);
    const failed = server.seen.length;
    away = false;
    await until(() => client.metrics().delivered === 35);
    // Each stored batch's report: what stays behind it, down to 0.
    const stored = server.seen.slice(failed);
    let sent = 0;
    for (const s of stored) {
      sent += actionsOf(s.body).length;
      assert.equal(parseSpoolReport(s.spool).pending, 35 - sent, `after ${sent} events`);
    }
    assert.ok(stored.length >= 4);
    const reports = stored.map((s) => parseSpoolReport(s.spool));
    assert.ok(reports[0]!.oldestPendingMs > 0, 'the oldest pending event has an age');
    assert.equal(reports.at(-1)!.oldestPendingMs, 0, 'nothing stays behind the last batch');
    assert.deepEqual(new Set(reports.map((r) => r.state)), new Set(['delivering', 'idle']));
    assert.ok(reports.every((r) => r.intervalMs === 1000 && r.missing === 0 && r.lost === 0));
    // Idle: a report on its own about one interval after the last batch, and again after another.
    const before = server.reports.length;
    await until(() => server.reports.length >= before + 2, 5_000);
    const idle = checkSpoolReport(server.reports.at(-1));
    assert.deepEqual(
      { pending: idle.pending, oldest: idle.oldestPendingMs, state: idle.state },
      { pending: 0, oldest: 0, state: 'idle' },
    );
  } finally {
    await client.close();
    await server.close();
    tmp.cleanup();
  }
});

test('client: a spool report the collector never answers does not hold close()', async () => {
  const tmp = tempDir();
  const server = await recordingServer(() => ({ status: 200 }), { holdReports: true });
  const client = createAuditClient(options(server.url, join(tmp.dir, 'spool'), { reportIntervalMs: 1000 }));
  try {
    await until(() => server.reports.length === 1); // sent at start, and held
    const start = Date.now();
    await client.close();
    assert.ok(Date.now() - start < 1000, `close took ${Date.now() - start} ms`);
  } finally {
    await client.close();
    await server.close();
    tmp.cleanup();
  }
});

test('client: a report interval out of range is a TypeError', () => {
  for (const reportIntervalMs of [0, 999, 2 ** 31, 1.5])
    assert.throws(
      () => createAuditClient(options('https://127.0.0.1:1', tempDir().dir, { reportIntervalMs })),
      /reportIntervalMs/,
    );
});
