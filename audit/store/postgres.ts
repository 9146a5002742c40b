import pg from 'pg';
import type { AuditEvent } from '../../core/index.ts';
import { withoutCredentials } from '../../core/index.ts';
import type { AuditRecord } from '../record.ts';
import { GENESIS_PREV, buildRecord, parseRecordLine } from '../record.ts';
import { StoreError } from '../errors.ts';
import type { AggregateGroup, AggregateQuery, FilterField, RecordFilter } from '../query-filter.ts';
import { INTERVALS, sortGroups } from '../query-filter.ts';
import type {
  AppendOutcome,
  AuditStore,
  CommitItem,
  IdempotencyClaim,
  IdempotencyEntry,
  LogHead,
  ReadBuffersOptions,
  StoreDeps,
} from './store.ts';
import {
  DEFAULT_IDEMPOTENCY_RETENTION_MS,
  GroupCommitter,
  linesToBuffers,
  committedAppends,
  splitOutcomes,
} from './store.ts';
import type { SealBody } from '../seal.ts';

/** Options of {@link openPostgresStore}. */
export interface PostgresStoreOptions extends StoreDeps {
  /** `postgres://user@host:port/db`. */
  readonly connectionString: string;
  /** Table name, optionally `schema.table` (the schema is created if missing). Default `audit_records`. */
  readonly table?: string;
  /** Pool size (default 4). */
  readonly poolSize?: number;
  /** Create nothing and refuse appends; a missing table is `ERR_AUDIT_STORE_UNAVAILABLE` (for `verify`). */
  readonly readOnly?: boolean;
}

const IDENT = /^[a-z_][a-z0-9_]{0,62}$/;
/** Most rows per page of a read; pages also shrink so that one holds about {@link PAGE_BYTES}. */
const PAGE = 10_000;
const PAGE_BYTES = 4 * 1_048_576;
/** Suffixes of the side tables (seal, idempotency keys, refused rows). */
const SIDE = { seal: '_seal', keys: '_keys', quarantine: '_quarantine', counts: '_counts' } as const;

/**
 * A log shared by many collectors in PostgreSQL. Writers take a transaction-scoped advisory
 * lock, read the head and the seal inside the transaction, and insert the whole group-committed
 * batch with one statement: records (`INSERT … SELECT unnest(…)`), the idempotency keys, and,
 * with a sealer, the new seal; the commit is the durability point. With a sealer, rows past the
 * seal (written by someone without a trusted key) are moved to `<table>_quarantine`, never built on.
 */
export class PostgresStore implements AuditStore {
  readonly kind = 'postgres';
  readonly table: string;
  readonly #pool: pg.Pool;
  readonly #committer: GroupCommitter;
  readonly #clock: () => Date;
  readonly #readOnly: boolean;
  readonly #deps: StoreDeps;
  readonly #retention: number;
  #closed = false;
  #lastPrune = 0;

  private constructor(pool: pg.Pool, table: string, deps: StoreDeps & { readOnly?: boolean }) {
    this.#readOnly = deps.readOnly ?? false;
    this.#deps = deps;
    this.#retention = deps.idempotency?.retentionMs ?? DEFAULT_IDEMPOTENCY_RETENTION_MS;
    this.#pool = pool;
    this.table = table;
    this.#clock = deps.clock ?? (() => new Date());
    this.#committer = new GroupCommitter((items) => this.#write(items), 20_000);
  }

