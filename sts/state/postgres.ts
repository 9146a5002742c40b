import pg from 'pg';
import { StsError } from '../errors.ts';
import type {
  JoinTokenRecord,
  RedeemResult,
  RevocationEntry,
  StoredJoinToken,
  StsStateStore,
} from './store.ts';
import { JOIN_TOKEN_RETAIN_MS } from './store.ts';

/** Options of {@link PostgresStateStore.open}. */
export interface PostgresStateStoreOptions {
  readonly connectionString: string;
  /** Schema holding the two tables; created if missing. */
  readonly schema?: string;
  readonly maxConnections?: number;
}

const IDENT = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * A {@link StsStateStore} in PostgreSQL, shared by every STS replica: tables
 * `sts_join_tokens` and `sts_revocations` in `schema`. Redemption is one conditional UPDATE,
 * so of two replicas redeeming one token at once exactly one succeeds.
 */
export class PostgresStateStore implements StsStateStore {
  readonly kind = 'postgres';
  readonly #pool: pg.Pool;
  readonly #t: { tokens: string; revoked: string };

  private constructor(pool: pg.Pool, schema: string) {
    this.#pool = pool;
    this.#t = { tokens: `"${schema}".sts_join_tokens`, revoked: `"${schema}".sts_revocations` };
  }

  /** Connects and creates the schema and tables if needed; `ERR_STS_STATE_UNAVAILABLE` when it cannot. */
  static async open(options: PostgresStateStoreOptions): Promise<PostgresStateStore> {
    const schema = options.schema ?? 'portcullis';
    if (!IDENT.test(schema)) throw new TypeError('"schema" must be a lowercase SQL identifier');
    const pool = new pg.Pool({
      connectionString: options.connectionString,
      max: options.maxConnections ?? 4,
      connectionTimeoutMillis: 5000,
    });
    // An idle client's error (server restart) must not crash the process; the next query reconnects.
    pool.on('error', () => {});
    const store = new PostgresStateStore(pool, schema);
    try {
      // Replicas starting together would race on the catalog: the DDL runs under an advisory lock.
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await client.query(`SELECT pg_advisory_xact_lock(hashtext('portcullis-sts-state'))`);
        await client.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
        await client.query(`CREATE TABLE IF NOT EXISTS ${store.#t.tokens} (
          id text PRIMARY KEY, workload text NOT NULL, spiffe_id text NOT NULL,
          created_at bigint NOT NULL, expires_at bigint NOT NULL, created_by text NOT NULL, used_at bigint)`);
        await client.query(`CREATE TABLE IF NOT EXISTS ${store.#t.revoked} (
          kind text NOT NULL, value text NOT NULL, expires_at bigint NOT NULL, PRIMARY KEY (kind, value))`);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        throw err;
      } finally {
        client.release();
      }
    } catch (err) {
      await pool.end().catch(() => {});
      throw unavailable(err);
    }
    return store;
  }

  async #q<R extends pg.QueryResultRow>(text: string, args: unknown[]): Promise<pg.QueryResult<R>> {
    try {
      return await this.#pool.query<R>(text, args);
    } catch (err) {
      if ((err as { code?: string }).code === '23505')
        throw new StsError('ERR_STS_STATE_CONFLICT', 'a join token with this id already exists');
      throw unavailable(err);
    }
  }

  async addJoinToken(r: JoinTokenRecord): Promise<void> {
    await this.#q(
      `INSERT INTO ${this.#t.tokens} (id, workload, spiffe_id, created_at, expires_at, created_by) VALUES ($1,$2,$3,$4,$5,$6)`,
      [r.id, r.workload, r.spiffeId, r.createdAt, r.expiresAt, r.createdBy],
    );
    // Housekeeping rides on the (rare) creations: tokens long past expiry go.
    await this.#q(`DELETE FROM ${this.#t.tokens} WHERE expires_at + $1 <= $2`, [
      JOIN_TOKEN_RETAIN_MS,
      r.createdAt,
    ]);
  }

  async findJoinToken(id: string): Promise<StoredJoinToken | undefined> {
    const res = await this.#q<TokenRow>(`SELECT * FROM ${this.#t.tokens} WHERE id = $1`, [id]);
    const row = res.rows[0];
    if (!row) return undefined;
    return row.used_at === null
      ? { record: toRecord(row) }
      : { record: toRecord(row), usedAt: Number(row.used_at) };
  }

  async redeemJoinToken(id: string, nowMs: number): Promise<RedeemResult> {
    const res = await this.#q<TokenRow>(
      `UPDATE ${this.#t.tokens} SET used_at = $2 WHERE id = $1 AND used_at IS NULL AND expires_at > $2 RETURNING *`,
      [id, nowMs],
    );
    if (res.rows[0]) return { ok: true, record: toRecord(res.rows[0]) };
    const found = await this.findJoinToken(id);
    if (!found) return { ok: false, reason: 'unknown' };
    return { ok: false, reason: found.usedAt !== undefined ? 'used' : 'expired', record: found.record };
  }

  async revoke(e: RevocationEntry): Promise<void> {
    await this.#q(
      `INSERT INTO ${this.#t.revoked} (kind, value, expires_at) VALUES ($1,$2,$3)
       ON CONFLICT (kind, value) DO UPDATE SET expires_at = GREATEST(${this.#t.revoked}.expires_at, EXCLUDED.expires_at)`,
      [e.kind, e.value, e.expiresAt],
    );
  }

  async revocations(nowMs: number): Promise<RevocationEntry[]> {
    const res = await this.#q<{ kind: 'jti' | 'serial'; value: string; expires_at: string }>(
      `SELECT kind, value, expires_at FROM ${this.#t.revoked} WHERE expires_at > $1`,
      [nowMs],
    );
    return res.rows.map((r) => ({ kind: r.kind, value: r.value, expiresAt: Number(r.expires_at) }));
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }
}

interface TokenRow {
  id: string;
  workload: string;
  spiffe_id: string;
  created_at: string;
  expires_at: string;
  created_by: string;
  used_at: string | null;
}

function toRecord(row: TokenRow): JoinTokenRecord {
  return {
    id: row.id,
    workload: row.workload,
    spiffeId: row.spiffe_id,
    createdAt: Number(row.created_at),
    expiresAt: Number(row.expires_at),
    createdBy: row.created_by,
  };
}

function unavailable(err: unknown): StsError {
  // The message names the failure, never the connection string (it may hold a password).
  return new StsError('ERR_STS_STATE_UNAVAILABLE', `PostgreSQL state store: ${(err as Error).message}`, {
    cause: err,
  });
}
