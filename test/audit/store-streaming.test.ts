// Bounded memory whatever the events: a log of maximum-size events, in one segment far larger
// than any chunk the stores read, restarts a collector and verifies in a child process whose
// peak RSS grows by much less than the log (a store that read a segment as one string would
// grow by more than the segment). bench/audit/big-log.ts runs the same at 1 GB.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { statSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createSealer, loadCheckpointKey, openFileStore } from '../../audit/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { collectorConfig } from './collector-harness.ts';
import { maxSizeEvent, tempDir } from './helpers.ts';

const CHILD = new URL('./fixtures/store-rss-child.ts', import.meta.url).pathname;
const LOG_BYTES = 48 * 1_048_576;

async function peak(
  pki: TestPki,
  dir: string,
): Promise<{ size: number; verdict: boolean; maxRssKiB: number }> {
  const input = {
    listen: { host: '127.0.0.1', port: 0 },
    tls: { cert: pki.leaf('audit').certFile, key: pki.leaf('audit').keyFile, trustBundle: pki.rootFile },
    identities: pki.identitiesDir,
    origin: 'example.org/audit',
    dataDir: join(dir, 'data'),
    store: `file:${join(dir, 'log')}`,
    segments: { records: 1_000_000, bytes: 1024 * 1_048_576 },
  };
  collectorConfig(pki, dir, input as never); // the same config the harness would accept
  const { stdout } = await promisify(execFile)(process.execPath, [CHILD, JSON.stringify(input)], {
    maxBuffer: 1_048_576,
  });
  return JSON.parse(stdout) as { size: number; verdict: boolean; maxRssKiB: number };
}

test(
  'a log of maximum-size events in one large segment restarts and verifies with memory that grows far less than the log',
  { timeout: 90_000 },
  async () => {
    const pki = await makeTestPki();
    const tmp = tempDir();
    try {
      // The same collector key writes the log (sealed) and restarts on it.
      const big = join(tmp.dir, 'big');
      const signer = loadCheckpointKey(join(big, 'data'), 'example.org/audit');
      const store = await openFileStore({
        dir: join(big, 'log'),
        sealer: createSealer(signer, 'example.org/audit'),
        segmentRecords: 1_000_000,
        segmentBytes: 1024 * 1_048_576,
      });
      let bytes = 0;
      for (let i = 0; bytes < LOG_BYTES; i += 8) {
        await store.append(Array.from({ length: 8 }, (_, k) => maxSizeEvent(i + k)));
        bytes = statSync(join(big, 'log', '0000000000000000.jsonl')).size;
      }
      const records = await store.size();
      await store.close();
      assert.equal(readdirSync(join(big, 'log')).filter((f) => f.endsWith('.jsonl')).length, 1);

      const empty = await peak(pki, join(tmp.dir, 'empty'));
      const full = await peak(pki, big);
      assert.equal(full.size, records);
      assert.ok(full.verdict, 'the log verifies, every record sealed');
      const growthMiB = (full.maxRssKiB - empty.maxRssKiB) / 1024;
      assert.ok(
        growthMiB < LOG_BYTES / 1_048_576 / 2,
        `peak RSS grew by ${growthMiB.toFixed(1)} MiB for a ${(bytes / 1_048_576).toFixed(0)} MiB log (empty: ${(empty.maxRssKiB / 1024).toFixed(0)} MiB)`,
      );
      console.log(
        `# ${(bytes / 1_048_576).toFixed(0)} MiB log of ${records} maximum-size events: peak RSS ${(full.maxRssKiB / 1024).toFixed(0)} MiB (empty log ${(empty.maxRssKiB / 1024).toFixed(0)} MiB)`,
      );
    } finally {
      tmp.cleanup();
      pki.cleanup();
    }
  },
);
