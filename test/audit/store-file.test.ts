import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  appendFileSync,
  cpSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
  statSync,
  utimesSync,
} from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import type { AuditEvent } from '../../core/index.ts';
import type { AuditStore, FileStore } from '../../audit/index.ts';
import {
  GENESIS_PREV,
  buildRecord,
  createSealer,
  formatVerifierKey,
  openFileStore,
  parseVerifierKey,
  verifyStore,
} from '../../audit/index.ts';
import { SegmentIndex, scanIndexedFields } from '../../audit/store/file-index.ts';
import { storeConformance } from './store-conformance.ts';
import { decision, tempDir } from './helpers.ts';

const root = tempDir();
const CHILD = new URL('./fixtures/append-child.ts', import.meta.url).pathname;
let n = 0;

function segmentFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.jsonl'))
    .sort()
    .map((f) => join(dir, f));
}

storeConformance('file store', () => ({
  // Four records per segment, so that the suite crosses segment boundaries.
  open: (clock, deps) => openFileStore({ ...deps, dir: join(root.dir, `s${n++}`), segmentRecords: 4, clock }),
  async reopen(store, clock, deps) {
    await store.close();
    return openFileStore({ ...deps, dir: (store as FileStore).dir, segmentRecords: 4, clock });
  },
  async forge(store, lines) {
    // Appended to the last segment, as an editor or a second process would.
    const last = segmentFiles((store as FileStore).dir).at(-1)!;
    appendFileSync(last, lines.map((l) => `${l}\n`).join(''));
  },
  view: (store) => openFileStore({ dir: (store as FileStore).dir, readOnly: true }),
  async lines(store) {
    return segmentFiles((store as FileStore).dir).flatMap((f) =>
      readFileSync(f, 'utf8').split('\n').slice(0, -1),
    );
  },
  async replace(store, lines) {
    const dir = (store as FileStore).dir;
    await store.close();
    for (const f of segmentFiles(dir)) rmSync(f);
    writeFileSync(join(dir, '0000000000000000.jsonl'), lines.map((l) => `${l}\n`).join(''));
    return openFileStore({ dir, readOnly: true });
  },
  async cleanup() {
    root.cleanup();
  },
}));

test('file store: reopening drops a torn last line, reports it, and appends continue', async () => {
  const dir = join(root.dir, 'torn');
  let store: AuditStore = await openFileStore({ dir });
  await store.append([decision(0), decision(1)]);
  await store.close();
  const [file] = segmentFiles(dir);
  const size = statSync(file!).size;
  const torn = '{"event":{"action":"GET /ord';
  appendFileSync(file!, torn);
  const recovered: number[] = [];
  store = await openFileStore({ dir, onRecover: (i) => recovered.push(i.droppedBytes) });
  assert.deepEqual(recovered, [Buffer.byteLength(torn)]);
  assert.equal(statSync(file!).size, size);
  assert.equal(await store.size(), 2);
  const [r] = await store.append([decision(2)]);
  assert.equal(r!.seq, 2);
  assert.equal((await verifyStore(store)).ok, true);
  await store.close();
});

test('file store: opening for writing refuses a tail that breaks the chain with ERR_AUDIT_STORE_CORRUPT', async () => {
  const dir = join(root.dir, 'corrupt');
  const store = await openFileStore({ dir });
  await store.append([decision(0), decision(1), decision(2)]);
  await store.close();
  const [file] = segmentFiles(dir);
  writeFileSync(file!, readFileSync(file!, 'utf8').replace('GET /orders/1', 'GET /orders/X'));
  await assert.rejects(openFileStore({ dir }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'ERR_AUDIT_STORE_CORRUPT');
    assert.match(err.message, /record 1: hash does not match/);
    return true;
  });
  // Read-only opening still works, so that verify can name the record.
  const ro = await openFileStore({ dir, readOnly: true });
  const verdict = await verifyStore(ro);
  assert.ok(!verdict.ok && verdict.seq === 1);
  await assert.rejects(ro.append([decision(3)]), { code: 'ERR_AUDIT_STORE_UNAVAILABLE' });
  await ro.close();
});

