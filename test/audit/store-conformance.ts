// The one conformance suite every AuditStore runs (STYLE.md rule 5), plus the tamper matrix of
// the acceptance criteria. Each store's test file calls these with its own factory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import type { AuditEvent } from '../../core/index.ts';
import type { AuditRecord, AuditStore, CheckpointBody, StoreDeps, UncoveredTail } from '../../audit/index.ts';
import { scanAggregate } from '../../audit/query-filter.ts';
import {
  GENESIS_PREV,
  buildRecord,
  createSealer,
  parseVerifierKey,
  formatVerifierKey,
  signCheckpoint,
  verifyChain,
  verifyCheckpoint,
  verifyStore,
} from '../../audit/index.ts';
import { decision } from './helpers.ts';

/** What a store's test file provides to the suite. */
export interface StoreHarness {
  /** A new, empty store using `clock` (and `deps`: sealer, idempotency options…). */
  open(clock?: () => Date, deps?: StoreDeps): Promise<AuditStore>;
  /** Closes and reopens the same log (for durability and recovery checks). */
  reopen(store: AuditStore, clock?: () => Date, deps?: StoreDeps): Promise<AuditStore>;
  /**
   * Appends stored lines behind the store's back, the way a writer without the collector's key
   * would (while it runs or after it closed). Absent for stores with nothing to forge (memory).
   */
  forge?(store: AuditStore, lines: readonly string[]): Promise<void>;
  /** The log as `verify` opens it (read-only); the store must be closed first if it holds a lock. */
  view?(store: AuditStore): Promise<AuditStore>;
  /** The stored lines as they are, for tampering. */
  lines(store: AuditStore): Promise<string[]>;
  /** Replaces the stored lines, the way an attacker with write access would, and returns a store to verify. */
  replace(store: AuditStore, lines: readonly string[]): Promise<AuditStore>;
  cleanup(): Promise<void>;
}

