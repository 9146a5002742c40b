import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Spool } from '../../audit/index.ts';
import { decision, tempDir } from './helpers.ts';

const lines = (from: number, n: number) =>
  Array.from({ length: n }, (_, i) => JSON.stringify(decision(from + i)));
const actions = (body: string) =>
  (JSON.parse(body) as { events: { action?: string }[] }).events.map((e) => e.action);
const expected = (from: number, n: number) => Array.from({ length: n }, (_, i) => `GET /orders/${from + i}`);

test('spool: events come back in order across files, in batches keyed by the spool id and first index; delivered files are deleted', async () => {
  const tmp = tempDir();
  try {
    const spool = await Spool.open(tmp.dir, 100_000, 4096);
    assert.equal(await spool.append(lines(0, 40)), 40);
    assert.equal(spool.depth, 40);
    assert.ok(readdirSync(tmp.dir).filter((f) => f.startsWith('spool-')).length > 1, 'several files');
    const seen: (string | undefined)[] = [];
    const keys: string[] = [];
    for (let b = await spool.nextBatch(7, 1_000_000); b; b = await spool.nextBatch(7, 1_000_000)) {
      seen.push(...actions(b.body));
      keys.push(b.key);
      assert.equal(b.key, `${spool.id}:${b.first}`);
      assert.match(b.key, /^[A-Za-z0-9._:-]{1,128}$/);
      await spool.ack(b);
    }
    assert.deepEqual(seen, expected(0, 40));
    assert.equal(new Set(keys).size, keys.length, 'every batch has its own key');
    assert.ok(readdirSync(tmp.dir).filter((f) => f.startsWith('spool-')).length <= 1);
  } finally {
    tmp.cleanup();
  }
});

test('spool: a batch begun before a restart comes back with the same key and the same bytes, though more events arrived', async () => {
  const tmp = tempDir();
  try {
    let spool = await Spool.open(tmp.dir, 100_000);
    await spool.append(lines(0, 3));
    const first = (await spool.nextBatch(100, 1_000_000))!;
    assert.equal(first.count, 3);
    await spool.append(lines(3, 10));
    // The process dies here, the batch sent but not acknowledged.
    spool = await Spool.open(tmp.dir, 100_000);
    const again = (await spool.nextBatch(100, 1_000_000))!;
    assert.deepEqual(again, first);
    await spool.ack(again);
    const next = (await spool.nextBatch(100, 1_000_000))!;
    assert.deepEqual(actions(next.body), expected(3, 10));
    assert.notEqual(next.key, first.key);
  } finally {
    tmp.cleanup();
  }
});

test('spool: indexes and keys never repeat, even after every file is delivered and deleted', async () => {
  const tmp = tempDir();
  try {
    let spool = await Spool.open(tmp.dir, 100_000, 4096);
    const keys = new Set<string>();
    for (let round = 0; round < 3; round++) {
      await spool.append(lines(round * 30, 30));
      for (let b = await spool.nextBatch(8, 1_000_000); b; b = await spool.nextBatch(8, 1_000_000)) {
        assert.ok(!keys.has(b.key), `key ${b.key} reused`);
        keys.add(b.key);
        await spool.ack(b);
      }
      await spool.close();
      spool = await Spool.open(tmp.dir, 100_000, 4096);
    }
    assert.equal(keys.size, 12);
  } finally {
    tmp.cleanup();
  }
});

test('spool: a reopened spool resumes after the last acknowledged batch, drops a torn last line and reports it', async () => {
  const tmp = tempDir();
  try {
    let spool = await Spool.open(tmp.dir, 100_000);
    await spool.append(lines(0, 10));
    await spool.ack((await spool.nextBatch(4, 1_000_000))!);
    const [file] = readdirSync(tmp.dir).filter((f) => f.startsWith('spool-'));
    appendFileSync(join(tmp.dir, file!), '{"type":"authz.dec');
    spool = await Spool.open(tmp.dir, 100_000);
    assert.equal(spool.previousRun.tornBytes, 18);
    assert.equal(spool.depth, 6);
    assert.deepEqual(actions((await spool.nextBatch(100, 1_000_000))!.body), expected(4, 6));
    await spool.append(lines(10, 1));
    assert.equal(spool.depth, 7);
  } finally {
    tmp.cleanup();
  }
});