test('file store: a missing directory opened read-only is ERR_AUDIT_STORE_UNAVAILABLE', async () => {
  await assert.rejects(openFileStore({ dir: join(root.dir, 'nope'), readOnly: true }), {
    code: 'ERR_AUDIT_STORE_UNAVAILABLE',
  });
});

test('file store: segments roll at the configured size and files are private (0600)', async () => {
  const dir = join(root.dir, 'roll');
  const store = await openFileStore({ dir, segmentRecords: 3 });
  await store.append(Array.from({ length: 7 }, (_, i) => decision(i)));
  await store.append([decision(7)]);
  const files = segmentFiles(dir).map((f) => f.slice(dir.length + 1));
  assert.deepEqual(files, ['0000000000000000.jsonl', '0000000000000003.jsonl', '0000000000000006.jsonl']);
  assert.equal(statSync(join(dir, files[0]!)).mode & 0o777, 0o600);
  assert.equal((await verifyStore(store)).ok, true);
  await store.close();
});

test('file store: segment bounds hold after a reopen, by records and by bytes', async () => {
  const dir = join(root.dir, 'bounds');
  let store = await openFileStore({ dir, segmentRecords: 10 });
  await store.append(Array.from({ length: 6 }, (_, i) => decision(i)));
  for (let round = 0; round < 3; round++) {
    store = await openFileStore({ dir: (await store.close(), dir), segmentRecords: 10 });
    await store.append(Array.from({ length: 6 }, (_, i) => decision(i)));
  }
  const counts = segmentFiles(dir).map((f) => readFileSync(f, 'utf8').split('\n').length - 1);
  assert.deepEqual(counts, [10, 10, 4]);
  await store.close();

  const bdir = join(root.dir, 'bytes');
  const lineBytes = Buffer.byteLength(readFileSync(segmentFiles(dir)[0]!, 'utf8').split('\n')[0]!) + 1;
  const segmentBytes = lineBytes * 3 + 10; // room for three records
  store = await openFileStore({ dir: bdir, segmentBytes });
  await store.append([decision(0), decision(1)]);
  await store.close();
  store = await openFileStore({ dir: bdir, segmentBytes });
  await store.append([decision(2), decision(3), decision(4)]);
  const sizes = segmentFiles(bdir).map((f) => statSync(f).size);
  assert.ok(
    sizes.every((s) => s <= segmentBytes),
    `segments ${sizes.join(',')} within ${segmentBytes}`,
  );
  assert.equal(sizes.length, 2);
  assert.equal((await verifyStore(store)).ok, true);
  await store.close();
});

test('file store: a second opener of the same directory is refused with ERR_AUDIT_STORE_LOCKED naming the holder', async () => {
  const dir = join(root.dir, 'locked');
  const first = await openFileStore({ dir });
  await assert.rejects(openFileStore({ dir }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'ERR_AUDIT_STORE_LOCKED');
    assert.match(err.message, new RegExp(`pid ${process.pid} on `));
    return true;
  });
  // verify opens read-only, without the lock.
  const ro = await openFileStore({ dir, readOnly: true });
  await ro.close();
  await first.close();
  const again = await openFileStore({ dir });
  await again.close();
});

test('file store: the lock of a SIGKILLed writer does not block a restart', { timeout: 20_000 }, async () => {
  const dir = join(root.dir, 'stale');
  const child = spawn(process.execPath, [CHILD, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.on('exit', (code) => reject(new Error(`child exited early with ${code}`)));
    let seen = 0;
    child.stdout.on('data', (chunk: Buffer) => {
      // "ready", then acknowledged seqs: kill once a few appends went through.
      seen += chunk.toString().split('\n').length - 1;
      if (seen > 50) resolve();
    });
  });
  child.removeAllListeners('exit');
  const exited = new Promise((r) => child.on('exit', r));
  child.kill('SIGKILL');
  await exited;
  assert.match(readFileSync(join(dir, 'LOCK'), 'utf8'), new RegExp(`"pid":${child.pid}`));
  const store = await openFileStore({ dir, segmentRecords: 5_000 });
  assert.ok((await store.size()) > 0);
  assert.equal((await verifyStore(store)).ok, true);
  await store.close();
});

