import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { CollectorApi } from '../../audit/index.ts';
import {
  createSealer,
  loadCheckpointKey,
  openFileStore,
  DATA_FILES,
  createCollectorApi,
  fetchCheckpoint,
  verifyInclusionBundle,
} from '../../audit/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { call, startTestCollector, workloadAgent } from './collector-harness.ts';
import { decision, tempDir } from './helpers.ts';

const COLLECTOR_ID = 'spiffe://example.org/ns/portcullis/sa/audit';
let pki: TestPki;

before(async () => {
  pki = await makeTestPki();
});
after(() => pki.cleanup());

function api(url: string, name = 'security-console', collectorId = COLLECTOR_ID): CollectorApi {
  const leaf = pki.leaf(name);
  return createCollectorApi({
    url,
    tls: { cert: leaf.certFile, key: leaf.keyFile, trustBundle: pki.rootFile },
    collectorId,
  });
}

/** Runs a test body with a temp dir; whatever it `own`s is closed afterwards, pass or fail. */
async function scoped(
  body: (dir: string, own: <T extends { close(): Promise<void> }>(c: T) => T) => Promise<void>,
): Promise<void> {
  const tmp = tempDir();
  const owned: { close(): Promise<void> }[] = [];
  try {
    await body(tmp.dir, (c) => {
      owned.push(c);
      return c;
    });
  } finally {
    for (const c of owned.reverse()) await c.close().catch(() => {});
    tmp.cleanup();
  }
}

test('fetchCheckpoint refuses a collector whose log was rewritten since the saved checkpoint', () =>
  scoped(async (dir, own) => {
    let collector = own(await startTestCollector(pki, dir));
    const port = collector.port;
    const agent = own(workloadAgent(pki, pki.leaf('web')));
    await call(agent, `${collector.url}/v1/events`, {
      method: 'POST',
      body: { events: [0, 1, 2, 3].map((i) => decision(i)) },
    });
    await collector.log.checkpoint();
    let client = own(api(collector.url));
    const saved = await fetchCheckpoint(client, collector.verifierKey);
    assert.equal(saved.body.size, 4);
    await client.close();
    await collector.close();

    // The operator rewrites history: a fresh chain of 6 records, sealed with the collector's own
    // key (they hold its data dir), and removes the collector's memory of its last checkpoint so
    // that it starts. Only a checkpoint saved elsewhere can tell.
    rmSync(join(dir, 'log'), { recursive: true });
    rmSync(join(dir, 'data', DATA_FILES.latest));
    const signer = loadCheckpointKey(join(dir, 'data'), 'example.org/audit');
    const forged = await openFileStore({
      dir: join(dir, 'log'),
      sealer: createSealer(signer, 'example.org/audit'),
    });
    await forged.append(Array.from({ length: 6 }, (_, i) => decision(i, { status: 201 })));
    await forged.close();
    collector = own(await startTestCollector(pki, dir, { listen: { host: '127.0.0.1', port } }));
    client = own(api(collector.url));
    await assert.rejects(fetchCheckpoint(client, collector.verifierKey, saved.note), {
      code: 'ERR_AUDIT_CHECKPOINT_INCONSISTENT',
    });
    // Without the saved checkpoint the new one verifies: only history can tell.
    assert.equal((await fetchCheckpoint(client, collector.verifierKey)).body.size, 6);
  }));

test('an inclusion bundle for another size or seq than the checkpoint is refused with ERR_AUDIT_PROOF_INVALID', () =>
  scoped(async (dir, own) => {
    const collector = own(await startTestCollector(pki, dir));
    const agent = own(workloadAgent(pki, pki.leaf('web')));
    await call(agent, `${collector.url}/v1/events`, {
      method: 'POST',
      body: { events: [0, 1, 2].map((i) => decision(i)) },
    });
    const { note } = await collector.log.checkpoint();
    const client = own(api(collector.url));
    const bundle = await client.inclusion(1, 3);
    assert.equal(verifyInclusionBundle(bundle, note, collector.verifierKey).seq, 1);
    const bad = [
      { ...bundle, size: 2 },
      { ...bundle, seq: 2 },
      { ...bundle, proof: bundle.proof.slice(1) },
      { ...bundle, proof: [42] as unknown as string[] },
    ];
    for (const b of bad)
      assert.throws(() => verifyInclusionBundle(b, note, collector.verifierKey), {
        code: 'ERR_AUDIT_PROOF_INVALID',
      });
    await assert.rejects(client.inclusion(3, 3), { code: 'ERR_AUDIT_COLLECTOR_REFUSED', status: 400 });
  }));

test('the collector API refuses a collector with the wrong SPIFFE ID and reports an unreachable one', () =>
  scoped(async (dir, own) => {
    const collector = own(await startTestCollector(pki, dir));
    const wrong = own(api(collector.url, 'security-console', 'spiffe://example.org/ns/shop/sa/orders'));
    await assert.rejects(wrong.latestCheckpoint(), {
      code: 'ERR_AUDIT_COLLECTOR_UNREACHABLE',
      message: /does not name/,
    });
    await collector.close();
    const gone = own(api(collector.url));
    await assert.rejects(gone.latestCheckpoint(), { code: 'ERR_AUDIT_COLLECTOR_UNREACHABLE' });
    assert.throws(
      () =>
        createCollectorApi({
          url: collector.url,
          tls: { cert: '/nonexistent.pem', key: 'k', trustBundle: 't' },
          collectorId: COLLECTOR_ID,
        }),
      // A missing credential file is a configuration mistake naming the flag, not an unreachable collector.
      { code: 'ERR_CONFIG_NOT_FOUND', message: '/nonexistent.pem: --cert: cannot be read (ENOENT)' },
    );
  }));
