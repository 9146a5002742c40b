import { withoutCredentials } from '../../core/index.ts';
import { StoreError } from '../errors.ts';
import type { AuditStore, StoreDeps } from './store.ts';
import { openFileStore } from './file.ts';
import { openPostgresStore } from './postgres.ts';

/** Options of {@link openStore}. */
export interface OpenStoreOptions extends StoreDeps {
  /** Open as is, refusing appends (for `verify`): no recovery of a file store, no table creation in postgres. */
  readonly readOnly?: boolean;
  /** Postgres store only: table (optionally schema-qualified). */
  readonly table?: string;
  /** File store only: segment bounds and the torn-tail report. */
  readonly segmentRecords?: number;
  readonly segmentBytes?: number;
  readonly onRecover?: (info: { segment: string; droppedBytes: number; keptIn: string }) => void;
}

/**
 * Opens a store from a spec: `file:DIR` or `postgres:URL` (`postgres://…` and `postgresql://…`
 * work as is; `?table=schema.name` picks the table). Throws `ERR_AUDIT_STORE_SPEC` for anything else.
 */
export async function openStore(spec: string, options: OpenStoreOptions = {}): Promise<AuditStore> {
  if (spec.startsWith('file:')) {
    const dir = spec.slice('file:'.length);
    if (!dir) throw new StoreError('ERR_AUDIT_STORE_SPEC', `store "${spec}": file: needs a directory`);
    return openFileStore({ ...options, dir });
  }
  const url =
    spec.startsWith('postgres:') && !spec.startsWith('postgres://') ? spec.slice('postgres:'.length) : spec;
  // Never printed with its credentials.
  const shown = withoutCredentials(spec);
  if (/^postgres(ql)?:\/\//.test(url)) {
    // `?table=schema.name` picks the table; it is ours, not a libpq parameter.
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new StoreError('ERR_AUDIT_STORE_SPEC', `store "${shown}": not a valid postgres:// URL`);
    }
    const table = parsed.searchParams.get('table') ?? options.table;
    parsed.searchParams.delete('table');
    return openPostgresStore({
      ...options,
      connectionString: parsed.href,
      table: table ?? undefined,
    });
  }
  throw new StoreError('ERR_AUDIT_STORE_SPEC', `store "${shown}": expected file:DIR or postgres:URL`);
}