test('file store: with a sealer, a torn or junk tail is moved aside, reported, and verify reports it before', async () => {
  const key = generateKeyPairSync('ed25519');
  const signer = { name: 'test.example/audit', ...key };
  const sealKeys = [parseVerifierKey(formatVerifierKey(signer.name, key.publicKey))];
  const sealer = createSealer(signer, signer.name);
  for (const [label, tail] of [
    ['torn', '{"event":{"action":"GET /ord'],
    ['junk', 'garbage that is a whole line\n'],
  ] as const) {
    const dir = join(root.dir, `tail-${label}`);
    let store = await openFileStore({ dir, sealer });
    await store.append([decision(0), decision(1)]);
    await store.close();
    appendFileSync(segmentFiles(dir)[0]!, tail);
    const ro = await openFileStore({ dir, readOnly: true });
    const verdict = await verifyStore(ro, { sealKeys });
    await ro.close();
    if (label === 'torn') {
      assert.ok(verdict.ok && verdict.torn?.[0]?.bytes === Buffer.byteLength(tail), JSON.stringify(verdict));
    } else {
      assert.ok(!verdict.ok && verdict.seq === 2, JSON.stringify(verdict));
    }
    const recovered: { droppedBytes: number; keptIn: string }[] = [];
    store = await openFileStore({ dir, sealer, onRecover: (i) => recovered.push(i) });
    assert.equal(recovered.length, 1, label);
    assert.equal(recovered[0]!.droppedBytes, Buffer.byteLength(tail), label);
    assert.equal(readFileSync(recovered[0]!.keptIn, 'utf8'), tail, label);
    assert.equal(await store.size(), 2);
    await store.close();
  }
});

test('file store: the query index is saved beside complete segments, read back, and rebuilt when a segment changed or the index is damaged', async () => {
  const tmp = tempDir();
  try {
    const dir = join(tmp.dir, 'log');
    let store = await openFileStore({ dir, segmentRecords: 10 });
    await store.append(Array.from({ length: 35 }, (_, i) => decision(i, { rule: `r${i % 5}` })));
    const seqs = async (s: AuditStore, rule: string) =>
      (await s.query({ rule, order: 'desc', limit: 100 })).map((r) => r.seq);
    assert.deepEqual(await seqs(store, 'r2'), [32, 27, 22, 17, 12, 7, 2]);
    // The three complete segments have an index file; the one still written to does not.
    assert.deepEqual(readdirSync(join(dir, 'index')).sort(), [
      '0000000000000000.idx',
      '0000000000000010.idx',
      '0000000000000020.idx',
    ]);
    // A segment that fills up while indexed is saved once complete.
    await store.append(Array.from({ length: 10 }, (_, i) => decision(35 + i, { rule: 'r2' })));
    assert.equal((await seqs(store, 'r2')).length, 17);
    assert.ok(readdirSync(join(dir, 'index')).includes('0000000000000030.idx'));
    await store.close();

    // Read back after a reopen (a damaged file is rebuilt instead of trusted).
    writeFileSync(join(dir, 'index', '0000000000000010.idx'), 'junk');
    store = await openFileStore({ dir, segmentRecords: 10 });
    assert.deepEqual((await seqs(store, 'r2')).slice(10), [32, 27, 22, 17, 12, 7, 2]);
    assert.notEqual(readFileSync(join(dir, 'index', '0000000000000010.idx'), 'utf8'), 'junk');
    await store.close();

    // A segment edited in place (same length: rule r2 of seq 12 becomes r3): the index is stale by
    // the segment's mtime and rebuilt, so the edited record is found where it now is. (The edit
    // breaks the chain: that is for verify to report, not for the index to hide.)
    const file = join(dir, '0000000000000010.jsonl');
    const text = readFileSync(file, 'utf8');
    const at = text.indexOf('"rule":"r2"');
    writeFileSync(file, `${text.slice(0, at)}"rule":"r3"${text.slice(at + 11)}`);
    const later = new Date(statSync(file).mtimeMs + 5000);
    utimesSync(file, later, later);
    const ro = await openFileStore({ dir, readOnly: true });
    assert.deepEqual((await seqs(ro, 'r2')).slice(10), [32, 27, 22, 17, 7, 2]);
    assert.deepEqual((await seqs(ro, 'r3')).slice(-8), [33, 28, 23, 18, 13, 12, 8, 3]);
    await ro.close();
  } finally {
    tmp.cleanup();
  }
});