const fixedClock = () => new Date('2026-03-04T05:06:07.000Z');

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** Runs the conformance suite against one store implementation. */
export function storeConformance(name: string, harness: () => StoreHarness): void {
  const h = harness();
  test.after(() => h.cleanup());

  test(`${name}: an empty store has size 0, the genesis head, and reads nothing`, async () => {
    const store = await h.open();
    assert.equal(await store.size(), 0);
    assert.deepEqual(await store.head(), { size: 0, hash: GENESIS_PREV });
    assert.deepEqual(await collect(store.read(0)), []);
    assert.deepEqual(await store.append([]), []);
    await store.close();
  });

  test(`${name}: appended records are chained from seq 0, stamped by the clock, and read back equal`, async () => {
    const store = await h.open(fixedClock);
    const first = await store.append([decision(0), decision(1)]);
    const second = await store.append([decision(2)]);
    const all = [...first, ...second];
    assert.deepEqual(
      all.map((r) => r.seq),
      [0, 1, 2],
    );
    assert.equal(all[0]!.prev, GENESIS_PREV);
    assert.equal(all[1]!.prev, all[0]!.hash);
    assert.equal(all[0]!.time, '2026-03-04T05:06:07.000Z');
    assert.deepEqual(await collect(store.read(0)), all);
    assert.deepEqual(await collect(store.read(1, 2)), [all[1]]);
    assert.deepEqual(await collect(store.read(5)), []);
    assert.deepEqual(await store.head(), { size: 3, hash: all[2]!.hash });
    assert.equal(verifyChain(all).ok, true);
    await store.close();
  });

  test(`${name}: concurrent producers each get contiguous records and the log verifies`, async () => {
    const store = await h.open();
    const batches = await Promise.all(
      Array.from({ length: 50 }, (_, p) =>
        store.append(Array.from({ length: 10 }, (_, i) => decision(p * 10 + i))),
      ),
    );
    for (const b of batches) {
      assert.equal(b.length, 10);
      for (let i = 1; i < b.length; i++) assert.equal(b[i]!.seq, b[0]!.seq + i);
      // Each producer's events come back in the order it gave them.
      assert.deepEqual(
        b.map((r) => r.event.action),
        b.map((_, i) => `GET /orders/${Number(b[0]!.event.action!.split('/')[2]) + i}`),
      );
    }
    assert.equal(await store.size(), 500);
    const verdict = await verifyStore(store);
    assert.equal(verdict.ok, true);
    await store.close();
  });

  test(`${name}: records survive a reopen and appends continue the chain`, async () => {
    let store = await h.open();
    const before = await store.append([decision(0), decision(1)]);
    store = await h.reopen(store);
    assert.deepEqual(await store.head(), { size: 2, hash: before[1]!.hash });
    const after = await store.append([decision(2)]);
    assert.equal(after[0]!.seq, 2);
    assert.equal(after[0]!.prev, before[1]!.hash);
    assert.equal((await verifyStore(store)).ok, true);
    await store.close();
  });

  test(`${name}: query filters by type, source, subject, decision, time range, fromSeq and limit`, async () => {
    let now = Date.parse('2026-01-01T00:00:00.000Z');
    const clock = () => new Date(now);
    const store = await h.open(clock);
    const events: AuditEvent[] = [];
    for (let i = 0; i < 12; i++)
      events.push(
        decision(i, {
          source: i % 2 ? 'spiffe://example.org/a' : 'spiffe://example.org/b',
          subject: i < 6 ? 'spiffe://example.org/ns/shop/sa/web' : 'spiffe://example.org/ns/x/sa/y',
          ...(i === 11 ? { type: 'token.issued', decision: undefined } : {}),
        }),
      );
    for (const e of events) {
      await store.append([e]);
      now += 60_000;
    }
    const seqs = async (f: Parameters<AuditStore['query']>[0]) => (await store.query(f)).map((r) => r.seq);
    const table: [string, Parameters<AuditStore['query']>[0], number[]][] = [
      ['type', { type: 'token.issued', limit: 100 }, [11]],
      ['source', { source: 'spiffe://example.org/a', limit: 3 }, [1, 3, 5]],
      ['subject', { subject: 'spiffe://example.org/ns/x/sa/y', limit: 100 }, [6, 7, 8, 9, 10, 11]],
      ['decision', { decision: 'deny', limit: 100 }, [0, 3, 6, 9]],
      ['time range', { since: '2026-01-01T00:02:00Z', until: '2026-01-01T00:04:00Z', limit: 100 }, [2, 3]],
      ['fromSeq', { fromSeq: 10, limit: 100 }, [10, 11]],
      ['combined', { decision: 'allow', source: 'spiffe://example.org/b', limit: 100 }, [2, 4, 8, 10]],
      ['limit 0', { limit: 0 }, []],
    ];
    for (const [label, filter, expected] of table) assert.deepEqual(await seqs(filter), expected, label);
    await store.close();
  });

  test(`${name}: query pages newest first below beforeSeq, and filters by rule and reason`, async () => {
    let now = Date.parse('2026-01-01T00:00:00.000Z');
    const clock = () => new Date(now);
    const store = await h.open(clock);
    for (let i = 0; i < 30; i++) {
      await store.append([
        decision(i, {
          source: i % 2 ? 'spiffe://example.org/a' : 'spiffe://example.org/b',
          rule: i % 3 === 0 ? 'default-deny' : `rule-${i % 2}`,
          ...(i === 29 ? { rule: undefined, reason: 'ERR_SIDECAR_TOKEN_EXPIRED' } : {}),
        }),
      ]);
      now += 60_000;
    }
    const seqs = async (f: Parameters<AuditStore['query']>[0]) => (await store.query(f)).map((r) => r.seq);
    assert.deepEqual(await seqs({ order: 'desc', limit: 3 }), [29, 28, 27]);
    assert.deepEqual(await seqs({ order: 'desc', beforeSeq: 27, limit: 3 }), [26, 25, 24]);
    assert.deepEqual(await seqs({ order: 'desc', rule: 'default-deny', limit: 4 }), [27, 24, 21, 18]);
    assert.deepEqual(
      await seqs({ order: 'desc', rule: 'default-deny', beforeSeq: 18, limit: 100 }),
      [15, 12, 9, 6, 3, 0],
    );
    assert.deepEqual(await seqs({ reason: 'ERR_SIDECAR_TOKEN_EXPIRED', limit: 10 }), [29]);
    assert.deepEqual(await seqs({ rule: 'rule-1', source: 'spiffe://example.org/a', limit: 3 }), [1, 5, 7]);
    assert.deepEqual(await seqs({ rule: 'no-such-rule', limit: 3 }), []);
    assert.deepEqual(
      await seqs({ order: 'desc', since: '2026-01-01T00:10:00Z', until: '2026-01-01T00:13:00Z', limit: 10 }),
      [12, 11, 10],
    );
    // Appends after a page: the next page of the same traversal neither skips nor repeats.
    const first = await seqs({ order: 'desc', limit: 10 });
    await store.append([decision(100), decision(101)]);
    const second = await seqs({ order: 'desc', beforeSeq: first.at(-1)!, limit: 10 });
    assert.deepEqual(
      [...first, ...second],
      Array.from({ length: 20 }, (_, i) => 29 - i),
    );
    await store.close();
  });

  test(`${name}: aggregate counts by any fields, over a time range, in time buckets`, async () => {
    let now = Date.parse('2026-01-01T00:00:00.000Z');
    const clock = () => new Date(now);
    const store = await h.open(clock);
    for (let i = 0; i < 24; i++) {
      await store.append([
        decision(i, {
          source: i < 12 ? 'spiffe://example.org/a' : 'spiffe://example.org/b',
          rule: `r${i % 2}`,
        }),
        ...(i % 4 === 0 ? [{ type: 'cert.issued', time: '2026-01-01T00:00:00Z' } as AuditEvent] : []),
      ]);
      now += 10 * 60_000;
    }
    const total = await store.aggregate({ filter: {}, groupBy: [] });
    assert.deepEqual(total, [{ key: {}, count: 30 }]);
    const bySourceRule = await store.aggregate({
      filter: { type: 'authz.decision' },
      groupBy: ['source', 'rule'],
    });
    assert.deepEqual(bySourceRule, [
      { key: { source: 'spiffe://example.org/a', rule: 'r0' }, count: 6 },
      { key: { source: 'spiffe://example.org/a', rule: 'r1' }, count: 6 },
      { key: { source: 'spiffe://example.org/b', rule: 'r0' }, count: 6 },
      { key: { source: 'spiffe://example.org/b', rule: 'r1' }, count: 6 },
    ]);
    const byType = await store.aggregate({ filter: { decision: 'deny' }, groupBy: ['type', 'rule'] });
    assert.deepEqual(byType, [
      { key: { type: 'authz.decision', rule: 'r0' }, count: 4 },
      { key: { type: 'authz.decision', rule: 'r1' }, count: 4 },
    ]);
    const absent = await store.aggregate({ filter: { type: 'cert.issued' }, groupBy: ['rule'] });
    assert.deepEqual(absent, [{ key: { rule: null }, count: 6 }]);
    const hourly = await store.aggregate({
      filter: { type: 'authz.decision', since: '2026-01-01T00:30:00Z', until: '2026-01-01T02:00:00Z' },
      groupBy: ['decision'],
      interval: '1h',
    });
    assert.deepEqual(hourly, [
      { key: { decision: 'allow' }, bucket: '2026-01-01T00:00:00.000Z', count: 2 },
      { key: { decision: 'deny' }, bucket: '2026-01-01T00:00:00.000Z', count: 1 },
      { key: { decision: 'allow' }, bucket: '2026-01-01T01:00:00.000Z', count: 4 },
      { key: { decision: 'deny' }, bucket: '2026-01-01T01:00:00.000Z', count: 2 },
    ]);
    assert.deepEqual(await store.aggregate({ filter: { source: 'nobody' }, groupBy: ['rule'] }), []);
    await store.close();
  });

  test(`${name}: aggregates over ranges that cut minutes agree with a count of the records read back`, async () => {
    let now = Date.parse('2026-01-01T00:00:00.000Z');
    const clock = () => new Date(now);
    const store = await h.open(clock);
    for (let i = 0; i < 60; i++) {
      await store.append([
        decision(i, { rule: `r${i % 4}` }),
        decision(i + 1000, { subject: `spiffe://x/s${i % 3}` }),
      ]);
      now += 17_300;
    }
    const records: AuditRecord[] = [];
    for await (const r of store.read(0)) records.push(r);
    const ranges: [string | undefined, string | undefined][] = [
      [undefined, undefined],
      ['2026-01-01T00:00:20.500Z', '2026-01-01T00:12:40.100Z'],
      ['2026-01-01T00:03:10Z', '2026-01-01T00:03:50Z'],
      [undefined, '2026-01-01T00:07:07Z'],
      ['2026-01-01T00:09:59.999Z', undefined],
    ];
    for (const [since, until] of ranges)
      for (const q of [
        { groupBy: ['rule', 'decision'] as const, interval: undefined },
        { groupBy: ['subject'] as const, interval: '5m' as const },
        { groupBy: [] as const, interval: '1m' as const },
      ]) {
        const query = {
          filter: { since, until },
          groupBy: [...q.groupBy],
          ...(q.interval ? { interval: q.interval } : {}),
        };
        assert.deepEqual(
          await store.aggregate(query),
          await scanAggregate(records, query),
          JSON.stringify(query),
        );
      }
    await store.close();
  });

  test(`${name}: a closed store refuses appends with ERR_AUDIT_STORE_CLOSED`, async () => {
    const store = await h.open();
    await store.close();
    await assert.rejects(store.append([decision(0)]), { code: 'ERR_AUDIT_STORE_CLOSED' });
    await assert.rejects(store.size(), { code: 'ERR_AUDIT_STORE_CLOSED' });
  });

  const key = generateKeyPairSync('ed25519');
  const signer = { name: 'test.example/audit', ...key };
  const vkey = formatVerifierKey(signer.name, key.publicKey);

  async function tenRecords(): Promise<{ store: AuditStore; lines: string[]; checkpoint: CheckpointBody }> {
    const store = await h.open();
    await store.append(Array.from({ length: 10 }, (_, i) => decision(i)));
    const verdict = await verifyStore(store);
    assert.ok(verdict.ok);
    // The checkpoint goes through its signed form, as a security team would save it.
    const note = signCheckpoint(
      { origin: signer.name, size: 10, root: verdict.root!, chainHead: verdict.head },
      signer,
    );
    return { store, lines: await h.lines(store), checkpoint: verifyCheckpoint(note, vkey) };
  }

  const flip = (line: string) => {
    const at = line.indexOf('GET /orders/') + 4;
    return line.slice(0, at) + (line[at] === 'P' ? 'Q' : 'P') + line.slice(at + 1);
  };
  const tampers: [string, (l: string[]) => string[], number][] = [
    ['flipping one byte of an event', (l) => l.map((x, i) => (i === 5 ? flip(x) : x)), 5],
    ['deleting a record', (l) => l.filter((_, i) => i !== 5), 5],
    ['swapping two records', (l) => [...l.slice(0, 5), l[6]!, l[5]!, ...l.slice(7)], 5],
    ['duplicating a record', (l) => [...l.slice(0, 6), l[5]!, ...l.slice(6)], 6],
    ['breaking a line', (l) => l.map((x, i) => (i === 7 ? x.slice(0, 40) : x)), 7],
    ['inserting a blank line', (l) => [...l.slice(0, 3), '', ...l.slice(3)], 3],
  ];
  for (const [label, tamper, bad] of tampers) {
    test(`${name}: verify names seq ${bad} as the first bad record after ${label}`, async () => {
      const { store, lines } = await tenRecords();
      const tampered = await h.replace(store, tamper(lines));
      const verdict = await verifyStore(tampered);
      assert.equal(verdict.ok, false);
      assert.ok(!verdict.ok);
      assert.equal(verdict.code, 'ERR_AUDIT_CHAIN_BROKEN');
      assert.equal(verdict.seq, bad);
      await tampered.close();
    });
  }

  test(`${name}: truncating the tail makes the log inconsistent with a checkpoint saved earlier`, async () => {
    const { store, lines, checkpoint } = await tenRecords();
    const tampered = await h.replace(store, lines.slice(0, 8));
    assert.equal((await verifyStore(tampered)).ok, true, 'a truncated chain is still a chain');
    const verdict = await verifyStore(tampered, { checkpoint });
    assert.ok(!verdict.ok);
    assert.equal(verdict.code, 'ERR_AUDIT_CHECKPOINT_INCONSISTENT');
    assert.match(verdict.reason, /truncated/);
    await tampered.close();
  });

  test(`${name}: rewriting the tail with a fresh chain makes the log inconsistent with a checkpoint saved earlier`, async () => {
    const { store, lines, checkpoint } = await tenRecords();
    const kept = lines.slice(0, 6);
    let prev = JSON.parse(kept[5]!).hash as string;
    const forged = [...kept];
    for (let seq = 6; seq < 12; seq++) {
      const { record, line } = buildRecord(
        seq,
        '2026-05-05T00:00:00.000Z',
        decision(seq, { decision: 'allow' }),
        prev,
      );
      forged.push(line);
      prev = record.hash;
    }
    const tampered = await h.replace(store, forged);
    assert.equal((await verifyStore(tampered)).ok, true, 'the forged chain is self-consistent');
    const verdict = await verifyStore(tampered, { checkpoint });
    assert.ok(!verdict.ok);
    assert.equal(verdict.code, 'ERR_AUDIT_CHECKPOINT_INCONSISTENT');
    assert.equal(verdict.seq, 10);
    await tampered.close();
  });

  test(`${name}: appendOnce stores a key with its records; a retry appends nothing and gets the first seqs back, also after a reopen`, async () => {
    let store = await h.open();
    await store.append([decision(0)]);
    const claim = { source: 'spiffe://example.org/a', key: 'batch-1', bodyHash: 'ab'.repeat(32) };
    const first = await store.appendOnce([decision(1), decision(2)], claim);
    assert.deepEqual(
      first.records?.map((r) => r.seq),
      [1, 2],
    );
    const again = await store.appendOnce([decision(1), decision(2)], claim);
    assert.equal(again.records, undefined);
    assert.deepEqual(
      { firstSeq: again.replay?.firstSeq, lastSeq: again.replay?.lastSeq, bodyHash: again.replay?.bodyHash },
      { firstSeq: 1, lastSeq: 2, bodyHash: claim.bodyHash },
    );
    // Scoped per source: the same key from another source is another batch.
    const other = await store.appendOnce([decision(3)], { ...claim, source: 'spiffe://example.org/b' });
    assert.deepEqual(
      other.records?.map((r) => r.seq),
      [3],
    );
    store = await h.reopen(store);
    const entry = await store.idempotencyEntry(claim.source, claim.key);
    assert.equal(entry?.firstSeq, 1);
    assert.equal(entry?.lastSeq, 2);
    assert.equal((await store.appendOnce([decision(9)], claim)).replay?.lastSeq, 2);
    assert.equal(await store.size(), 4);
    await store.close();
  });

  test(`${name}: concurrent appendOnce calls with distinct keys each append once, in one group commit`, async () => {
    const store = await h.open();
    const outcomes = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        store.appendOnce([decision(i)], {
          source: 'spiffe://example.org/a',
          key: `k${i}`,
          bodyHash: '00'.repeat(32),
        }),
      ),
    );
    assert.equal(outcomes.filter((o) => o.records?.length === 1).length, 20);
    assert.equal(await store.size(), 20);
    await store.close();
  });

  test(`${name}: an idempotency entry older than the retention is forgotten`, async () => {
    let now = Date.parse('2026-01-01T00:00:00.000Z');
    const clock = () => new Date(now);
    const deps = { idempotency: { retentionMs: 60_000 } };
    const store = await h.open(clock, deps);
    const claim = { source: 'spiffe://example.org/a', key: 'old', bodyHash: '11'.repeat(32) };
    await store.appendOnce([decision(0)], claim);
    now += 30_000;
    assert.ok(await store.idempotencyEntry(claim.source, claim.key));
    now += 60_000;
    assert.equal(await store.idempotencyEntry(claim.source, claim.key), undefined);
    assert.deepEqual(
      (await store.appendOnce([decision(1)], claim)).records?.map((r) => r.seq),
      [1],
    );
    await store.close();
  });

  if (h.forge && h.view) {
    const forge = h.forge;
    const view = h.view;
    const sealKeys = [parseVerifierKey(vkey)];
    const sealed = (onUncovered?: (t: UncoveredTail) => void): StoreDeps => ({
      sealer: createSealer(signer, signer.name),
      onUncovered,
    });
    /** Correctly chained records after the store's last one, as a writer without the key makes them. */
    const forgedAfter = async (store: AuditStore, n: number): Promise<string[]> => {
      const records = (await h.lines(store)).filter((l) => l.startsWith('{"event":'));
      let prev = records.length ? (JSON.parse(records.at(-1)!) as { hash: string }).hash : GENESIS_PREV;
      const out: string[] = [];
      for (let i = 0; i < n; i++) {
        const { record, line } = buildRecord(
          records.length + i,
          '2026-05-05T00:00:00.000Z',
          decision(900 + i, { decision: 'allow', subject: 'spiffe://example.org/forger' }),
          prev,
        );
        out.push(line);
        prev = record.hash;
      }
      return out;
    };

    test(`${name}: records forged after a clean close are refused on reopen with their seq range, never adopted, and named by verify`, async () => {
      let store = await h.open(undefined, sealed());
      await store.append([0, 1, 2, 3, 4].map((i) => decision(i)));
      const forged = await forgedAfter(store, 2);
      await store.close();
      await forge(store, forged);
      // verify (read-only) sees a chain that holds, and names the records no seal covers.
      let ro = await view(store);
      const before = await verifyStore(ro, { sealKeys });
      assert.ok(before.ok, JSON.stringify(before));
      assert.equal(before.size, 7);
      assert.equal(before.covered, 5);
      await ro.close();
      const refused: UncoveredTail[] = [];
      store = await h.reopen(
        store,
        undefined,
        sealed((t) => refused.push(t)),
      );
      assert.equal((await store.head()).size, 5);
      const [next] = await store.append([decision(5)]);
      // Refused on open (file) or by the first write (postgres): before anything builds on them.
      assert.deepEqual(
        refused.map((t) => [t.from, t.to]),
        [[5, 6]],
      );
      assert.equal(next!.seq, 5);
      assert.equal(next!.event.subject, decision(5).subject);
      // The refused records no longer count in aggregates (PostgreSQL: its counts follow the moved rows).
      const kept: AuditRecord[] = [];
      for await (const r of store.read(0)) kept.push(r);
      assert.equal(kept.length, 6);
      const byDecision = { filter: {}, groupBy: ['decision' as const, 'subject' as const] };
      assert.deepEqual(await store.aggregate(byDecision), await scanAggregate(kept, byDecision));
      await store.close();
      ro = await view(store);
      const after = await verifyStore(ro, { sealKeys });
      assert.ok(after.ok && after.size === 6 && after.covered === 6, JSON.stringify(after));
      await ro.close();
    });

    test(`${name}: a record forged while the store is open is never built on: the next append replaces it`, async () => {
      const refused: UncoveredTail[] = [];
      let store = await h.open(
        undefined,
        sealed((t) => refused.push(t)),
      );
      await store.append([0, 1, 2].map((i) => decision(i)));
      await forge(store, await forgedAfter(store, 1));
      const next = await store.append([decision(3), decision(4)]);
      assert.deepEqual(
        next.map((r) => r.seq),
        [3, 4],
      );
      assert.equal(refused.length, 1);
      assert.equal(refused[0]!.from, 3);
      store = await h.reopen(store, undefined, sealed());
      assert.equal((await store.head()).size, 5);
      await store.close();
      const ro = await view(store);
      const verdict = await verifyStore(ro, { sealKeys });
      assert.ok(verdict.ok && verdict.size === 5 && verdict.covered === 5, JSON.stringify(verdict));
      assert.doesNotMatch((await h.lines(ro)).join('\n'), /forger/);
      await ro.close();
    });

    test(`${name}: a log that no trusted seal covers at all is refused with ERR_AUDIT_STORE_CORRUPT, not moved aside`, async () => {
      // Written without seals (a log from before them, or sealed by a key no longer trusted).
      const store = await h.open();
      await store.append([decision(0), decision(1), decision(2)]);
      const refused: UncoveredTail[] = [];
      const attempt = (async () => {
        const sealedStore = await h.reopen(
          store,
          undefined,
          sealed((t) => refused.push(t)),
        );
        try {
          await sealedStore.append([decision(3)]);
        } finally {
          await sealedStore.close();
        }
      })();
      await assert.rejects(attempt, (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_AUDIT_STORE_CORRUPT');
        assert.match(err.message, /refusing to move/);
        return true;
      });
      assert.deepEqual(refused, []);
      const ro = await view(store);
      const verdict = await verifyStore(ro);
      assert.ok(verdict.ok && verdict.size === 3, JSON.stringify(verdict));
      await ro.close();
    });

    test(`${name}: verify counts nothing as covered when no given key signed the seals`, async () => {
      const store = await h.open(undefined, sealed());
      await store.append([decision(0), decision(1)]);
      await store.close();
      const ro = await view(store);
      const other = generateKeyPairSync('ed25519');
      const verdict = await verifyStore(ro, {
        sealKeys: [parseVerifierKey(formatVerifierKey(signer.name, other.publicKey))],
      });
      assert.ok(verdict.ok && verdict.covered === 0, JSON.stringify(verdict));
      await ro.close();
    });
  }

  test(`${name}: an intact log agrees with its checkpoint and with one from before later appends`, async () => {
    const { store, checkpoint } = await tenRecords();
    await store.append([decision(10), decision(11)]);
    const verdict = await verifyStore(store, { checkpoint });
    assert.ok(verdict.ok);
    assert.equal(verdict.size, 12);
    await store.close();
  });
}