test('spool: a batch body stops at maxBytes but always holds at least one event', async () => {
  const tmp = tempDir();
  try {
    const spool = await Spool.open(tmp.dir, 100_000);
    await spool.append(lines(0, 10));
    const one = Buffer.byteLength(lines(0, 1)[0]!);
    const b = (await spool.nextBatch(100, 12 + 3 * (one + 1)))!;
    assert.equal(b.count, 3);
    assert.ok(Buffer.byteLength(b.body) <= 12 + 3 * (one + 1));
    await spool.ack(b);
    assert.equal((await spool.nextBatch(100, 1))!.count, 1);
  } finally {
    tmp.cleanup();
  }
});

test("spool: a batch body is the spooled lines' exact bytes joined by commas (multi-byte text, U+2028, escaped newlines), whether the lines were appended in this process or read back from disk, and maxBytes counts bytes", async () => {
  const tmp = tempDir();
  try {
    // Two-, three- and four-byte UTF-8, a raw U+2028 (JSON.stringify leaves it as is) and an
    // escaped newline: only the spool's own separators may become commas.
    const texts = ['é', '€', '😀', '\u2028', 'a\nb', 'plain'];
    const spooled = Array.from({ length: 400 }, (_, i) =>
      JSON.stringify(decision(i, { action: `GET /${texts[i % texts.length]!.repeat(1 + (i % 7))}/${i}` })),
    );
    const bodyOf = (from: number, n: number) => `{"events":[${spooled.slice(from, from + n).join(',')}]}`;
    let spool = await Spool.open(tmp.dir, 10_000_000, 1_048_576);
    assert.equal(await spool.append(spooled.slice(0, 150)), 150);
    // Bounds at a line's last byte: counted in bytes (not characters), newline included.
    const bound = (n: number) =>
      12 + spooled.slice(0, n).reduce((sum, l) => sum + Buffer.byteLength(l) + 1, 0);
    const six = (await spool.nextBatch(100, bound(7) - 1))!;
    assert.equal(six.count, 6);
    assert.equal(six.body, bodyOf(0, 6));
    await spool.ack(six);
    const first = (await spool.nextBatch(100, bound(13) - bound(6) + 12))!;
    assert.equal(first.count, 7);
    assert.equal(first.body, bodyOf(6, 7));
    assert.equal(Buffer.byteLength(first.body), bound(13) - bound(6) + 12);
    await spool.ack(first);
    // Read back from disk by a new process, then appended to past the loaded bytes.
    spool = await Spool.open(tmp.dir, 10_000_000, 1_048_576);
    const second = (await spool.nextBatch(50, 10_000_000))!;
    assert.equal(second.first, 13);
    assert.equal(second.body, bodyOf(13, 50));
    await spool.ack(second);
    assert.equal(await spool.append(spooled.slice(150)), 250);
    let next = 63;
    for (let b = await spool.nextBatch(90, 10_000_000); b; b = await spool.nextBatch(90, 10_000_000)) {
      assert.equal(b.first, next);
      assert.equal(b.body, bodyOf(next, b.count));
      assert.deepEqual(
        (JSON.parse(b.body) as { events: unknown[] }).events,
        spooled.slice(next, next + b.count).map((l) => JSON.parse(l) as unknown),
      );
      next += b.count;
      await spool.ack(b);
    }
    assert.equal(next, 400);
  } finally {
    tmp.cleanup();
  }
});

test('spool: append keeps only what fits under maxBytes and reports how many', async () => {
  const tmp = tempDir();
  try {
    const spool = await Spool.open(tmp.dir, 2048);
    const kept = await spool.append(lines(0, 50));
    assert.ok(kept > 0 && kept < 50);
    assert.ok(spool.bytes <= 2048);
    assert.equal(await spool.diskBytes(), spool.bytes);
  } finally {
    tmp.cleanup();
  }
});

