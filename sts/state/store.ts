/** One join token as stored: only the SHA-256 of the secret, never the secret itself. */
export interface JoinTokenRecord {
  /** Lowercase hex SHA-256 of the token text: the key it is found by. */
  readonly id: string;
  /** Registry entry (name) the token enrols. */
  readonly workload: string;
  readonly spiffeId: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  /** SPIFFE ID of the admin who created it. */
  readonly createdBy: string;
}

/** A join token and whether it has been used. */
export interface StoredJoinToken {
  readonly record: JoinTokenRecord;
  readonly usedAt?: number;
}

/** What redeeming a join token gave: the token, or why it was refused. */
export type RedeemResult =
  | { readonly ok: true; readonly record: JoinTokenRecord }
  | {
      readonly ok: false;
      readonly reason: 'unknown' | 'used' | 'expired';
      readonly record?: JoinTokenRecord;
    };

/** One revocation: a token id or a certificate serial (canonical hex), kept until `expiresAt` (ms). */
export interface RevocationEntry {
  readonly kind: 'jti' | 'serial';
  readonly value: string;
  readonly expiresAt: number;
}

/**
 * The STS's durable state: revocations and join tokens. One interface so that the file store
 * (embedded default), PostgreSQL (shared by replicas) and memory pass one conformance suite
 * (test/sts/state/conformance.ts). Every method is safe to call concurrently.
 */
export interface StsStateStore {
  /** `memory`, `file` or `postgres`, for logs. */
  readonly kind: string;
  /** Stores a new join token; `ERR_STS_STATE_CONFLICT` if its id exists. */
  addJoinToken(record: JoinTokenRecord): Promise<void>;
  /** The token with that id, used or not, until it is pruned after expiry. */
  findJoinToken(id: string): Promise<StoredJoinToken | undefined>;
  /** Marks the token used, atomically: of two concurrent redemptions at most one succeeds. */
  redeemJoinToken(id: string, nowMs: number): Promise<RedeemResult>;
  /** Adds a revocation or extends its expiry; never shortens one. */
  revoke(entry: RevocationEntry): Promise<void>;
  /** Every revocation still in force at `nowMs`. */
  revocations(nowMs: number): Promise<RevocationEntry[]>;
  close(): Promise<void>;
}

/** How long a used or expired join token stays findable (so a replay is told "used", not "unknown"). */
export const JOIN_TOKEN_RETAIN_MS = 86_400_000;
