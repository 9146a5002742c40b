import { createHash, createPrivateKey, createPublicKey } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { Logger } from '../../core/index.ts';
import { ACCESS_TOKEN_TYP, MAX_TIMER_MS } from '../../core/index.ts';
import { StsError } from '../errors.ts';
import type { Keystore } from '../keystore/keystore.ts';
import { advanceKeyring, requestRotation } from './advance.ts';
import type { KeyringChange } from './advance.ts';
import { generateSigningKey } from './key-material.ts';
import type { KeyMaterial } from './key-material.ts';
import type { KeyRecord, KeyState, KeyringPolicy, KeyringState } from './state.ts';

/** The key that signs right now, imported once, with its JOSE header already encoded. */
export interface Signer {
  readonly kid: string;
  readonly alg: 'ES256';
  readonly key: KeyObject;
  /** base64url of `{"alg","kid","typ":"at+jwt"}`. */
  readonly encodedHeader: string;
}

/** One key as the admin API lists it (no private material). */
export interface KeySummary {
  readonly kid: string;
  readonly alg: string;
  readonly state: KeyState;
  readonly publishedAt: string;
  readonly activatedAt?: string;
  readonly retiredAt?: string;
  /** When a `next` key may start signing, or a `retiring` key leaves the JWKS. */
  readonly until?: string;
}

/** Options of {@link Keyring.open}. */
export interface KeyringOptions {
  readonly keystore: Keystore;
  readonly policy: KeyringPolicy;
  readonly clock: { now(): number };
  readonly logger: Logger;
  readonly mintKey?: () => KeyMaterial;
  /** Called after this replica stored a change (rotation, new next key, removal). */
  readonly onChange?: (changes: readonly KeyringChange[]) => void;
  /** How often to re-read the keystore to see other replicas' changes; defaults to publishLead / 4. */
  readonly refreshIntervalMs?: number;
}

const MAX_CAS_ATTEMPTS = 8;

/**
 * The running keyring: loads the stored keys, keeps the signing key pre-imported and the JWKS
 * pre-serialized (so the request path does no key import or JSON work for them), and steps the
 * next → current → retiring cycle on a timer and on demand, storing each step with
 * check-and-set. A replica that loses a check-and-set race re-reads and adopts the winner's keys.
 */
export class Keyring {
  readonly #opts: KeyringOptions;
  readonly #mint: () => KeyMaterial;
  #state: KeyringState = { keys: [] };
  #signer: Signer | undefined;
  #jwks = { body: '{"keys":[]}', etag: '""' };
  #publicKeys = new Map<string, KeyObject>();
  #timer: NodeJS.Timeout | undefined;
  #stopped = true;
  #nextStepAt = Number.POSITIVE_INFINITY;
  #running: Promise<void> = Promise.resolve();

  private constructor(opts: KeyringOptions) {
    this.#opts = opts;
    this.#mint = opts.mintKey ?? generateSigningKey;
  }

  /** Loads (and if needed creates) the keyring. Throws the keystore's error, e.g. `ERR_STS_MASTER_KEY_WRONG`. */
  static async open(opts: KeyringOptions): Promise<Keyring> {
    const ring = new Keyring(opts);
    await ring.#step();
    return ring;
  }

  /** Starts the background schedule (rotation, retirement, picking up other replicas' changes). */
  start(): void {
    this.#stopped = false;
    this.#schedule();
  }