  /** Connects, creates the schema and table if missing, and returns the store. */
  static async open(options: PostgresStoreOptions): Promise<PostgresStore> {
    const table = options.table ?? 'audit_records';
    const parts = table.split('.');
    if (
      parts.length > 2 ||
      !parts.every((p) => IDENT.test(p)) ||
      parts.at(-1)!.length > 63 - SIDE.quarantine.length
    )
      throw new TypeError(
        `"table" must be a lowercase SQL identifier of at most ${63 - SIDE.quarantine.length} characters, optionally schema-qualified`,
      );
    const pool = new pg.Pool({
      connectionString: options.connectionString,
      max: options.poolSize ?? 4,
      connectionTimeoutMillis: 5_000,
    });
    // An idle client that loses its connection must not crash the process; the next query fails instead.
    pool.on('error', () => {});
    if (options.readOnly) {
      let exists: boolean;
      try {
        const { rows } = await pool.query<{ t: string | null }>('SELECT to_regclass($1) AS t', [table]);
        exists = rows[0]?.t !== null && rows[0]?.t !== undefined;
      } catch (err) {
        await pool.end().catch(() => {});
        throw unavailable(options.connectionString, err);
      }
      if (!exists) {
        await pool.end().catch(() => {});
        throw new StoreError('ERR_AUDIT_STORE_UNAVAILABLE', `postgres: table ${table} does not exist`);
      }
      return new PostgresStore(pool, table, options);
    }
    try {
      await migrate(pool, table, parts);
    } catch (err) {
      await pool.end().catch(() => {});
      throw unavailable(options.connectionString, err);
    }
    return new PostgresStore(pool, table, options);
  }

  /** Refused while closed or broken, then group-committed (shared with the other stores). */
  readonly #appends = committedAppends(
    { submit: (events, claim) => this.#committer.submit(events, claim) },
    () => this.#refuse(),
  );

  append(events: readonly AuditEvent[]): Promise<AuditRecord[]> {
    return this.#appends.append(events);
  }

  appendOnce(events: readonly AuditEvent[], claim: IdempotencyClaim): Promise<AppendOutcome> {
    return this.#appends.appendOnce(events, claim);
  }

