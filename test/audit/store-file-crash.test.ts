import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { openFileStore, verifyStore } from '../../audit/index.ts';
import { decision, tempDir } from './helpers.ts';

const CHILD = new URL('./fixtures/append-child.ts', import.meta.url).pathname;

test(
  'file store: after SIGKILL mid-append the log verifies, holds every acknowledged record, and appends continue',
  { timeout: 60_000 },
  async () => {
    const tmp = tempDir();
    try {
      const dir = join(tmp.dir, 'log');
      const child = spawn(process.execPath, [CHILD, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
      const acked = new Set<number>();
      let buffered = '';
      const enough = new Promise<void>((resolve, reject) => {
        child.on('exit', (code) => reject(new Error(`child exited early with ${code}`)));
        child.stdout.on('data', (chunk: Buffer) => {
          buffered += chunk.toString();
          const lines = buffered.split('\n');
          buffered = lines.pop()!;
          for (const l of lines) if (l !== 'ready') acked.add(Number(l));
          // Kill once well into a run of appends, with many batches in flight.
          if (acked.size >= 20_000) resolve();
        });
      });
      await enough;
      child.removeAllListeners('exit');
      const exited = new Promise((r) => child.on('exit', r));
      child.kill('SIGKILL');
      await exited;
      // Only what the child printed before it died counts as acknowledged.
      const maxAcked = Math.max(...acked);

      const store = await openFileStore({ dir, segmentRecords: 5_000 });
      const size = await store.size();
      assert.ok(size > maxAcked, `log size ${size} must exceed the largest acknowledged seq ${maxAcked}`);
      const seen = new Set<number>();
      for await (const r of store.read(0)) seen.add(r.seq);
      for (const seq of acked) assert.ok(seen.has(seq), `acknowledged seq ${seq} is missing`);
      const verdict = await verifyStore(store);
      assert.ok(verdict.ok, JSON.stringify(verdict));
      const [next] = await store.append([decision(0)]);
      assert.equal(next!.seq, size);
      assert.equal((await verifyStore(store)).ok, true);
      await store.close();
    } finally {
      tmp.cleanup();
    }
  },
);

test(
  'file store: when the disk fills mid-write (a file-size limit stands for it) no acknowledged record is lost',
  { timeout: 60_000 },
  async () => {
    const tmp = tempDir();
    try {
      const dir = join(tmp.dir, 'log');
      // The child may write files of at most 96 KiB: the write that crosses it is cut short by
      // the OS without an error, as on a full disk; the next one fails.
      const child = spawn('bash', ['-c', 'ulimit -f 96 && exec "$0" "$@"', process.execPath, CHILD, dir], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stderr.resume();
      const acked = new Set<number>();
      let buffered = '';
      child.stdout.on('data', (chunk: Buffer) => {
        buffered += chunk.toString();
        const lines = buffered.split('\n');
        buffered = lines.pop()!;
        for (const l of lines) if (l !== 'ready') acked.add(Number(l));
      });
      await new Promise((r) => child.on('exit', r));
      assert.ok(acked.size > 100, `the child acknowledged ${acked.size} records before the disk filled`);

      const store = await openFileStore({ dir, segmentRecords: 5_000 });
      const seen = new Set<number>();
      for await (const r of store.read(0)) seen.add(r.seq);
      const lost = [...acked].filter((seq) => !seen.has(seq));
      assert.deepEqual(lost, [], 'acknowledged records missing after the disk filled');
      assert.ok((await verifyStore(store)).ok);
      await store.close();
    } finally {
      tmp.cleanup();
    }
  },
);
