import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PendingLines, Spool } from '../../audit/index.ts';
import { tempDir } from './helpers.ts';

test('pending lines: events come back as newline-ended UTF-8 in emit order, across growth, with each waiter at its place', () => {
  const pending = new PendingLines();
  const lines = Array.from({ length: 3_000 }, (_, i) => JSON.stringify({ i, text: '€😀é'.repeat(i % 40) }));
  const waited: number[] = [];
  lines.forEach((l, i) =>
    pending.push(l, i % 7 === 0 ? { resolve: () => waited.push(i), reject: () => assert.fail() } : undefined),
  );
  assert.equal(pending.length, 3_000);
  const taken = pending.take();
  assert.equal(pending.length, 0);
  assert.equal(taken.count, 3_000);
  assert.equal(taken.bytes.toString('utf8'), lines.map((l) => `${l}\n`).join(''));
  assert.deepEqual(
    taken.waiters.map((w) => w.at),
    lines.flatMap((_, i) => (i % 7 === 0 ? [i] : [])),
  );
  for (const w of taken.waiters) w.resolve();
  assert.equal(waited.length, Math.ceil(3_000 / 7));
});

test('pending lines: events pushed while taken bytes are out never touch them; released buffers are reused', () => {
  const pending = new PendingLines();
  pending.push('{"a":1}');
  const first = pending.take();
  pending.push('{"b":22}');
  pending.push('{"c":333}');
  // Not released yet: the first batch's bytes are intact.
  assert.equal(first.bytes.toString(), '{"a":1}\n');
  pending.release(first);
  const second = pending.take();
  assert.equal(second.bytes.toString(), '{"b":22}\n{"c":333}\n');
  assert.equal(second.waiters.length, 0);
  pending.push('{"d":4}');
  // The released first buffer now holds the next events, and the second's bytes are untouched.
  assert.equal(second.bytes.toString(), '{"b":22}\n{"c":333}\n');
  const third = pending.take();
  assert.equal(third.buffer, first.buffer);
  assert.equal(third.bytes.toString(), '{"d":4}\n');
});

test('pending lines: a waiter of an event pushed while a batch without waiters is out belongs to the next batch, not to that one', () => {
  const pending = new PendingLines();
  pending.push('{"emitted":1}');
  const out = pending.take();
  let told = false;
  pending.push('{"recorded":2}', { resolve: () => (told = true), reject: () => assert.fail() });
  // The write of `out` ends: only its own waiters hear of it.
  for (const w of out.waiters) w.resolve();
  assert.equal(out.waiters.length, 0);
  assert.equal(told, false, 'told its event was kept before it was written');
  pending.release(out);
  const next = pending.take();
  assert.deepEqual(
    next.waiters.map((w) => w.at),
    [0],
  );
  next.waiters[0]!.resolve();
  assert.equal(told, true);
});

test('spool: appendBytes refuses bytes whose lines do not match the count, and keeps nothing of them', async () => {
  const tmp = tempDir();
  try {
    const spool = await Spool.open(tmp.dir, 100_000);
    await assert.rejects(spool.appendBytes(Buffer.from('{"a":1}'), 1), /last line has no newline/);
    await assert.rejects(spool.appendBytes(Buffer.from('{"a":1}\n'), 2), /2 lines announced, 1 found/);
    await assert.rejects(
      spool.appendBytes(Buffer.from('{"a":1}\n{"b":2}\n'), 1),
      /1 lines announced, more found/,
    );
    await assert.rejects(spool.appendBytes(Buffer.from('{"a":1}\n'), 0), /0 lines announced, more found/);
    // A string holding a raw newline would be two lines: refused, not split.
    await assert.rejects(spool.append(['{"a":\n1}']), /1 lines announced, more found/);
    assert.equal(spool.depth, 0);
    assert.equal(await spool.appendBytes(Buffer.from('{"a":1}\n{"b":2}\n'), 2), 2);
    assert.equal(spool.depth, 2);
  } finally {
    tmp.cleanup();
  }
});