  async idempotencyEntry(source: string, key: string): Promise<IdempotencyEntry | undefined> {
    this.#check();
    const { rows } = await this.#pool
      .query<KeyRow>(
        `SELECT source, key, body_hash, first_seq, last_seq, at_ms FROM ${this.table}${SIDE.keys}
         WHERE source = $1 AND key = $2 AND at_ms >= $3`,
        [source, key, this.#clock().getTime() - this.#retention],
      )
      .catch((err: unknown) => {
        throw unavailable('postgres', err);
      });
    return rows[0] ? entryOf(rows[0]) : undefined;
  }

  async seals(): Promise<string[]> {
    this.#check();
    // A log written before seals has no seal table: no seals.
    const { rows } = await this.#pool
      .query<{ note: string }>(
        `SELECT note FROM ${this.table}${SIDE.seal} WHERE to_regclass($1) IS NOT NULL`,
        [`${this.table}${SIDE.seal}`],
      )
      .catch(() => ({ rows: [] as { note: string }[] }));
    return rows.map((r) => r.note);
  }

  #refuse(): StoreError | undefined {
    if (this.#closed) return new StoreError('ERR_AUDIT_STORE_CLOSED', 'the store is closed');
    if (this.#readOnly)
      return new StoreError('ERR_AUDIT_STORE_UNAVAILABLE', `postgres: ${this.table} opened read-only`);
    return undefined;
  }

  /**
   * What the seal row lets a writer build on: the sealed size and head. Rows past it are an
   * uncovered tail; a seal that no trusted key signed, or that the rows contradict, is corruption.
   */
  #trustedHead(
    head: { size: number; hash: string },
    sealRow: { size: string; note: string } | undefined,
    hashAt: (seq: number) => Promise<string | undefined>,
  ): Promise<SealBody> | SealBody {
    const sealer = this.#deps.sealer!;
    let sealed: SealBody | undefined;
    if (sealRow) {
      sealed = sealer.open(sealRow.note);
      if (!sealed)
        throw new StoreError(
          'ERR_AUDIT_STORE_CORRUPT',
          `postgres: the seal of ${this.table} (size ${sealRow.size}) is signed by none of the trusted keys (${sealer.trusted.join(', ')}); add the other collectors' keys to trustedKeys, or run portcullis audit verify`,
        );
    } else if (this.#deps.adopt) {
      sealed = sealer.open(this.#deps.adopt);
    }
    if (!sealed && head.size > 0)
      // Rows, but no seal and no adopted checkpoint: a table from before seals, or a collector
      // without its data dir. Moving every row aside would start a new log at seq 0.
      throw new StoreError(
        'ERR_AUDIT_STORE_CORRUPT',
        `postgres: none of the ${head.size} records of ${this.table} is covered by a seal or by the collector's last checkpoint; refusing to move them aside (restore the collector's data dir, or run portcullis audit verify)`,
      );
    sealed ??= { origin: '', size: 0, chainHead: GENESIS_PREV };
    const base = sealed;
    if (head.size < base.size)
      throw new StoreError(
        'ERR_AUDIT_STORE_CORRUPT',
        `postgres: ${this.table} holds ${head.size} records but its seal covers ${base.size}; run portcullis audit verify`,
      );
    if (head.size === base.size) {
      if (head.hash !== base.chainHead)
        throw new StoreError(
          'ERR_AUDIT_STORE_CORRUPT',
          `postgres: record ${base.size - 1} of ${this.table} differs from what its seal covers; run portcullis audit verify`,
        );
      return base;
    }
    return hashAt(base.size - 1).then((h) => {
      if (base.size > 0 && h !== base.chainHead)
        throw new StoreError(
          'ERR_AUDIT_STORE_CORRUPT',
          `postgres: record ${base.size - 1} of ${this.table} differs from what its seal covers; run portcullis audit verify`,
        );
      return base;
    });
  }

  async #write(items: readonly CommitItem[]): Promise<AppendOutcome[]> {
    const client = await this.#pool.connect().catch((err: unknown) => {
      throw unavailable('postgres', err);
    });
    let refused: { from: number; to: number } | undefined;
    try {
      // One round trip for BEGIN, the lock, the head and the seal (simple protocol, no
      // parameters: the table name is a checked identifier and the lock key is derived from it).
      const lockKey = `portcullis-audit:${this.table}`.replace(/'/g, "''");
      const results = (await client.query(
        `BEGIN; SELECT pg_advisory_xact_lock(hashtext('${lockKey}')); SELECT seq, hash FROM ${this.table} ORDER BY seq DESC LIMIT 1; SELECT size, note FROM ${this.table}${SIDE.seal} WHERE id = 1`,
      )) as unknown as pg.QueryResult[];
      // One writer at a time across every collector sharing this table: the lock above.
      const headRow = results[2]!.rows[0] as { seq: string; hash: string } | undefined;
      const head = headRow
        ? { size: Number(headRow.seq) + 1, hash: headRow.hash }
        : { size: 0, hash: GENESIS_PREV };
      let seq = head.size;
      let prev = head.hash;
      if (this.#deps.sealer) {
        const base = await this.#trustedHead(
          head,
          results[3]!.rows[0] as { size: string; note: string } | undefined,
          async (s) =>
            (await client.query<{ hash: string }>(`SELECT hash FROM ${this.table} WHERE seq = $1`, [s]))
              .rows[0]?.hash,
        );
        if (base.size < head.size) {
          // Rows no trusted seal covers: refused, kept aside for inspection, never built on.
          await client.query(
            `WITH moved AS (DELETE FROM ${this.table} WHERE seq >= $1 RETURNING *)
             INSERT INTO ${this.table}${SIDE.quarantine} (${ROW_COLUMNS}) SELECT ${ROW_COLUMNS} FROM moved`,
            [base.size],
          );
          refused = { from: base.size, to: head.size - 1 };
        }
        seq = base.size;
        prev = base.chainHead;
      }
      const now = this.#clock();
      const time = now.toISOString();
      const nowMs = now.getTime();
      // Keys already stored (by this or another collector): those requests append nothing.
      const replays = new Map<number, IdempotencyEntry>();
      const claimed = items.flatMap((it, i) => (it.claim ? [[i, it.claim] as const] : []));
      if (claimed.length) {
        const { rows } = await client.query<KeyRow>(
          `SELECT k.source, k.key, k.body_hash, k.first_seq, k.last_seq, k.at_ms
           FROM ${this.table}${SIDE.keys} k JOIN unnest($1::text[], $2::text[]) AS u(source, key)
           ON k.source = u.source AND k.key = u.key WHERE k.at_ms >= $3`,
          [claimed.map(([, c]) => c.source), claimed.map(([, c]) => c.key), nowMs - this.#retention],
        );
        const stored = new Map(rows.map((r) => [`${r.source} ${r.key}`, entryOf(r)]));
        for (const [i, c] of claimed) {
          const e = stored.get(`${c.source} ${c.key}`);
          if (e) replays.set(i, e);
        }
      }
      const records: AuditRecord[] = [];
      const cols: [
        number[],
        string[],
        string[],
        string[],
        (string | null)[],
        (string | null)[],
        (string | null)[],
        string[],
        (string | null)[],
        (string | null)[],
      ] = [[], [], [], [], [], [], [], [], [], []];
      const keys: [string[], string[], string[], number[], number[]] = [[], [], [], [], []];
      const inBatch = new Map<string, IdempotencyEntry>();
      for (let i = 0; i < items.length; i++) {
        if (replays.has(i)) continue;
        const { events, claim } = items[i]!;
        const id = claim ? `${claim.source} ${claim.key}` : '';
        const earlier = claim ? inBatch.get(id) : undefined;
        if (earlier) {
          // The same key twice in one group (two collectors' retries cannot meet here, one
          // collector's can only after a 409): the second is a replay of the first.
          replays.set(i, earlier);
          continue;
        }
        const firstSeq = seq;
        for (const event of events) {
          const { record, line } = buildRecord(seq, time, event, prev);
          records.push(record);
          cols[0].push(seq);
          cols[1].push(time);
          cols[2].push(record.hash);
          cols[3].push(event.type);
          cols[4].push(event.source ?? null);
          cols[5].push(event.subject ?? null);
          cols[6].push(event.decision ?? null);
          cols[7].push(line);
          cols[8].push(event.rule ?? null);
          cols[9].push(event.reason ?? null);
          prev = record.hash;
          seq++;
        }
        if (claim) {
          inBatch.set(id, { ...claim, firstSeq, lastSeq: seq - 1, at: nowMs });
          keys[0].push(claim.source);
          keys[1].push(claim.key);
          keys[2].push(claim.bodyHash);
          keys[3].push(firstSeq);
          keys[4].push(seq - 1);
        }
      }
      const seal = this.#deps.sealer && records.length ? this.#deps.sealer.seal(seq, prev) : undefined;
      if (records.length) {
        await client.query(
          `WITH r AS (
             INSERT INTO ${this.table} (seq, at, hash, type, source, subject, decision, line, rule, reason)
             SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
           ), k AS (
             INSERT INTO ${this.table}${SIDE.keys} (source, key, body_hash, first_seq, last_seq, at_ms)
             SELECT s, k, h, f, l, $16::bigint FROM unnest($11::text[], $12::text[], $13::text[], $14::bigint[], $15::bigint[]) AS u(s, k, h, f, l)
             ON CONFLICT (source, key) DO UPDATE SET body_hash = EXCLUDED.body_hash, first_seq = EXCLUDED.first_seq,
               last_seq = EXCLUDED.last_seq, at_ms = EXCLUDED.at_ms
           )
           INSERT INTO ${this.table}${SIDE.seal} (id, size, note) SELECT 1, $17::bigint, $18::text WHERE $18::text IS NOT NULL
           ON CONFLICT (id) DO UPDATE SET size = EXCLUDED.size, note = EXCLUDED.note`,
          [...cols, ...keys, nowMs, seq, seal ?? null],
        );
      }
      if (nowMs - this.#lastPrune > 60_000) {
        this.#lastPrune = nowMs;
        await client.query(`DELETE FROM ${this.table}${SIDE.keys} WHERE at_ms < $1`, [
          nowMs - this.#retention,
        ]);
      }
      await client.query('COMMIT');
      if (refused) this.#deps.onUncovered?.({ ...refused, keptIn: `${this.table}${SIDE.quarantine}` });
      return splitOutcomes(items, records, replays);
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      if (err instanceof StoreError || err instanceof TypeError) throw err;
      throw unavailable('postgres', err);
    } finally {
      client.release();
    }
  }

