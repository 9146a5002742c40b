import pg from 'pg';
import type { AuditEvent } from '../../core/index.ts';
import type { AuditRecord } from '../record.ts';
import { GENESIS_PREV, buildRecord, parseRecordLine } from '../record.ts';
import { StoreError } from '../errors.ts';
import type { RecordFilter } from '../query-filter.ts';
import type { AuditStore, LogHead, StoreDeps } from './store.ts';
import { GroupCommitter, linesToBuffers } from './store.ts';

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
const PAGE = 10_000;

/**
 * A log shared by many collectors in PostgreSQL. Writers take a transaction-scoped advisory
 * lock, read the head inside the transaction, and insert the whole group-committed batch with
 * one multi-row `INSERT … SELECT unnest(…)`; the commit is the durability point.
 */
export class PostgresStore implements AuditStore {
  readonly kind = 'postgres';
  readonly table: string;
  readonly #pool: pg.Pool;
  readonly #committer: GroupCommitter;
  readonly #clock: () => Date;
  readonly #readOnly: boolean;
  #closed = false;

  private constructor(pool: pg.Pool, table: string, deps: StoreDeps & { readOnly?: boolean }) {
    this.#readOnly = deps.readOnly ?? false;
    this.#pool = pool;
    this.table = table;
    this.#clock = deps.clock ?? (() => new Date());
    this.#committer = new GroupCommitter((events) => this.#write(events), 20_000);
  }

  /** Connects, creates the schema and table if missing, and returns the store. */
  static async open(options: PostgresStoreOptions): Promise<PostgresStore> {
    const table = options.table ?? 'audit_records';
    const parts = table.split('.');
    if (parts.length > 2 || !parts.every((p) => IDENT.test(p)))
      throw new TypeError('"table" must be a lowercase SQL identifier, optionally schema-qualified');
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
      if (parts.length === 2) await pool.query(`CREATE SCHEMA IF NOT EXISTS ${parts[0]}`);
      await pool.query(`CREATE TABLE IF NOT EXISTS ${table} (
        seq bigint PRIMARY KEY,
        at timestamptz NOT NULL,
        hash text NOT NULL,
        type text NOT NULL,
        source text,
        subject text,
        decision text,
        line text NOT NULL
      )`);
    } catch (err) {
      await pool.end().catch(() => {});
      throw unavailable(options.connectionString, err);
    }
    return new PostgresStore(pool, table, options);
  }

  append(events: readonly AuditEvent[]): Promise<AuditRecord[]> {
    if (this.#closed) return Promise.reject(new StoreError('ERR_AUDIT_STORE_CLOSED', 'the store is closed'));
    if (this.#readOnly)
      return Promise.reject(
        new StoreError('ERR_AUDIT_STORE_UNAVAILABLE', `postgres: ${this.table} opened read-only`),
      );
    return this.#committer.submit(events);
  }

  async #write(events: readonly AuditEvent[]): Promise<AuditRecord[]> {
    const client = await this.#pool.connect().catch((err: unknown) => {
      throw unavailable('postgres', err);
    });
    try {
      // One round trip for BEGIN, the lock and the head (simple protocol, no parameters: the
      // table name is a checked identifier and the lock key is derived from it).
      const lockKey = `portcullis-audit:${this.table}`.replace(/'/g, "''");
      const results = (await client.query(
        `BEGIN; SELECT pg_advisory_xact_lock(hashtext('${lockKey}')); SELECT seq, hash FROM ${this.table} ORDER BY seq DESC LIMIT 1`,
      )) as unknown as pg.QueryResult<{ seq: string; hash: string }>[];
      // One writer at a time across every collector sharing this table: the lock above.
      const head = results[2]!;
      let seq = head.rows[0] ? Number(head.rows[0].seq) + 1 : 0;
      let prev = head.rows[0]?.hash ?? GENESIS_PREV;
      const now = this.#clock();
      const time = now.toISOString();
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
      ] = [[], [], [], [], [], [], [], []];
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
        prev = record.hash;
        seq++;
      }
      await client.query(
        `INSERT INTO ${this.table} (seq, at, hash, type, source, subject, decision, line)
         SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])`,
        cols,
      );
      await client.query('COMMIT');
      return records;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      if (err instanceof StoreError) throw err;
      throw unavailable('postgres', err);
    } finally {
      client.release();
    }
  }

  async *readLines(fromSeq = 0): AsyncIterable<string> {
    this.#check();
    let after = fromSeq - 1;
    for (;;) {
      const { rows } = await this.#pool.query<{ seq: string; line: string }>(
        `SELECT seq, line FROM ${this.table} WHERE seq > $1 ORDER BY seq LIMIT ${PAGE}`,
        [after],
      );
      for (const r of rows) yield r.line;
      if (rows.length < PAGE) return;
      after = Number(rows.at(-1)!.seq);
    }
  }

  readBuffers(): AsyncIterable<Buffer> {
    return linesToBuffers(this.readLines(0));
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
    this.#check();
    const where: string[] = ['seq >= $1'];
    const args: unknown[] = [filter.fromSeq ?? 0];
    const add = (sql: string, value: unknown) => {
      args.push(value);
      where.push(`${sql} $${args.length}`);
    };
    if (filter.since !== undefined) add('at >=', filter.since);
    if (filter.until !== undefined) add('at <', filter.until);
    if (filter.type !== undefined) add('type =', filter.type);
    if (filter.source !== undefined) add('source =', filter.source);
    if (filter.subject !== undefined) add('subject =', filter.subject);
    if (filter.decision !== undefined) add('decision =', filter.decision);
    args.push(Math.max(0, filter.limit));
    const { rows } = await this.#pool.query<{ line: string }>(
      `SELECT line FROM ${this.table} WHERE ${where.join(' AND ')} ORDER BY seq LIMIT $${args.length}`,
      args,
    );
    return rows.map((r) => parseRecordLine(r.line));
  }

  async size(): Promise<number> {
    return (await this.head()).size;
  }

  async head(): Promise<LogHead> {
    this.#check();
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

function unavailable(where: string, err: unknown): StoreError {
  const e = err as NodeJS.ErrnoException & { errors?: NodeJS.ErrnoException[] };
  const code = e.code ?? e.errors?.[0]?.code;
  const safeWhere = where.replace(/\/\/[^@/]*@/, '//'); // never print credentials of a URL
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
