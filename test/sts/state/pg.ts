// The test PostgreSQL (real, trust auth) and a per-run schema dropper for the STS state tests.
import pg from 'pg';

export const PG_URL = 'postgres://postgres@127.0.0.1:5432/test';

/** A schema name no other test file or run uses. */
export const freshSchema = (prefix: string) => `${prefix}_${process.pid}_${Math.floor(Math.random() * 1e9)}`;

export async function dropSchema(schema: string): Promise<void> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await c.end();
  }
}