  async *readLines(fromSeq = 0): AsyncIterable<string> {
    this.#check();
    let after = fromSeq - 1;
    // Pages start small and grow while lines are small: a page holds about PAGE_BYTES, so
    // that a log of large events is never one huge result in memory.
    let rowsPerPage = 64;
    for (;;) {
      const { rows } = await this.#pool.query<{ seq: string; line: string }>(
        `SELECT seq, line FROM ${this.table} WHERE seq > $1 ORDER BY seq LIMIT ${rowsPerPage}`,
        [after],
      );
      let longest = 1;
      for (const r of rows) if (r.line.length > longest) longest = r.line.length;
      const full = rows.length === rowsPerPage;
      if (rows.length) after = Number(rows.at(-1)!.seq);
      for (const r of rows) yield r.line;
      if (!full) return;
      rowsPerPage = Math.max(1, Math.min(PAGE, Math.floor(PAGE_BYTES / longest)));
    }
  }

  readBuffers(options: ReadBuffersOptions = {}): AsyncIterable<Buffer> {
    return linesToBuffers(this.readLines(options.fromSeq ?? 0));
  }

  async *read(fromSeq: number, toSeq?: number): AsyncIterable<AuditRecord> {
    const end = toSeq ?? Number.MAX_SAFE_INTEGER;
    for await (const line of this.readLines(fromSeq)) {
      const record = parseRecordLine(line);
      if (record.seq >= end) return;
      yield record;
    }
  }

  async query(filter: RecordFilter): Promise<AuditRecord[]> {
    return (await this.queryLines(filter)).map((r) => parseRecordLine(r.line));
  }

  async queryLines(filter: RecordFilter): Promise<{ seq: number; line: string }[]> {
    this.#check();
    const desc = filter.order === 'desc';
    const { where, args } = whereOf(filter);
    if (desc) {
      if (filter.beforeSeq !== undefined) {
        args.push(filter.beforeSeq);
        where.push(`seq < $${args.length}`);
      }
    } else {
      args.push(filter.fromSeq ?? 0);
      where.push(`seq >= $${args.length}`);
    }
    args.push(Math.max(0, filter.limit));
    const { rows } = await this.#pool
      .query<{ seq: string; line: string }>(
        `SELECT seq, line FROM ${this.table} ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
         ORDER BY seq ${desc ? 'DESC' : ''} LIMIT $${args.length}`,
        args,
      )
      .catch((err: unknown) => {
        throw unavailable('postgres', err);
      });
    return rows.map((r) => ({ seq: Number(r.seq), line: r.line }));
  }

  /**
   * Counts from `<table>_counts` for the whole minutes of the range, and from the rows for the
   * partial minutes at its ends: exact, and as fast for a day of a billion records as of a thousand.
   */
  async aggregate(query: AggregateQuery): Promise<AggregateGroup[]> {
    this.#check();
    const f = query.filter;
    const since = f.since !== undefined ? Date.parse(f.since) : undefined;
    const until = f.until !== undefined ? Date.parse(f.until) : undefined;
    const lo = since !== undefined ? Math.ceil(since / 60_000) * 60_000 : undefined;
    const hi = until !== undefined ? Math.floor(until / 60_000) * 60_000 : undefined;
    const iso = (ms: number) => new Date(ms).toISOString();
    const parts: { counts: boolean; since?: string; until?: string }[] = [];
    if (lo !== undefined && hi !== undefined && lo >= hi)
      parts.push({ counts: false, since: f.since, until: f.until });
    else {
      parts.push({
        counts: true,
        since: lo !== undefined ? iso(lo) : undefined,
        until: hi !== undefined ? iso(hi) : undefined,
      });
      if (since !== undefined && since < lo!) parts.push({ counts: false, since: f.since, until: iso(lo!) });
      if (until !== undefined && hi! < until) parts.push({ counts: false, since: iso(hi!), until: f.until });
    }
    const merged = new Map<
      string,
      { key: Partial<Record<FilterField, string | null>>; bucket?: string; count: number }
    >();
    for (const part of parts) {
      const { where, args } = whereOf({ ...f, since: undefined, until: undefined });
      const time = part.counts ? 'minute' : 'at';
      if (part.since !== undefined) {
        args.push(part.since);
        where.push(`${time} >= $${args.length}`);
      }
      if (part.until !== undefined) {
        args.push(part.until);
        where.push(`${time} < $${args.length}`);
      }
      const cols: string[] = query.groupBy.map((g) => COLUMN[g]);
      if (query.interval) {
        // Buckets aligned to the epoch, as the other stores count them.
        const seconds = INTERVALS[query.interval] / 1000;
        cols.push(`floor(extract(epoch FROM ${time}) / ${seconds}) * ${seconds}`);
      }
      const select = [...cols.map((c, i) => `${c} AS g${i}`), `${part.counts ? 'sum(n)' : 'count(*)'} AS n`];
      const { rows } = await this.#pool
        .query<Record<string, string | null>>(
          `SELECT ${select.join(', ')} FROM ${this.table}${part.counts ? SIDE.counts : ''}
           ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
           ${cols.length ? `GROUP BY ${cols.map((_, i) => `g${i}`).join(', ')}` : ''}`,
          args,
        )
        .catch((err: unknown) => {
          throw unavailable('postgres', err);
        });
      for (const r of rows) {
        const count = Number(r.n);
        if (!count) continue;
        const key: Partial<Record<FilterField, string | null>> = {};
        query.groupBy.forEach((g, i) => (key[g] = r[`g${i}`] ?? null));
        const bucket = query.interval
          ? new Date(Number(r[`g${query.groupBy.length}`]) * 1000).toISOString()
          : undefined;
        const id = JSON.stringify([bucket, key]);
        const g = merged.get(id);
        if (g) g.count += count;
        else merged.set(id, { key, ...(bucket ? { bucket } : {}), count });
      }
    }
    return sortGroups([...merged.values()].filter((g) => g.count > 0));
  }

  async size(): Promise<number> {
    return (await this.head()).size;
  }

  /**
   * The head of the log. With a sealer, the head the trusted seal covers (rows past it are not
   * the log's until a seal covers them); otherwise the last row.
   */
  async head(): Promise<LogHead> {
    this.#check();
    if (this.#deps.sealer) {
      const { rows } = await this.#pool.query<{ note: string }>(
        `SELECT note FROM ${this.table}${SIDE.seal} WHERE id = 1`,
      );
      const note = rows[0]?.note ?? this.#deps.adopt;
      if (!note) return { size: 0, hash: GENESIS_PREV };
      const sealed = this.#deps.sealer.open(note);
      if (!sealed)
        throw new StoreError(
          'ERR_AUDIT_STORE_CORRUPT',
          `postgres: the seal of ${this.table} is signed by none of the trusted keys (${this.#deps.sealer.trusted.join(', ')})`,
        );
      return { size: sealed.size, hash: sealed.chainHead };
    }
    const { rows } = await this.#pool.query<{ seq: string; hash: string }>(
      `SELECT seq, hash FROM ${this.table} ORDER BY seq DESC LIMIT 1`,
    );
    return rows[0] ? { size: Number(rows[0].seq) + 1, hash: rows[0].hash } : { size: 0, hash: GENESIS_PREV };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#committer.idle();
    await this.#pool.end();
  }

  #check(): void {
    if (this.#closed) throw new StoreError('ERR_AUDIT_STORE_CLOSED', 'the store is closed');
  }
}

