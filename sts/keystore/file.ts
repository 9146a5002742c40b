import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { StsError } from '../errors.ts';
import { MASTER_KEY_ENV, MASTER_KEY_MIN_BYTES } from '../master-key.ts';
import type { KeyRecord, KeyringState } from '../keyring/state.ts';
import { KEYRING_FORMAT, corrupt, sealedKeyringSchema, toState } from './codec.ts';
import type { Keystore, KeystoreSnapshot } from './keystore.ts';

/** Options of {@link FileKeystore}. */
export interface FileKeystoreOptions {
  /** Directory holding `keyring.json`; created (0700) on first write, never on read. */
  readonly dir: string;
  /** Decoded master key, at least 32 bytes (see `parseMasterKey`). */
  readonly masterKey: Uint8Array;
  /** Name of the variable the key came from, for error messages. */
  readonly masterKeyName?: string;
  /** A lock file older than this is taken to be left by a crashed writer. */
  readonly staleLockMs?: number;
}

const FILE = 'keyring.json';
const LOCK = 'keyring.lock';

/**
 * A {@link Keystore} in one JSON file. Private keys are sealed with AES-256-GCM under a key
 * derived (HKDF-SHA256) from the master key, with the kid as associated data. Writes are
 * check-and-set across processes: a lock file (O_EXCL) guards read-compare-write, and the new
 * file replaces the old one by rename after fsync.
 */
export class FileKeystore implements Keystore {
  readonly kind = 'file';
  readonly #dir: string;
  readonly #aesKey: Buffer;
  readonly #keyName: string;
  readonly #staleLockMs: number;

  constructor(options: FileKeystoreOptions) {
    if (!(options.masterKey instanceof Uint8Array) || options.masterKey.length < MASTER_KEY_MIN_BYTES)
      throw new TypeError('"masterKey" must be at least 32 bytes');
    this.#dir = options.dir;
    this.#keyName = options.masterKeyName ?? MASTER_KEY_ENV;
    this.#staleLockMs = options.staleLockMs ?? 30_000;
    this.#aesKey = Buffer.from(
      hkdfSync('sha256', options.masterKey, 'portcullis', 'portcullis/sts/file-keystore/v1', 32),
    );
  }

  get #file(): string {
    return join(this.#dir, FILE);
  }

  async read(): Promise<KeystoreSnapshot> {
    let text: string;
    try {
      text = await readFile(this.#file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: undefined, version: 0 };
      throw new StsError(
        'ERR_STS_KEYSTORE_UNAVAILABLE',
        `${this.#file}: cannot be read (${(err as NodeJS.ErrnoException).code})`,
        { cause: err },
      );
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new StsError('ERR_STS_KEYSTORE_CORRUPT', `${this.#file}: not valid JSON`, { cause: err });
    }
    const parsed = sealedKeyringSchema.safeParse(json);
    if (!parsed.success) throw corrupt(this.#file, parsed.error);
    const keys: KeyRecord[] = parsed.data.keys.map(({ sealed, ...rest }) => ({
      ...rest,
      privateJwk: this.#unseal(rest.kid, sealed),
    }));
    return { state: toState(keys, parsed.data.rotateRequestedAt), version: parsed.data.version };
  }

  async write(state: KeyringState, expectedVersion: number): Promise<number> {
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    const release = await this.#lock();
    try {
      const found = await this.#storedVersion();
      if (found !== expectedVersion) {
        throw new StsError(
          'ERR_STS_KEYSTORE_CONFLICT',
          `${this.#file}: expected version ${expectedVersion}, found ${found}`,
        );
      }
      const version = expectedVersion + 1;
      const doc = {
        format: KEYRING_FORMAT,
        version,
        ...(state.rotateRequestedAt !== undefined ? { rotateRequestedAt: state.rotateRequestedAt } : {}),
        keys: state.keys.map(({ privateJwk, ...rest }) => ({
          ...rest,
          sealed: this.#seal(rest.kid, privateJwk),
        })),
      };
      const tmp = join(this.#dir, `.${FILE}.${process.pid}.${randomBytes(4).toString('hex')}`);
      const handle = await open(tmp, 'wx', 0o600);
      try {
        await handle.writeFile(`${JSON.stringify(doc, null, 2)}\n`);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(tmp, this.#file);
      return version;
    } finally {
      await release();
    }
  }

  /** Version on disk without unsealing (0 when absent); unreadable content counts as corrupt. */
  async #storedVersion(): Promise<number> {
    try {
      const json = JSON.parse(await readFile(this.#file, 'utf8')) as { version?: unknown };
      if (typeof json.version !== 'number') throw new Error('no version');
      return json.version;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw new StsError('ERR_STS_KEYSTORE_CORRUPT', `${this.#file}: has no readable version`, {
        cause: err,
      });
    }
  }

  async #lock(): Promise<() => Promise<void>> {
    const lock = join(this.#dir, LOCK);
    for (let attempt = 0; attempt < 200; attempt++) {
      try {
        const handle = await open(lock, 'wx', 0o600);
        await handle.close();
        return () => rm(lock, { force: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const age = await stat(lock).then(
          (s) => Date.now() - s.mtimeMs,
          () => 0,
        );
        if (age > this.#staleLockMs) await rm(lock, { force: true });
        else await new Promise((r) => setTimeout(r, 10));
      }
    }
    throw new StsError('ERR_STS_KEYSTORE_UNAVAILABLE', `${lock}: held by another writer for too long`);
  }

  #seal(kid: string, jwk: object): { iv: string; ciphertext: string; tag: string } {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.#aesKey, iv);
    cipher.setAAD(Buffer.from(kid));
    const ciphertext = Buffer.concat([cipher.update(JSON.stringify(jwk)), cipher.final()]);
    return {
      iv: iv.toString('base64url'),
      ciphertext: ciphertext.toString('base64url'),
      tag: cipher.getAuthTag().toString('base64url'),
    };
  }

  #unseal(kid: string, sealed: { iv: string; ciphertext: string; tag: string }): KeyRecord['privateJwk'] {
    let plain: Buffer;
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#aesKey, Buffer.from(sealed.iv, 'base64url'));
      decipher.setAAD(Buffer.from(kid));
      decipher.setAuthTag(Buffer.from(sealed.tag, 'base64url'));
      plain = Buffer.concat([decipher.update(Buffer.from(sealed.ciphertext, 'base64url')), decipher.final()]);
    } catch (err) {
      throw new StsError(
        'ERR_STS_MASTER_KEY_WRONG',
        `${this.#file}: key ${kid} cannot be unsealed: ${this.#keyName} is not the master key this keystore was sealed with (or the file was altered)`,
        { cause: err },
      );
    }
    const jwk = JSON.parse(plain.toString('utf8')) as KeyRecord['privateJwk'];
    return jwk;
  }
}
