// The collector SIGKILLed at random moments under a stream of keyed batches, each retried until
// it gets a 2xx (a real HTTP client over mTLS against a real collector process): no
// acknowledged event is lost, none is stored twice, and the chain verifies, sealed throughout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { request } from 'undici';
import { openFileStore, parseVerifierKey, verifyStore } from '../../audit/index.ts';
import type { AuditRecord } from '../../audit/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { workloadAgent } from './collector-harness.ts';
import { decision, tempDir } from './helpers.ts';
import { readFileSync } from 'node:fs';

const CHILD = new URL('./fixtures/collector-child.ts', import.meta.url).pathname;
const KILLS = Number(process.env.PORTCULLIS_CRASH_KILLS ?? 5);
const RATE = Number(process.env.PORTCULLIS_CRASH_RATE ?? 20_000);
const BATCH = 250;
const WORKERS = 8;

/** A seeded PRNG (mulberry32), so that a failing run can be repeated with the same seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test(
  `collector crash loop: ${KILLS} SIGKILLs under a keyed ${RATE} events/s stream lose no acknowledged event, store none twice, and the chain verifies`,
  { timeout: 120_000 },
  async () => {
    const seed = Number(process.env.PORTCULLIS_CRASH_SEED ?? Date.now() % 1_000_000);
    const random = prng(seed);
    const pki = await makeTestPki();
    const tmp = tempDir();
    const logDir = join(tmp.dir, 'log');
    const config = {
      listen: { host: '127.0.0.1', port: 0 },
      tls: { cert: pki.leaf('audit').certFile, key: pki.leaf('audit').keyFile, trustBundle: pki.rootFile },
      identities: pki.identitiesDir,
      origin: 'example.org/audit',
      dataDir: join(tmp.dir, 'data'),
      store: `file:${logDir}`,
      checkpoint: { everyRecords: 50_000, interval: '1s' },
    };
    let child: ChildProcess | undefined;
    let url = '';
    const start = () =>
      new Promise<void>((resolve, reject) => {
        const c = spawn(process.execPath, [CHILD, JSON.stringify(config)], {
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        child = c;
        let out = '';
        c.on('exit', (code, signal) =>
          reject(new Error(`collector exited before listening (${code ?? signal})`)),
        );
        c.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /port (\d+)\n/.exec(out);
          if (m) {
            c.removeAllListeners('exit');
            url = `https://127.0.0.1:${m[1]}/v1/events`;
            resolve();
          }
        });
      });

    const agent = workloadAgent(pki, pki.leaf('web'));
    const acked = new Map<string, { firstSeq: number; lastSeq: number; replayed: boolean }>();
    let sentEvents = 0;
    let retries = 0;
    let stopping = false;
    const begun = performance.now();
    const worker = async (w: number) => {
      for (let b = 0; !stopping; b++) {
        const id = `w${w}-b${b}`;
        // Keep the stream at RATE events/s across all workers.
        const due = begun + (sentEvents / RATE) * 1000;
        if (due > performance.now()) await new Promise((r) => setTimeout(r, due - performance.now()));
        sentEvents += BATCH;
        const body = JSON.stringify({
          events: Array.from({ length: BATCH }, (_, i) => decision(i, { action: `POST /crash/${id}/${i}` })),
        });
        // Retry the same bytes with the same key until a 2xx: the contract under test.
        for (;;) {
          try {
            const res = await request(url, {
              method: 'POST',
              dispatcher: agent,
              headers: { 'content-type': 'application/json', 'idempotency-key': id },
              body,
              headersTimeout: 10_000,
              bodyTimeout: 10_000,
            });
            const text = await res.body.text();
            if (res.statusCode === 200) {
              const { firstSeq, lastSeq } = JSON.parse(text) as { firstSeq: number; lastSeq: number };
              acked.set(id, { firstSeq, lastSeq, replayed: res.headers['idempotent-replayed'] === 'true' });
              break;
            }
            assert.ok([409, 429, 503].includes(res.statusCode), `unexpected ${res.statusCode}: ${text}`);
          } catch (err) {
            if ((err as { code?: string }).code === 'ERR_ASSERTION') throw err;
          }
          retries++;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    };

    try {
      await start();
      const workers = Array.from({ length: WORKERS }, (_, w) => worker(w));
      for (let k = 0; k < KILLS; k++) {
        await new Promise((r) => setTimeout(r, 300 + random() * 1200));
        const dying = child!;
        const exited = new Promise((r) => dying.on('exit', r));
        dying.kill('SIGKILL');
        await exited;
        await start();
      }
      await new Promise((r) => setTimeout(r, 500));
      stopping = true;
      await Promise.all(workers);
      const seconds = (performance.now() - begun) / 1000;
      const stopped = new Promise((r) => child!.on('exit', r));
      child!.kill('SIGTERM');
      await stopped;

      const store = await openFileStore({ dir: logDir, readOnly: true });
      const byAction = new Map<string, AuditRecord>();
      let duplicates = 0;
      for await (const r of store.read(0)) {
        const action = r.event.action!;
        if (byAction.has(action)) duplicates++;
        byAction.set(action, r);
      }
      const vkey = readFileSync(join(tmp.dir, 'data', 'checkpoint.vkey'), 'utf8').trim();
      const verdict = await verifyStore(store, { sealKeys: [parseVerifierKey(vkey)] });
      await store.close();
      const ackedEvents = acked.size * BATCH;
      const replays = [...acked.values()].filter((a) => a.replayed).length;
      const diag = `seed ${seed}, ${acked.size} batches acked (${replays} replayed), ${retries} retries, ${Math.round(ackedEvents / seconds)} events/s`;
      assert.equal(duplicates, 0, `duplicated events (${diag})`);
      for (const [id, a] of acked) {
        assert.equal(a.lastSeq - a.firstSeq + 1, BATCH, id);
        for (let i = 0; i < BATCH; i++) {
          const r = byAction.get(`POST /crash/${id}/${i}`);
          assert.ok(r, `acknowledged event ${id}/${i} is missing (${diag})`);
          assert.equal(r.seq, a.firstSeq + i, `event ${id}/${i} is not at the seq it was acknowledged with`);
        }
      }
      assert.ok(verdict.ok, JSON.stringify(verdict));
      assert.equal(verdict.covered, verdict.size, 'every stored record is covered by a seal');
      assert.equal(verdict.size, byAction.size);
      assert.ok(acked.size > KILLS, diag);
      console.log(`# crash loop: ${KILLS} SIGKILLs, ${diag}`);
    } finally {
      stopping = true;
      child?.kill('SIGKILL');
      await agent.close();
      tmp.cleanup();
      pki.cleanup();
    }
  },
);