interface KeyRow {
  source: string;
  key: string;
  body_hash: string;
  first_seq: string;
  last_seq: string;
  at_ms: string;
}

function entryOf(r: KeyRow): IdempotencyEntry {
  return {
    source: r.source,
    key: r.key,
    bodyHash: r.body_hash,
    firstSeq: Number(r.first_seq),
    lastSeq: Number(r.last_seq),
    at: Number(r.at_ms),
  };
}

/** Columns of a record row, in the order of the table (the quarantine table has one more). */
const ROW_COLUMNS = 'seq, at, hash, type, source, subject, decision, line, rule, reason';
/** The column of each filter field (filled by the writer from the event). */
const COLUMN: Record<FilterField, string> = {
  type: 'type',
  source: 'source',
  subject: 'subject',
  decision: 'decision',
  rule: 'rule',
  reason: 'reason',
};

/** WHERE terms and arguments of a filter's fields and time range. */
function whereOf(filter: Omit<RecordFilter, 'limit'>): { where: string[]; args: unknown[] } {
  const where: string[] = [];
  const args: unknown[] = [];
  const add = (sql: string, value: unknown) => {
    args.push(value);
    where.push(`${sql} $${args.length}`);
  };
  if (filter.since !== undefined) add('at >=', filter.since);
  if (filter.until !== undefined) add('at <', filter.until);
  for (const f of Object.keys(COLUMN) as FilterField[])
    if (filter[f] !== undefined) add(`${COLUMN[f]} =`, filter[f]);
  return { where, args };
}

