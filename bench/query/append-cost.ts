// The cost of the query API's PostgreSQL indexes and counts trigger on appends (decision 0074):
// 100,000 events in batches of 10,000 into a store table as migrated ("query") and into one whose
// five filter indexes, time index and counts triggers were dropped ("bare"), alternating, three
// times each, in a throw-away schema.   node bench/query/append-cost.ts
import { openStore } from '../../audit/index.ts';
import pg from 'pg';
const URL_ = 'postgres://postgres@127.0.0.1:5432/test';
const schema = `bench_ab_${process.pid}`;
const ev = (i: number) =>
  ({
    type: 'authz.decision',
    time: '2026-12-06T00:00:00Z',
    source: 'spiffe://example.org/ns/shop/sa/orders',
    subject: 'spiffe://example.org/ns/shop/sa/web',
    target: 'spiffe://example.org/ns/shop/sa/orders',
    action: `GET /orders/${i}`,
    decision: i % 5 ? 'allow' : 'deny',
    reason: 'allowed',
    rule: `r${i % 7}`,
    status: 200,
  }) as const;
let n = 0;
for (const mode of ['bare', 'query', 'bare', 'query', 'bare', 'query']) {
  const t0 = `t${n++}`;
  const store = await openStore(`${URL_}?table=${schema}.${t0}`);
  if (mode === 'bare') {
    const c = new pg.Client({ connectionString: URL_ });
    await c.connect();
    for (const f of ['type', 'source', 'subject', 'rule', 'reason', 'at'])
      await c.query(`DROP INDEX ${schema}.${t0}_i_${f}`);
    for (const op of ['insert', 'update', 'delete'])
      await c.query(`DROP TRIGGER ${t0}_counts_${op} ON ${schema}.${t0}`);
    await c.end();
  }
  const t = performance.now();
  for (let b = 0; b < 10; b++) await store.append(Array.from({ length: 10000 }, (_, j) => ev(b * 10000 + j)));
  console.log(
    mode,
    Math.round(100000 / ((performance.now() - t) / 1000)),
    'events/s (100,000 in batches of 10,000)',
  );
  await store.close();
}
const c = new pg.Client({ connectionString: URL_ });
await c.connect();
await c.query(`DROP SCHEMA ${schema} CASCADE`);
await c.end();
