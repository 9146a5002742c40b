import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Spool } from '../../audit/index.ts';
import { decision, tempDir } from './helpers.ts';

const actions = (events: { action?: string }[]) => events.map((e) => e.action);

test('spool: events come back in order across files, and acknowledged files are deleted', async () => {
  const tmp = tempDir();
  try {
    const spool = await Spool.open(tmp.dir, 100_000, 4096);
    assert.equal(await spool.append(Array.from({ length: 40 }, (_, i) => decision(i))), 40);
    assert.equal(spool.depth, 40);
    assert.ok(readdirSync(tmp.dir).filter((f) => f.startsWith('spool-')).length > 1, 'several files');
    const seen: (string | undefined)[] = [];
    while (spool.depth) {
      const batch = await spool.peek(7);
      seen.push(...actions(batch));
      await spool.ack(batch.length);
    }
    assert.deepEqual(
      seen,
      Array.from({ length: 40 }, (_, i) => `GET /orders/${i}`),
    );
    assert.equal(spool.bytes, 0);
    assert.deepEqual(
      readdirSync(tmp.dir).filter((f) => f.startsWith('spool-')),
      [],
    );
  } finally {
    tmp.cleanup();
  }
});

test('spool: a reopened spool resumes after the last acknowledged event and drops a torn last line', async () => {
  const tmp = tempDir();
  try {
    let spool = await Spool.open(tmp.dir, 100_000);
    await spool.append(Array.from({ length: 10 }, (_, i) => decision(i)));
    await spool.ack((await spool.peek(4)).length);
    const [file] = readdirSync(tmp.dir).filter((f) => f.startsWith('spool-'));
    appendFileSync(join(tmp.dir, file!), '{"type":"authz.dec');
    spool = await Spool.open(tmp.dir, 100_000);
    assert.equal(spool.depth, 6);
    assert.deepEqual(
      actions(await spool.peek(100)),
      Array.from({ length: 6 }, (_, i) => `GET /orders/${i + 4}`),
    );
    await spool.append([decision(10)]);
    assert.equal(spool.depth, 7);
  } finally {
    tmp.cleanup();
  }
});

test('spool: append keeps only what fits under maxBytes and reports how many', async () => {
  const tmp = tempDir();
  try {
    const spool = await Spool.open(tmp.dir, 2048);
    const kept = await spool.append(Array.from({ length: 50 }, (_, i) => decision(i)));
    assert.ok(kept > 0 && kept < 50);
    assert.ok(spool.bytes <= 2048);
    assert.equal(await spool.diskBytes(), spool.bytes);
  } finally {
    tmp.cleanup();
  }
});