test('spool: an owner that never closed is reported by the next open with what it said about itself; a closed one is not', async () => {
  const tmp = tempDir();
  try {
    let spool = await Spool.open(tmp.dir, 100_000);
    assert.equal(spool.previousRun.clean, true);
    await spool.begin({ failMode: 'open', windowEvents: 50 });
    // No close: as after a SIGKILL.
    spool = await Spool.open(tmp.dir, 100_000);
    assert.equal(spool.previousRun.clean, false);
    assert.equal(spool.previousRun.owner?.windowEvents, 50);
    assert.equal(spool.previousRun.owner?.pid, process.pid);
    await spool.begin({ failMode: 'open', windowEvents: 50 });
    await spool.close();
    spool = await Spool.open(tmp.dir, 100_000);
    assert.equal(spool.previousRun.clean, true);
  } finally {
    tmp.cleanup();
  }
});

test('spool: a batch set aside is kept in a file beside the spool with its key and events, and the spool moves on', async () => {
  const tmp = tempDir();
  try {
    const spool = await Spool.open(tmp.dir, 100_000);
    await spool.append(lines(0, 5));
    const b = (await spool.nextBatch(2, 1_000_000))!;
    const file = await spool.reject(b, '422 ERR_AUDIT_IDEMPOTENCY_MISMATCH');
    const kept = JSON.parse(readFileSync(file, 'utf8')) as {
      key: string;
      why: string;
      body: { events: unknown[] };
    };
    assert.equal(kept.key, b.key);
    assert.equal(kept.body.events.length, 2);
    assert.equal(spool.depth, 3);
  } finally {
    tmp.cleanup();
  }
});

test('spool: events whose file was removed by hand are skipped and counted as missing, and the rest still comes', async () => {
  const tmp = tempDir();
  try {
    let spool = await Spool.open(tmp.dir, 100_000, 4096);
    await spool.append(lines(0, 40));
    await spool.close();
    const files = readdirSync(tmp.dir)
      .filter((f) => f.startsWith('spool-'))
      .sort();
    assert.ok(files.length >= 2);
    rmSync(join(tmp.dir, files[0]!));
    spool = await Spool.open(tmp.dir, 100_000, 4096);
    const b = (await spool.nextBatch(100, 1_000_000))!;
    const first = Number(/(\d+)/.exec(files[1]!)![1]);
    assert.equal(spool.missing, first);
    assert.equal(b.first, first);
    assert.deepEqual(actions(b.body), expected(first, b.count));
  } finally {
    tmp.cleanup();
  }
});

test('spool: a file removed or cut short while the spool runs is counted missing from the cut on, and delivery goes on', async () => {
  const tmp = tempDir();
  try {
    const spool = await Spool.open(tmp.dir, 100_000, 4096);
    await spool.append(lines(0, 60));
    const files = readdirSync(tmp.dir)
      .filter((f) => f.startsWith('spool-'))
      .sort();
    assert.ok(files.length >= 3, `${files.length} files`);
    const firstOf = (f: string) => Number(/(\d+)/.exec(f)![1]);
    // The first file loses its last lines (cut at a line boundary), the second goes altogether.
    const first = join(tmp.dir, files[0]!);
    const kept = readFileSync(first, 'utf8').split('\n').slice(0, 3);
    writeFileSync(first, `${kept.join('\n')}\n`);
    rmSync(join(tmp.dir, files[1]!));
    const got: (string | undefined)[] = [];
    for (let b = await spool.nextBatch(100, 1_000_000); b; b = await spool.nextBatch(100, 1_000_000)) {
      got.push(...actions(b.body));
      await spool.ack(b);
    }
    const third = firstOf(files[2]!);
    assert.deepEqual(got, [...expected(0, 3), ...expected(third, 60 - third)]);
    assert.equal(spool.missing, third - 3);
    await spool.close();
  } finally {
    tmp.cleanup();
  }
});

