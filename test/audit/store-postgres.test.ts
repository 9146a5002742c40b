import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PostgresStore } from '../../audit/index.ts';
import { GENESIS_PREV, buildRecord, openPostgresStore, openStore, verifyStore } from '../../audit/index.ts';
import { storeConformance } from './store-conformance.ts';
import { PG_URL, decision, pgSchema, sql } from './helpers.ts';

// One schema per test file run; each store gets its own table inside it. Never skipped: with
// PostgreSQL down, pgSchema fails with a message naming the address.
const { schema, drop } = await pgSchema('conf');
let n = 0;

storeConformance('postgres store', () => ({
  open: (clock, deps) =>
    openPostgresStore({ ...deps, connectionString: PG_URL, table: `${schema}.t${n++}`, clock }),
  async reopen(store, clock, deps) {
    await store.close();
    return openPostgresStore({
      ...deps,
      connectionString: PG_URL,
      table: (store as PostgresStore).table,
      clock,
    });
  },
  async forge(store, lines) {
    // Rows inserted by anyone with write access to the table, the collector running or not.
    await sql(
      `INSERT INTO ${(store as PostgresStore).table} (seq, at, hash, type, line)
       SELECT (l::json->>'seq')::bigint, now(), l::json->>'hash', 'authz.decision', l FROM unnest($1::text[]) AS u(l)`,
      [lines],
    );
  },
  view: (store) =>
    openPostgresStore({ connectionString: PG_URL, table: (store as PostgresStore).table, readOnly: true }),
  async lines(store) {
    const { rows } = await sql(`SELECT line FROM ${(store as PostgresStore).table} ORDER BY seq`);
    return rows.map((r: { line: string }) => r.line);
  },
  async replace(store, lines) {
    const table = (store as PostgresStore).table;
    await store.close();
    await sql(`DELETE FROM ${table}`);
    // Row keys follow storage order; the seq inside each line is what the attacker left there.
    await sql(
      `INSERT INTO ${table} (seq, at, hash, type, line) SELECT i - 1, now(), '', 'x', l FROM unnest($1::text[]) WITH ORDINALITY AS u(l, i)`,
      [lines],
    );
    return openPostgresStore({ connectionString: PG_URL, table });
  },
  cleanup: drop,
}));

test('postgres store: two stores on one table (two collectors) interleave into one valid chain', async () => {
  const table = `${schema}.shared`;
  const a = await openPostgresStore({ connectionString: PG_URL, table });
  const b = await openPostgresStore({ connectionString: PG_URL, table });
  await Promise.all(
    Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).append([decision(i), decision(i + 100)])),
  );
  assert.equal(await a.size(), 40);
  const verdict = await verifyStore(b);
  assert.ok(verdict.ok, JSON.stringify(verdict));
  await a.close();
  await b.close();
});

test('postgres store: an unreachable server is ERR_AUDIT_STORE_UNAVAILABLE without the password in the message', async () => {
  await assert.rejects(
    openStore('postgres://postgres:s3cret@127.0.0.1:1/test'),
    (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_AUDIT_STORE_UNAVAILABLE');
      assert.doesNotMatch(err.message, /s3cret/);
      return true;
    },
  );
});

test('postgres store: a table name that is not an identifier is a TypeError', async () => {
  await assert.rejects(openPostgresStore({ connectionString: PG_URL, table: 'x; drop table y' }), TypeError);
});

test('openStore refuses a spec that is neither file: nor postgres: with ERR_AUDIT_STORE_SPEC', async () => {
  for (const spec of ['mysql://x', 'file:', '/tmp/log', ''])
    await assert.rejects(openStore(spec), { code: 'ERR_AUDIT_STORE_SPEC' }, spec);
  // A postgres URL that does not parse: named, without its password.
  // A password holding `/`, `?` or `#` unescaped is the usual reason such a URL does not parse.
  for (const spec of [
    'postgres://u:secret@[bad/db',
    'postgresql://u:secret@host:99999/db',
    'postgres://u:se/cret@host/db',
    'postgres://u:se?cret@host/db',
    'postgres://u:se#cret@host/db',
  ])
    await assert.rejects(
      openStore(spec),
      (err: Error & { code?: string }) =>
        err.code === 'ERR_AUDIT_STORE_SPEC' &&
        /not a valid postgres:\/\/ URL/.test(err.message) &&
        !/cret/.test(err.message),
      spec,
    );
  // A scheme with a slash missing: refused as no store at all, the password still not shown.
  for (const spec of ['postgres:/u:secret@host/db', 'postgresql:u:secret@host/db'])
    await assert.rejects(
      openStore(spec),
      (err: Error & { code?: string }) =>
        err.code === 'ERR_AUDIT_STORE_SPEC' &&
        /expected file:DIR/.test(err.message) &&
        !/cret/.test(err.message),
      spec,
    );
});

test('postgres store: a table from before rule, reason and the counts is upgraded on open, filled from its lines', async () => {
  const table = `${schema}.old`;
  await sql(`CREATE TABLE ${table} (seq bigint PRIMARY KEY, at timestamptz NOT NULL, hash text NOT NULL,
    type text NOT NULL, source text, subject text, decision text, line text NOT NULL)`);
  let prev = GENESIS_PREV;
  const lines: string[] = [];
  for (let i = 0; i < 6; i++) {
    const { record, line } = buildRecord(
      i,
      '2026-01-01T00:00:00.000Z',
      decision(i, { rule: `r${i % 2}` }),
      prev,
    );
    prev = record.hash;
    lines.push(line);
  }
  await sql(
    `INSERT INTO ${table} (seq, at, hash, type, decision, line)
     SELECT (l::json->>'seq')::bigint, '2026-01-01T00:00:00Z', l::json->>'hash', 'authz.decision', l::json->'event'->>'decision', l
     FROM unnest($1::text[]) AS u(l)`,
    [lines],
  );
  const store = await openPostgresStore({ connectionString: PG_URL, table });
  try {
    assert.deepEqual(
      (await store.query({ rule: 'r1', limit: 10 })).map((r) => r.seq),
      [1, 3, 5],
    );
    assert.deepEqual(await store.aggregate({ filter: {}, groupBy: ['rule'] }), [
      { key: { rule: 'r0' }, count: 3 },
      { key: { rule: 'r1' }, count: 3 },
    ]);
    await store.append([decision(6, { rule: 'r0' })]);
    assert.deepEqual(await store.aggregate({ filter: { rule: 'r0' }, groupBy: [] }), [{ key: {}, count: 4 }]);
  } finally {
    await store.close();
  }
});