/** Every index file of `dir` equals the index built from its segment's bytes as they are. */
async function indexFilesMatchSegments(dir: string): Promise<string[]> {
  const names = readdirSync(join(dir, 'index')).sort();
  for (const name of names) {
    const first = Number(name.slice(0, 16));
    const segment = join(dir, name.replace(/\.idx$/, '.jsonl'));
    const { size, mtimeMs } = statSync(segment);
    const saved = SegmentIndex.decode(readFileSync(join(dir, 'index', name)), first, size, mtimeMs);
    assert.ok(saved, `${name} describes its segment as it is`);
    const built = new SegmentIndex(first);
    await built.extend(segment, size);
    assert.ok(
      saved.encode(size, mtimeMs).equals(built.encode(size, mtimeMs)),
      `${name} is what the bytes give`,
    );
  }
  return names;
}

test("file store index: the fields read off a canonical line's bytes are what parsing it gives; other lines are left to the parser", () => {
  const events = [
    decision(1),
    decision(2, { rule: 'a "quoted" \\ rule\u0001', reason: 'ünïcode — ✓ 😀' }),
    // Nested objects and arrays that hold the same keys at a deeper level, values of other types.
    {
      ...decision(3),
      details: { type: 'inner', source: 'nested', list: [{ rule: 'x' }, '}', ']', 'a,b', null] },
      source: 'spiffe://example.org/s',
    },
    { ...decision(4), rule: 7, reason: null, subject: { decision: 'deny' } },
    { type: 'cert.issued', time: '2026-01-02T03:04:05.000Z' },
    { ...decision(5), zzz: [1, 2, { type: 'late' }], aaa: true },
  ] as unknown as AuditEvent[];
  let prev = GENESIS_PREV;
  events.forEach((event, seq) => {
    const { record, line } = buildRecord(seq, '2026-12-06T10:00:00.000Z', event, prev);
    prev = record.hash;
    const parsed = JSON.parse(line) as { hash: string; time: string; event: Record<string, unknown> };
    const want = Object.fromEntries(
      ['type', 'source', 'subject', 'decision', 'rule', 'reason']
        .filter((f) => typeof parsed.event[f] === 'string')
        .map((f) => [f, parsed.event[f]]),
    );
    assert.deepEqual(
      scanIndexedFields(Buffer.from(line)),
      { hash: parsed.hash, time: parsed.time, event: want },
      line,
    );
  });
  const { line } = buildRecord(0, '2026-12-06T10:00:00.000Z', decision(0), GENESIS_PREV);
  for (const other of [
    line.replace('{"event":{', '{"event": {'),
    line.replace('"type":', '"typ\\u0065":'),
    line.slice(0, -2),
    `${line} `,
    '{"commit":{"at":1,"keys":[]}}',
    'garbage',
  ])
    assert.equal(scanIndexedFields(Buffer.from(other)), undefined, other);
});