test('spool: a torn or garbled cursor slot is ignored and the other slot, one write older, is used', async () => {
  const tmp = tempDir();
  try {
    let spool = await Spool.open(tmp.dir, 100_000);
    await spool.append(lines(0, 10));
    const b1 = (await spool.nextBatch(3, 1_000_000))!;
    await spool.ack(b1);
    const b2 = (await spool.nextBatch(3, 1_000_000))!;
    await spool.close();
    // The newer slot (the one holding batch b2) is spoiled, as by a write torn by a power cut.
    const slots = ['cursor-a.json', 'cursor-b.json'].map((n) => join(tmp.dir, n));
    const newest = slots
      .map((p) => ({ p, seq: Number(/"seq":(\d+)/.exec(readFileSync(p, 'utf8'))![1]) }))
      .sort((a, b) => b.seq - a.seq)[0]!.p;
    const text = readFileSync(newest, 'utf8');
    writeFileSync(newest, text.replace('"next":', '"nxet":'));
    spool = await Spool.open(tmp.dir, 100_000);
    const b = (await spool.nextBatch(100, 1_000_000))!;
    assert.equal(b.first, b2.first, 'resumes after the acknowledged batch');
    assert.ok(b.key.startsWith(`${b1.key.split(':')[0]}:`), 'same spool id');
  } finally {
    tmp.cleanup();
  }
});

test('spool: events appended without sync are not sent until sync() makes them durable', async () => {
  const tmp = tempDir();
  try {
    const spool = await Spool.open(tmp.dir, 1_000_000, 4096);
    await spool.append(lines(0, 40), false);
    assert.equal(spool.depth, 40);
    assert.equal(spool.unsynced, 40);
    assert.equal(await spool.nextBatch(100, 1_000_000), undefined);
    await spool.sync();
    assert.equal(spool.unsynced, 0);
    const seen: (string | undefined)[] = [];
    for (let b = await spool.nextBatch(100, 1_000_000); b; b = await spool.nextBatch(100, 1_000_000)) {
      seen.push(...actions(b.body));
      await spool.ack(b);
    }
    assert.deepEqual(seen, expected(0, 40));
  } finally {
    tmp.cleanup();
  }
});

test('spool: dropping a torn last line on open never puts the durable lines before it at risk, even when the repair cannot write (a file-size limit stands for a full disk)', async () => {
  const tmp = tempDir();
  try {
    const spool = await Spool.open(tmp.dir, 10_000_000);
    await spool.append(lines(0, 1000));
    await spool.close();
    const [file] = readdirSync(tmp.dir).filter((f) => f.startsWith('spool-'));
    const path = join(tmp.dir, file!);
    const durable = readFileSync(path, 'utf8');
    assert.ok(durable.length > 200_000, `${durable.length} bytes`);
    appendFileSync(path, '{"type":"authz.dec');
    // A process that may write files of at most 40 KiB (SIGXFSZ past it) opens the spool.
    const spoolModule = new URL('../../audit/index.ts', import.meta.url).pathname;
    const script = `const { Spool } = await import(${JSON.stringify(spoolModule)}); await Spool.open(${JSON.stringify(tmp.dir)}, 10_000_000);`;
    const result = spawnSync(
      'bash',
      ['-c', 'ulimit -f 40 && exec "$0" --input-type=module -e "$1"', process.execPath, script],
      { encoding: 'utf8', timeout: 20_000 },
    );
    assert.equal(result.error, undefined);
    assert.equal(
      readFileSync(path, 'utf8'),
      durable,
      `child: ${result.status} ${result.signal} ${result.stderr}`,
    );
    const reopened = await Spool.open(tmp.dir, 10_000_000);
    assert.equal(reopened.depth, 1000);
    await reopened.close();
  } finally {
    tmp.cleanup();
  }
});

