// The state store contract run against memory, file and a real PostgreSQL (a schema per run),
// plus what only the file store has to say: a corrupt file stops start-up with a clear message.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStateStore, MemoryStateStore, PostgresStateStore } from '../../../sts/index.ts';
import { stateStoreConformance } from './conformance.ts';
import { PG_URL, pgSchema } from '../../audit/helpers.ts';

stateStoreConformance('memory', async () => ({ store: new MemoryStateStore(), cleanup: async () => {} }));

stateStoreConformance('file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sts-state-'));
  const store = new FileStateStore({ dir, now: () => 1_800_000_000_000 });
  return {
    store,
    twin: async () => new FileStateStore({ dir, now: () => 1_800_000_000_000 }),
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
  };
});

stateStoreConformance('postgres', async () => {
  const { schema, drop } = await pgSchema('sts_state');
  const open = () => PostgresStateStore.open({ connectionString: PG_URL, schema });
  const store = await open();
  return {
    store,
    twin: open,
    shared: true,
    cleanup: async () => {
      await store.close();
      await drop();
    },
  };
});

describe('file state store', () => {
  test('writes its file 0600 and refuses a corrupt one with ERR_STS_STATE_CORRUPT naming it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sts-state-'));
    try {
      const store = new FileStateStore({ dir });
      await store.revoke({ kind: 'jti', value: 'x', expiresAt: Date.now() + 60_000 });
      assert.equal(statSync(join(dir, 'sts-state.json')).mode & 0o777, 0o600);
      for (const text of [
        '{',
        '{"format":"other"}',
        '[]',
        '{"format":"portcullis-sts-state/v1","joinTokens":[{}],"revocations":[]}',
      ]) {
        writeFileSync(join(dir, 'sts-state.json'), text);
        assert.throws(
          () => new FileStateStore({ dir }),
          (err: Error & { code?: string }) => {
            assert.equal(err.code, 'ERR_STS_STATE_CORRUPT');
            assert.ok(err.message.includes(join(dir, 'sts-state.json')));
            return true;
          },
        );
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('PostgreSQL that cannot be reached is ERR_STS_STATE_UNAVAILABLE without the connection string', async () => {
    await assert.rejects(
      PostgresStateStore.open({ connectionString: 'postgres://user:s3cret@127.0.0.1:1/none' }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_STS_STATE_UNAVAILABLE');
        assert.ok(!err.message.includes('s3cret'));
        return true;
      },
    );
  });
});