test('file store: the writer keeps the query index as it appends; a store written by appends alone has index files, and a reopen answers without parsing a segment', async () => {
  const tmp = tempDir();
  try {
    const dir = join(tmp.dir, 'log');
    const key = generateKeyPairSync('ed25519');
    const sealer = createSealer({ name: 'test.example/audit', ...key }, 'test.example/audit');
    // Every sixth event is large (over 16 KiB: a build reads its fields off the bytes, unparsed).
    const event = (i: number) =>
      decision(i, {
        rule: i % 4 === 0 ? undefined : `r${i % 5}`,
        reason: i % 7 === 0 ? 'déni — ünïcode' : 'allowed',
        source: `spiffe://example.org/s${i % 3}`,
        ...(i % 6 === 1
          ? { action: `GET /${'\u0001"}'.repeat(3000)}`, subject: `spiffe://example.org/${'é'.repeat(2000)}` }
          : {}),
      });
    let clock = Date.parse('2026-12-06T10:00:00.000Z');
    let store = await openFileStore({ dir, sealer, segmentRecords: 10, clock: () => new Date(clock) });
    // Batches of 7 cross segment boundaries; keyed ones add idempotency keys to the commit lines.
    for (let b = 0; b < 5; b++) {
      clock += 60_000;
      const events = Array.from({ length: 7 }, (_, j) => event(b * 7 + j));
      if (b % 2)
        await store.appendOnce(events, {
          source: 'spiffe://example.org/a',
          key: `k${b}`,
          bodyHash: 'ab'.repeat(32),
        });
      else await store.append(events);
    }
    await store.close();
    // The complete segments' index files (saved as each completed) and the live one's (at close),
    // each exactly what the segment's bytes give.
    assert.deepEqual(await indexFilesMatchSegments(dir), [
      '0000000000000000.idx',
      '0000000000000010.idx',
      '0000000000000020.idx',
      '0000000000000030.idx',
    ]);
    // Each segment saved once complete (in the background), the live one at close; nothing parsed.
    assert.deepEqual(store.indexStats(), {
      parsedRecords: 0,
      appendedRecords: 35,
      filesRead: 0,
      filesWritten: 4,
    });

    // A reopen answers queries and aggregates from the files read back, parsing no segment, and
    // keeps the live segment's index as it appends.
    // The answers of the same segments without index files (a copy), built from their bytes.
    const bare = join(tmp.dir, 'bare');
    cpSync(dir, bare, { recursive: true });
    rmSync(join(bare, 'index'), { recursive: true });
    const ro = await openFileStore({ dir: bare, readOnly: true });
    const ask = async (s: FileStore) => ({
      page: (await s.query({ rule: 'r2', order: 'desc', limit: 100 })).map((r) => r.seq),
      lines: (await s.queryLines({ reason: 'déni — ünïcode', limit: 100 })).map((r) => r.seq),
      counts: await s.aggregate({
        filter: { since: '2026-12-06T10:02:00.000Z' },
        groupBy: ['source', 'rule'],
        interval: '1h',
      }),
    });
    const expected = await ask(ro);
    assert.equal(ro.indexStats().parsedRecords, 35, 'the read-only store built its indexes from the bytes');
    await ro.close();
    store = await openFileStore({ dir, sealer, segmentRecords: 10, clock: () => new Date(clock) });
    assert.deepEqual(await ask(store), expected);
    assert.deepEqual(expected.page, [27, 22, 17, 7, 2]);
    await store.append([event(35), event(36), event(37), event(38), event(39), event(40)]);
    assert.equal((await store.query({ limit: 100, order: 'desc' }))[0]!.seq, 40);
    await store.close();
    assert.deepEqual(store.indexStats(), {
      parsedRecords: 0,
      appendedRecords: 6,
      filesRead: 4,
      filesWritten: 2,
    });
    assert.equal((await indexFilesMatchSegments(dir)).length, 5);
  } finally {
    tmp.cleanup();
  }
});