// The audit client appends (fsync in the background, failMode open) while its shipper
// acknowledges batches; an acknowledgement drops a fully delivered file, tail included, with
// awaits (close, unlink) in between. An append started at any moment of that must land in a file
// that stays: before the fix, one started during the unlink wrote into the file being removed and
// its events went "missing". The append is started after 0, 1, 2, ... turns of the event loop, so
// that some start inside each await of the drop.
test('spool: an append that starts while an acknowledgement drops the delivered tail file is kept', async () => {
  const big = (from: number, n: number) =>
    Array.from({ length: n }, (_, i) => JSON.stringify({ ...decision(from + i), reason: 'x'.repeat(300) }));
  for (let turns = 0; turns < 60; turns++) {
    const tmp = tempDir();
    try {
      const spool = await Spool.open(tmp.dir, 10_000_000, 4096);
      assert.equal(await spool.append(big(0, 6)), 6);
      const batch = (await spool.nextBatch(100, 1_000_000))!;
      assert.equal(batch.count, 6);
      const acked = spool.ack(batch);
      for (let t = 0; t < turns; t++) await new Promise((resolve) => setImmediate(resolve));
      assert.equal(await spool.append(big(6, 2), false), 2);
      await acked;
      await spool.sync();
      const got: (string | undefined)[] = [];
      for (let b = await spool.nextBatch(100, 1_000_000); b; b = await spool.nextBatch(100, 1_000_000)) {
        got.push(...actions(b.body));
        await spool.ack(b);
      }
      assert.equal(spool.missing, 0, `append after ${turns} turns: events counted missing`);
      assert.deepEqual(got, expected(6, 2), `append after ${turns} turns`);
      await spool.close();
    } finally {
      tmp.cleanup();
    }
  }
});

// The audit client appends (fsync in the background, failMode open) while its shipper takes
// batches and acknowledges them, and a timer fsyncs: three loops on one spool. Interleavings at
// random, with files that fill after a few lines so that delivered files are dropped while appends
// start: every event must come out once, in order, with none counted missing. (Before the fix of
// the dropped tail file, an append starting during its unlink wrote into it: a few events in 30
// such rounds went "missing".)
test('spool: concurrent appends, fsyncs, batches and acks deliver every event once, in order', async () => {
  const rnd = (n: number) => Math.floor(Math.random() * n);
  const pause = () =>
    new Promise<void>((resolve) => {
      const k = rnd(4);
      if (k === 0) resolve();
      else if (k === 1) setImmediate(resolve);
      else if (k === 2) process.nextTick(resolve);
      else setTimeout(resolve, rnd(3));
    });
  const deadline = Date.now() + 3_000;
  let rounds = 0;
  for (; rounds < 40 && (rounds < 4 || Date.now() < deadline); rounds++) {
    const tmp = tempDir();
    try {
      const spool = await Spool.open(tmp.dir, 50_000_000, 1024 + rnd(2048));
      const total = 300 + rnd(300);
      const got: number[] = [];
      let appended = 0;
      let done = false;
      let syncing: Promise<void> | undefined;
      const sync = async () => {
        while (syncing) await syncing;
        if (spool.unsynced === 0) return;
        syncing = spool.sync().finally(() => (syncing = undefined));
        await syncing;
      };
      const writer = async () => {
        while (appended < total) {
          const batch = Array.from({ length: Math.min(1 + rnd(3), total - appended) }, (_, i) =>
            JSON.stringify({ ...decision(appended + i), reason: 'x'.repeat(rnd(600)) }),
          );
          assert.equal(await spool.append(batch, false), batch.length);
          appended += batch.length;
          if (rnd(3) === 0) void sync();
          await pause();
        }
        await sync();
        done = true;
      };
      const shipper = async () => {
        for (;;) {
          const b = await spool.nextBatch(1 + rnd(20), 2_000 + rnd(20_000));
          if (!b) {
            if (done && spool.depth === 0) return;
            await pause();
            continue;
          }
          for (const a of actions(b.body)) got.push(Number(a!.split('/').pop()));
          await pause();
          await spool.ack(b);
        }
      };
      await Promise.all([writer(), shipper()]);
      assert.equal(spool.missing, 0, `round ${rounds}: events counted missing`);
      assert.deepEqual(
        got,
        Array.from({ length: total }, (_, i) => i),
        `round ${rounds}`,
      );
      await spool.close();
    } finally {
      tmp.cleanup();
    }
  }
  assert.ok(rounds >= 4);
});
