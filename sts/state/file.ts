import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../../ca/index.ts';
import { StsError } from '../errors.ts';
import { StateMaps } from './memory.ts';
import type {
  JoinTokenRecord,
  RedeemResult,
  RevocationEntry,
  StoredJoinToken,
  StsStateStore,
} from './store.ts';

const FILE = 'sts-state.json';

const fileSchema = z.strictObject({
  format: z.literal('portcullis-sts-state/v1'),
  joinTokens: z.array(
    z.strictObject({
      id: z.string().regex(/^[0-9a-f]{64}$/),
      workload: z.string().min(1),
      spiffeId: z.string().min(1),
      createdAt: z.number().int(),
      expiresAt: z.number().int(),
      createdBy: z.string(),
      usedAt: z.number().int().optional(),
    }),
  ),
  revocations: z.array(
    z.strictObject({
      kind: z.enum(['jti', 'serial']),
      value: z.string().min(1),
      expiresAt: z.number().int(),
    }),
  ),
});

/**
 * A {@link StsStateStore} in one JSON file (`sts-state.json`, 0600) in `dir`: the embedded
 * default, for one STS process. Every change rewrites the file atomically (temp file, fsync,
 * rename) before the call resolves, so a revocation or a redeemed join token survives a crash
 * or restart. Replicas that must share state use the PostgreSQL store.
 */
export class FileStateStore implements StsStateStore {
  readonly kind = 'file';
  readonly #file: string;
  readonly #maps = new StateMaps();
  readonly #now: () => number;

  constructor(options: { readonly dir: string; readonly now?: () => number }) {
    this.#file = join(options.dir, FILE);
    this.#now = options.now ?? Date.now;
    mkdirSync(options.dir, { recursive: true, mode: 0o700 });
    let text: string | undefined;
    try {
      text = readFileSync(this.#file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        throw new StsError('ERR_STS_STATE_UNAVAILABLE', `${this.#file}: ${(err as Error).message}`);
    }
    if (text === undefined) return;
    let parsed;
    try {
      parsed = fileSchema.parse(JSON.parse(text));
    } catch (err) {
      throw new StsError(
        'ERR_STS_STATE_CORRUPT',
        `${this.#file}: not a Portcullis STS state file (${err instanceof SyntaxError ? 'invalid JSON' : 'unexpected content'}); move it aside to start with an empty state`,
        { cause: err },
      );
    }
    for (const { usedAt, ...record } of parsed.joinTokens)
      this.#maps.tokens.set(record.id, usedAt === undefined ? { record } : { record, usedAt });
    for (const e of parsed.revocations) this.#maps.revoke(e);
  }

  #save(): void {
    this.#maps.prune(this.#now());
    const doc = {
      format: 'portcullis-sts-state/v1',
      joinTokens: [...this.#maps.tokens.values()].map((t) => ({
        ...t.record,
        ...(t.usedAt !== undefined ? { usedAt: t.usedAt } : {}),
      })),
      revocations: [...this.#maps.revoked.values()],
    };
    try {
      writeFileAtomic(this.#file, JSON.stringify(doc) + '\n', 0o600);
    } catch (err) {
      throw new StsError('ERR_STS_STATE_UNAVAILABLE', `${this.#file}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /** Applies a change and persists it; a failed write undoes nothing in memory but is reported. */
  #change<T>(apply: () => T, changed: (t: T) => boolean = () => true): Promise<T> {
    return Promise.resolve().then(() => {
      const result = apply();
      if (changed(result)) this.#save();
      return result;
    });
  }

  addJoinToken(record: JoinTokenRecord): Promise<void> {
    return this.#change(() => this.#maps.addJoinToken(record));
  }
  findJoinToken(id: string): Promise<StoredJoinToken | undefined> {
    return Promise.resolve(this.#maps.findJoinToken(id));
  }
  redeemJoinToken(id: string, nowMs: number): Promise<RedeemResult> {
    return this.#change(
      () => this.#maps.redeemJoinToken(id, nowMs),
      (r) => r.ok,
    );
  }
  revoke(entry: RevocationEntry): Promise<void> {
    return this.#change(() => this.#maps.revoke(entry)).then(() => undefined);
  }
  revocations(nowMs: number): Promise<RevocationEntry[]> {
    return Promise.resolve(this.#maps.revocations(nowMs));
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}