test('file store: what no index file covers is rebuilt from the bytes: a live index lost in a crash, a missing or cut file; prepareQueries builds it in the background of a start', async () => {
  const tmp = tempDir();
  try {
    const dir = join(tmp.dir, 'log');
    let store = await openFileStore({ dir, segmentRecords: 10 });
    await store.append(Array.from({ length: 25 }, (_, i) => decision(i, { rule: `r${i % 5}` })));
    await store.close();
    // As after a crash: the live segment's index was never saved; one complete segment lost its
    // file, another's was cut short.
    rmSync(join(dir, 'index', '0000000000000020.idx'));
    rmSync(join(dir, 'index', '0000000000000000.idx'));
    const cut = join(dir, 'index', '0000000000000010.idx');
    writeFileSync(cut, readFileSync(cut).subarray(0, 300));

    // An append over the live segment without its index queues a catch-up from the bytes.
    store = await openFileStore({ dir, segmentRecords: 10 });
    await store.append([decision(25, { rule: 'r0' })]);
    const r0 = async () => (await store.query({ rule: 'r0', order: 'desc', limit: 100 })).map((r) => r.seq);
    assert.deepEqual(await r0(), [25, 20, 15, 10, 5, 0]);
    // The catch-up parsed the live segment (its five records and the one appended), the query
    // the two older segments.
    assert.equal(store.indexStats().parsedRecords, 6 + 10 + 10);
    // Caught up, the writer indexes what it appends again.
    await store.append([decision(26, { rule: 'r0' })]);
    assert.deepEqual(await r0(), [26, 25, 20, 15, 10, 5, 0]);
    const afterQuery = store.indexStats();
    assert.equal(afterQuery.parsedRecords, 6 + 10 + 10);
    await store.prepareQueries();
    assert.equal(store.indexStats().parsedRecords, afterQuery.parsedRecords, 'nothing is built twice');
    await store.close();
    assert.equal((await indexFilesMatchSegments(dir)).length, 3);

    // prepareQueries on a start builds what is missing, and the first query then parses nothing.
    rmSync(join(dir, 'index', '0000000000000010.idx'));
    store = await openFileStore({ dir, segmentRecords: 10 });
    await store.prepareQueries();
    assert.equal(store.indexStats().parsedRecords, 10);
    assert.equal((await store.aggregate({ filter: { rule: 'r0' }, groupBy: [] }))[0]!.count, 7);
    assert.equal(store.indexStats().parsedRecords, 10);
    await store.close();
    assert.equal((await indexFilesMatchSegments(dir)).length, 3);
  } finally {
    tmp.cleanup();
  }
});

test('file store: past the 16 cached segments a start checks index files by their header, and one that no longer describes its segment is rebuilt; queries over every segment still answer', async () => {
  const tmp = tempDir();
  try {
    const dir = join(tmp.dir, 'log');
    let store = await openFileStore({ dir, segmentRecords: 2 });
    // 20 complete segments of 2 records and a live one of 1.
    await store.append(Array.from({ length: 41 }, (_, i) => decision(i, { rule: `r${i % 5}` })));
    await store.close();
    assert.equal((await indexFilesMatchSegments(dir)).length, 21);
    // The oldest segment touched since its index was saved: its index file no longer describes it.
    const oldest = join(dir, '0000000000000000.jsonl');
    const { atime } = statSync(oldest);
    utimesSync(oldest, atime, new Date(Date.now() + 60_000));

    store = await openFileStore({ dir, segmentRecords: 2 });
    await store.prepareQueries();
    // 16 newest read back, 4 older ones checked by their header, the oldest rebuilt and saved.
    assert.deepEqual(store.indexStats(), {
      parsedRecords: 2,
      appendedRecords: 0,
      filesRead: 20,
      filesWritten: 1,
    });
    const r0 = (await store.query({ rule: 'r0', order: 'desc', limit: 100 })).map((r) => r.seq);
    assert.deepEqual(r0, [40, 35, 30, 25, 20, 15, 10, 5, 0]);
    assert.equal((await store.aggregate({ filter: { rule: 'r1' }, groupBy: [] }))[0]!.count, 8);
    // The queries read the older segments' files back whole, and parsed nothing more.
    assert.equal(store.indexStats().parsedRecords, 2);
    await store.close();
    assert.equal((await indexFilesMatchSegments(dir)).length, 21);
  } finally {
    tmp.cleanup();
  }
});

test('file store: concurrent queries while appends go on see each record once', async () => {
  const tmp = tempDir();
  try {
    const store = await openFileStore({ dir: join(tmp.dir, 'log') });
    for (let round = 0; round < 5; round++) {
      const appending = store.append(Array.from({ length: 50 }, (_, i) => decision(round * 50 + i)));
      const pages = await Promise.all(
        Array.from({ length: 4 }, () => store.query({ type: 'authz.decision', limit: 1000 })),
      );
      await appending;
      for (const page of pages) {
        const seqs = page.map((r) => r.seq);
        assert.deepEqual(
          seqs,
          Array.from({ length: seqs.length }, (_, i) => i),
        );
      }
    }
    assert.equal((await store.query({ limit: 1000 })).length, 250);
    await store.close();
  } finally {
    tmp.cleanup();
  }
});
