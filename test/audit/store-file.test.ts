import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, readFileSync, readdirSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { AuditStore, FileStore } from '../../audit/index.ts';
import { openFileStore, verifyStore } from '../../audit/index.ts';
import { storeConformance } from './store-conformance.ts';
import { decision, tempDir } from './helpers.ts';

const root = tempDir();
let n = 0;

function segmentFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.jsonl'))
    .sort()
    .map((f) => join(dir, f));
}

storeConformance('file store', () => ({
  // Four records per segment, so that the suite crosses segment boundaries.
  open: (clock) => openFileStore({ dir: join(root.dir, `s${n++}`), segmentRecords: 4, clock }),
  async reopen(store, clock) {
    await store.close();
    return openFileStore({ dir: (store as FileStore).dir, segmentRecords: 4, clock });
  },
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