/**
 * Creates or upgrades the tables and indexes, under a session advisory lock so that collectors
 * starting together do not race. Tables from before `rule` and `reason` get the columns, filled
 * from the stored lines (a line that is not JSON leaves them null: `verify` reports it).
 */
async function migrate(pool: pg.Pool, table: string, parts: string[]): Promise<void> {
  const client = await pool.connect();
  const lock = `portcullis-audit-migrate:${table}`;
  try {
    await client.query('SELECT pg_advisory_lock(hashtext($1))', [lock]);
    if (parts.length === 2) await client.query(`CREATE SCHEMA IF NOT EXISTS ${parts[0]}`);
    await client.query(`CREATE TABLE IF NOT EXISTS ${table} (
        seq bigint PRIMARY KEY,
        at timestamptz NOT NULL,
        hash text NOT NULL,
        type text NOT NULL,
        source text,
        subject text,
        decision text,
        line text NOT NULL,
        rule text,
        reason text
      )`);
    const { rows } = await client.query<{ n: string }>(
      `SELECT count(*) AS n FROM information_schema.columns
       WHERE table_schema = $1 AND table_name = $2 AND column_name IN ('rule', 'reason')`,
      parts.length === 2 ? [parts[0], parts[1]] : ['public', parts[0]],
    );
    if (Number(rows[0]!.n) < 2) {
      await client.query(
        `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS rule text, ADD COLUMN IF NOT EXISTS reason text`,
      );
      await backfill(client, table);
    }
    await client.query(`CREATE TABLE IF NOT EXISTS ${table}${SIDE.seal} (
        id int PRIMARY KEY CHECK (id = 1),
        size bigint NOT NULL,
        note text NOT NULL
      )`);
    await client.query(`CREATE TABLE IF NOT EXISTS ${table}${SIDE.keys} (
        source text NOT NULL,
        key text NOT NULL,
        body_hash text NOT NULL,
        first_seq bigint NOT NULL,
        last_seq bigint NOT NULL,
        at_ms bigint NOT NULL,
        PRIMARY KEY (source, key)
      )`);
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${table}${SIDE.quarantine} (LIKE ${table}, quarantined_at timestamptz NOT NULL DEFAULT now())`,
    );
    await client.query(
      `ALTER TABLE ${table}${SIDE.quarantine} ADD COLUMN IF NOT EXISTS rule text, ADD COLUMN IF NOT EXISTS reason text`,
    );
    // The query API's indexes (decision 0074): each filter field but the two-valued decision
    // with seq, for newest-first pages of one value; the time, for the cut minutes of aggregates.
    const name = parts.at(-1)!;
    for (const f of ['type', 'source', 'subject', 'rule', 'reason'])
      await client.query(`CREATE INDEX IF NOT EXISTS ${name}_i_${f} ON ${table} (${f}, seq)`);
    await client.query(`CREATE INDEX IF NOT EXISTS ${name}_i_at ON ${table} (at)`);
    await createCounts(client, table);
  } finally {
    await client.query('SELECT pg_advisory_unlock(hashtext($1))', [lock]).catch(() => {});
    client.release();
  }
}

/** Fields of the per-minute counts, in their column order. */
const COUNT_FIELDS = ['type', 'source', 'subject', 'decision', 'rule', 'reason'] as const;

/**
 * `<table>_counts`: records per minute and per (type, source, subject, decision, rule, reason),
 * kept by statement-level triggers on every insert, update and delete of the table — whoever
 * writes, so the counts always describe the rows as they are. Created, and filled from the rows
 * already there, in one transaction under the writers' lock (decision 0074).
 */
async function createCounts(client: pg.PoolClient, table: string): Promise<void> {
  const counts = `${table}${SIDE.counts}`;
  const { rows } = await client.query<{ t: string | null }>('SELECT to_regclass($1) AS t', [counts]);
  if (rows[0]?.t) return;
  const cols = COUNT_FIELDS.join(', ');
  const fn = `${table}${SIDE.counts}_keep`;
  const bucket = `date_bin('1 minute', at, TIMESTAMPTZ '1970-01-01 00:00:00Z')`;
  const add = (from: string, sign: string) =>
    `INSERT INTO ${counts} AS c (minute, ${cols}, n) SELECT ${bucket}, ${cols}, ${sign}count(*) FROM ${from}
       GROUP BY 1, ${cols
         .split(', ')
         .map((_, i) => i + 2)
         .join(', ')}
       ON CONFLICT (minute, ${cols}) DO UPDATE SET n = c.n + EXCLUDED.n;`;
  const lockKey = `portcullis-audit:${table}`;
  await client.query('BEGIN');
  try {
    await client.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [lockKey]);
    await client.query(`CREATE TABLE IF NOT EXISTS ${counts} (
        minute timestamptz NOT NULL, type text, source text, subject text, decision text, rule text, reason text,
        n bigint NOT NULL,
        UNIQUE NULLS NOT DISTINCT (minute, ${cols})
      )`);
    await client.query(`CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $f$
      BEGIN
        IF TG_OP IN ('DELETE', 'UPDATE') THEN ${add('old_rows', '-')} END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN ${add('new_rows', '')} END IF;
        RETURN NULL;
      END $f$`);
    const trigger = (op: string, tables: string) =>
      `CREATE TRIGGER ${table.split('.').at(-1)}_counts_${op.toLowerCase()} AFTER ${op} ON ${table}
       REFERENCING ${tables} FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`;
    await client.query(trigger('INSERT', 'NEW TABLE AS new_rows'));
    await client.query(trigger('UPDATE', 'OLD TABLE AS old_rows NEW TABLE AS new_rows'));
    await client.query(trigger('DELETE', 'OLD TABLE AS old_rows'));
    await client.query(add(table, ''));
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/** Fills `rule` and `reason` of rows stored before those columns, page by page. */
async function backfill(client: pg.PoolClient, table: string): Promise<void> {
  for (let after = -1; ;) {
    const { rows } = await client.query<{ seq: string; line: string }>(
      `SELECT seq, line FROM ${table} WHERE seq > $1 ORDER BY seq LIMIT 10000`,
      [after],
    );
    if (!rows.length) return;
    const seqs: string[] = [];
    const rules: (string | null)[] = [];
    const reasons: (string | null)[] = [];
    for (const r of rows) {
      let event: { rule?: unknown; reason?: unknown } | undefined;
      try {
        event = (JSON.parse(r.line) as { event?: { rule?: unknown; reason?: unknown } }).event;
      } catch {
        event = undefined;
      }
      seqs.push(r.seq);
      rules.push(typeof event?.rule === 'string' ? event.rule : null);
      reasons.push(typeof event?.reason === 'string' ? event.reason : null);
    }
    await client.query(
      `UPDATE ${table} t SET rule = u.rule, reason = u.reason
       FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(seq, rule, reason) WHERE t.seq = u.seq`,
      [seqs, rules, reasons],
    );
    after = Number(rows.at(-1)!.seq);
  }
}

function unavailable(where: string, err: unknown): StoreError {
  const e = err as NodeJS.ErrnoException & { errors?: NodeJS.ErrnoException[] };
  const code = e.code ?? e.errors?.[0]?.code;
  const safeWhere = withoutCredentials(where); // never print credentials of a URL
  return new StoreError(
    'ERR_AUDIT_STORE_UNAVAILABLE',
    `${safeWhere}: PostgreSQL unavailable (${code ?? e.message.split('\n')[0]})`,
    { cause: err },
  );
}

/** Connects to PostgreSQL and opens the store; see {@link PostgresStore}. */
export function openPostgresStore(options: PostgresStoreOptions): Promise<PostgresStore> {
  return PostgresStore.open(options);
}