  /** Stops the background schedule and waits for a step in progress. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  /** The signing key. Throws `ERR_STS_KEYRING_NOT_READY` if there is none. */
  signer(): Signer {
    if (!this.#signer) throw new StsError('ERR_STS_KEYRING_NOT_READY', 'no signing key is loaded');
    return this.#signer;
  }

  /** The public JWKS document (next, current and retiring keys) and its strong ETag. */
  jwks(): { readonly body: string; readonly etag: string } {
    return this.#jwks;
  }

  /** Public key of a published key by kid, for verifying subject tokens. */
  publicKey(kid: string): KeyObject | undefined {
    return this.#publicKeys.get(kid);
  }

  /** Lists the keys with their state and transition times. */
  list(): KeySummary[] {
    const { policy } = this.#opts;
    const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());
    return this.#state.keys.map((k) => {
      const until =
        k.state === 'next'
          ? k.publishedAt + policy.publishLeadMs
          : k.state === 'retiring'
            ? (k.retiredAt ?? 0) + policy.retainAfterRetireMs
            : undefined;
      return {
        kid: k.kid,
        alg: k.alg,
        state: k.state,
        publishedAt: iso(k.publishedAt)!,
        ...(k.activatedAt !== undefined ? { activatedAt: iso(k.activatedAt) } : {}),
        ...(k.retiredAt !== undefined ? { retiredAt: iso(k.retiredAt) } : {}),
        ...(until !== undefined ? { until: iso(until) } : {}),
      };
    });
  }

  /**
   * Rotates on demand: the next key takes over as soon as it has been published for one
   * publication lead (at once if it already has). Resolves with the keys after the step.
   */
  async rotate(): Promise<{
    readonly rotated: boolean;
    readonly currentKid: string;
    readonly activatesAt?: string;
  }> {
    const before = this.#signer?.kid;
    await this.#serialized(() => this.#step((s) => requestRotation(s, this.#opts.clock.now())));
    const now = this.#signer!.kid;
    const next = this.#state.keys.find((k) => k.state === 'next');
    const rotated = before !== now;
    return {
      rotated,
      currentKid: now,
      ...(!rotated && next
        ? { activatesAt: new Date(next.publishedAt + this.#opts.policy.publishLeadMs).toISOString() }
        : {}),
    };
  }

  /** Re-reads the keystore and steps the cycle now (what the timer does). */
  refresh(): Promise<void> {
    return this.#serialized(() => this.#step());
  }

  #serialized(fn: () => Promise<void>): Promise<void> {
    const run = this.#running.then(fn, fn);
    this.#running = run.catch(() => {});
    return run;
  }

  async #step(mutate?: (s: KeyringState) => KeyringState): Promise<void> {
    const { keystore, policy, clock } = this.#opts;
    for (let attempt = 1; ; attempt++) {
      const snap = await keystore.read();
      const now = clock.now();
      const base = snap.state && mutate ? mutate(snap.state) : snap.state;
      const step = advanceKeyring(base, now, policy, this.#mint);
      const mutated = base !== snap.state;
      if (step.changes.length === 0 && !mutated) {
        this.#apply(snap.state ?? { keys: [] }, step.nextStepAt);
        return;
      }
      try {
        await keystore.write(step.state, snap.version);
      } catch (err) {
        if (
          err instanceof StsError &&
          err.code === 'ERR_STS_KEYSTORE_CONFLICT' &&
          attempt < MAX_CAS_ATTEMPTS
        ) {
          continue;
        }
        throw err;
      }
      this.#apply(step.state, step.nextStepAt);
      if (step.changes.length > 0) this.#opts.onChange?.(step.changes);
      return;
    }
  }

  #apply(state: KeyringState, nextStepAt: number): void {
    this.#nextStepAt = nextStepAt;
    const same =
      state.keys.length === this.#state.keys.length &&
      state.keys.every(
        (k, i) => k.kid === this.#state.keys[i]!.kid && k.state === this.#state.keys[i]!.state,
      );
    this.#state = state;
    if (same && this.#signer) return;
    const current = state.keys.find((k) => k.state === 'current');
    const publicKeys = new Map<string, KeyObject>();
    for (const k of state.keys) publicKeys.set(k.kid, createPublicKey({ key: k.publicJwk, format: 'jwk' }));
    this.#publicKeys = publicKeys;
    this.#signer = current ? toSigner(current) : undefined;
    const body = JSON.stringify({ keys: state.keys.map(toPublicJwk) });
    this.#jwks = { body, etag: `"${createHash('sha256').update(body).digest('base64url')}"` };
  }

  #schedule(): void {
    if (this.#stopped) return;
    const { policy, clock } = this.#opts;
    const refresh = this.#opts.refreshIntervalMs ?? Math.max(50, Math.floor(policy.publishLeadMs / 4));
    // Derived from several durations, so clamped here: past MAX_TIMER_MS a timer fires at once.
    const wait = Math.max(0, Math.min(this.#nextStepAt - clock.now(), refresh, MAX_TIMER_MS));
    this.#timer = setTimeout(() => {
      this.refresh().then(
        () => {
          this.#schedule();
        },
        (err: unknown) => {
          this.#opts.logger.error(
            { err: errorSummary(err) },
            'keyring step failed; keeping the last good keys',
          );
          this.#schedule();
        },
      );
    }, wait);
    this.#timer.unref();
  }
}

function toSigner(k: KeyRecord): Signer {
  const header = JSON.stringify({ alg: k.alg, kid: k.kid, typ: ACCESS_TOKEN_TYP });
  return {
    kid: k.kid,
    alg: k.alg,
    key: createPrivateKey({ key: k.privateJwk, format: 'jwk' }),
    encodedHeader: Buffer.from(header).toString('base64url'),
  };
}

function toPublicJwk(k: KeyRecord): Record<string, string> {
  const { kty, crv, x, y } = k.publicJwk as Record<string, string>;
  return { kty: kty!, crv: crv!, x: x!, y: y!, kid: k.kid, alg: k.alg, use: 'sig' };
}

function errorSummary(err: unknown): { code?: string; message: string } {
  const e = err as { code?: string; message?: string };
  return { ...(e.code ? { code: e.code } : {}), message: e.message ?? String(err) };
}
