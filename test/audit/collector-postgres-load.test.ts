// Two collectors on one PostgreSQL table under mixed load (keyed and unkeyed batches to both,
// queries, inclusion proofs, checkpoints every 200 ms that read what the other appended) for
// PORTCULLIS_PG_LOAD_SECONDS (default 60): zero errors, one sealed chain. Then a real corruption
// is still reported.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { request } from 'undici';
import type { Agent } from 'undici';
import { createLogger } from '../../core/index.ts';
import type { RunningCollector } from '../../audit/index.ts';
import {
  loadCheckpointKey,
  openPostgresStore,
  parseVerifierKey,
  startCollector,
  verifyStore,
} from '../../audit/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { collectorConfig, workloadAgent } from './collector-harness.ts';
import { PG_URL, decision, pgSchema, sql, tempDir } from './helpers.ts';

const SECONDS = Number(process.env.PORTCULLIS_PG_LOAD_SECONDS ?? 60);
// Events/s offered (0: as fast as the collectors go). Each collector keeps a Merkle tree of every
// record in memory (64 bytes each): an hour's run wants a paced load, e.g. 2000.
const RATE = Number(process.env.PORTCULLIS_PG_LOAD_RATE ?? 0);

test(
  `two collectors on one PostgreSQL table under mixed load for ${SECONDS} s: zero errors, one sealed chain; a real corruption is still reported`,
  // After the load, verifying and re-reading what was written takes about as long again.
  { timeout: (SECONDS * 2 + 120) * 1000 },
  async () => {
    const pki = await makeTestPki();
    const tmp = tempDir();
    const pgs = await pgSchema('load');
    const table = `${pgs.schema}.log`;
    const errors: string[] = [];
    // Every error-level line either collector logs counts as a failure of the run.
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split('\n'))
          if (line && (JSON.parse(line) as { level: number }).level >= 50) errors.push(line);
        done();
      },
    });
    const logger = createLogger({ name: 'load', level: 'warn', destination: sink });
    const keyA = loadCheckpointKey(join(tmp.dir, 'a', 'data'), 'example.org/audit').verifierKey;
    const keyB = loadCheckpointKey(join(tmp.dir, 'b', 'data'), 'example.org/audit').verifierKey;
    const shared = { store: PG_URL, table, checkpoint: { everyRecords: 5_000, interval: '200ms' } };
    const collectors: RunningCollector[] = [];
    const agents: Agent[] = [];
    try {
      collectors.push(
        await startCollector(collectorConfig(pki, join(tmp.dir, 'a'), { ...shared, trustedKeys: [keyB] }), {
          logger,
          defaultMetrics: false,
        }),
        await startCollector(collectorConfig(pki, join(tmp.dir, 'b'), { ...shared, trustedKeys: [keyA] }), {
          logger,
          defaultMetrics: false,
        }),
      );
      const web = workloadAgent(pki, pki.leaf('web'));
      const reader = workloadAgent(pki, pki.leaf('security-console'));
      agents.push(web, reader);
      const counts = { posts: 0, replays: 0, queries: 0, proofs: 0, events: 0 };
      const fail = (what: string) => errors.push(what);
      const end = performance.now() + SECONDS * 1000;
      let batchNo = 0;
      const begun = performance.now();
      const poster = async (w: number) => {
        while (performance.now() < end) {
          if (RATE > 0) {
            const due = begun + (counts.events / RATE) * 1000;
            if (due > performance.now()) await new Promise((r) => setTimeout(r, due - performance.now()));
          }
          const c = collectors[(w + batchNo) % 2]!;
          const n = 1 + ((batchNo * 7) % 200);
          const id = `w${w}-${batchNo++}`;
          const body = JSON.stringify({
            events: Array.from({ length: n }, (_, i) => decision(i, { action: `POST /load/${id}/${i}` })),
          });
          const keyed = batchNo % 2 === 0;
          const headers = { 'content-type': 'application/json', ...(keyed ? { 'idempotency-key': id } : {}) };
          const res = await request(`${c.url}/v1/events`, { method: 'POST', dispatcher: web, headers, body });
          const text = await res.body.text();
          if (res.statusCode !== 200) fail(`POST ${res.statusCode} ${text}`);
          counts.posts++;
          counts.events += n;
          if (keyed && batchNo % 10 === 0) {
            // The same batch again, to the other collector: a replay across collectors.
            const other = collectors[((w + batchNo) % 2) ^ 1]!;
            const again = await request(`${other.url}/v1/events`, {
              method: 'POST',
              dispatcher: web,
              headers,
              body,
            });
            const againText = await again.body.text();
            if (
              again.statusCode !== 200 ||
              again.headers['idempotent-replayed'] !== 'true' ||
              againText !== text
            )
              fail(`replay ${again.statusCode} ${againText} (first ${text})`);
            counts.replays++;
          }
        }
      };
      const querier = async () => {
        while (performance.now() < end) {
          const c = collectors[counts.queries % 2]!;
          const q = await request(`${c.url}/v1/events?limit=50&fromSeq=${Math.max(0, c.log.size - 60)}`, {
            dispatcher: reader,
          });
          const qt = await q.body.text();
          if (q.statusCode !== 200) fail(`GET /v1/events ${q.statusCode} ${qt}`);
          counts.queries++;
          const cp = c.log.latest();
          if (cp && cp.body.size > 0) {
            const seq = Math.floor(cp.body.size / 2);
            const p = await request(`${c.url}/v1/proofs/inclusion?seq=${seq}&size=${cp.body.size}`, {
              dispatcher: reader,
            });
            const pt = await p.body.text();
            if (p.statusCode !== 200) fail(`proof ${p.statusCode} ${pt}`);
            counts.proofs++;
          }
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      await Promise.all([poster(0), poster(1), poster(2), poster(3), querier()]);
      for (const c of collectors) await c.log.checkpoint();
      assert.deepEqual(errors, [], `errors under load (${JSON.stringify(counts)})`);
      const [a, b] = [await collectors[0]!.log.checkpoint(), await collectors[1]!.log.checkpoint()];
      assert.equal(a.body.size, b.body.size);
      assert.deepEqual(Buffer.from(a.body.root), Buffer.from(b.body.root));

      const ro = await openPostgresStore({ connectionString: PG_URL, table, readOnly: true });
      const verdict = await verifyStore(ro, { sealKeys: [parseVerifierKey(keyA), parseVerifierKey(keyB)] });
      await ro.close();
      assert.ok(
        verdict.ok && verdict.covered === verdict.size && verdict.size === a.body.size,
        JSON.stringify(verdict),
      );
      console.log(
        `# ${SECONDS} s, 2 collectors: ${JSON.stringify(counts)}, ${verdict.size} records, 0 errors`,
      );

      // A real corruption: a row edited in place. A collector opening the table names it.
      for (const c of collectors.splice(0)) await c.close();
      await sql(`UPDATE ${table} SET line = replace(line, 'POST /load/', 'POST /edit/') WHERE seq = 5`);
      await assert.rejects(
        startCollector(collectorConfig(pki, join(tmp.dir, 'a'), { ...shared, trustedKeys: [keyB] }), {
          logger: createLogger({ name: 'load', level: 'silent' }),
          defaultMetrics: false,
        }),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'ERR_AUDIT_STORE_CORRUPT');
          assert.match(err.message, /record 5/);
          return true;
        },
      );
    } finally {
      for (const c of collectors) await c.close();
      for (const a of agents) await a.close();
      await pgs.drop();
      tmp.cleanup();
      pki.cleanup();
    }
  },
);
