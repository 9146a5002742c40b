// Shared helpers of the audit tests: events, temp dirs, a Postgres schema per test file.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { AuditEvent } from '../../core/index.ts';

/** A valid `authz.decision` event numbered `i`. */
export function decision(i: number, overrides: Partial<AuditEvent> = {}): AuditEvent {
  return {
    type: 'authz.decision',
    time: '2026-01-02T03:04:05.000Z',
    subject: 'spiffe://example.org/ns/shop/sa/web',
    target: 'spiffe://example.org/ns/shop/sa/orders',
    action: `GET /orders/${i}`,
    decision: i % 3 === 0 ? 'deny' : 'allow',
    reason: i % 3 === 0 ? 'ERR_SIDECAR_NO_RULE' : 'allowed',
    status: i % 3 === 0 ? 403 : 200,
    latencyMs: 1.5,
    ...overrides,
  };
}

/** A temp dir removed by the returned function. */
export function tempDir(prefix = 'portcullis-audit-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The test PostgreSQL of the work tree. */
export const PG_URL = 'postgres://postgres@127.0.0.1:5432/test';

/**
 * A fresh schema for one test file (parallel files never collide) and its dropper. Fails
 * loudly, never skips, when PostgreSQL is down.
 */
export async function pgSchema(name: string): Promise<{ schema: string; drop: () => Promise<void> }> {
  const schema = `audit_${name}_${process.pid}_${Math.floor(Math.random() * 1e6)}`;
  const client = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
  } catch (err) {
    throw new Error(
      `PostgreSQL is required for the audit postgres tests and is not reachable at ${PG_URL}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  await client.end();
  return {
    schema,
    drop: async () => {
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c.end();
    },
  };
}

/** Runs one SQL statement against the test database. */
export async function sql(text: string, args: unknown[] = []): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    return await c.query(text, args);
  } finally {
    await c.end();
  }
}

/**
 * An event at the schema's size limits, made of control characters that canonical JSON escapes
 * six bytes each: about 240 KB as a stored line. What a hostile workload posts to bloat the log.
 */
export function maxSizeEvent(i: number): AuditEvent {
  const fill = (n: number) => `${i}`.padEnd(n, '\u0001');
  const attributes: Record<string, string> = {};
  for (let k = 0; k < 32; k++) attributes[`a${k}`.padEnd(64, 'x')] = fill(1024);
  return {
    type: 'authz.decision',
    time: '2026-01-02T03:04:05.000Z',
    subject: fill(2048),
    target: fill(2048),
    action: fill(4096),
    reason: fill(256),
    rule: fill(256),
    policyHash: fill(128),
    jti: fill(256),
    attributes,
  };
}
