import { X509Certificate as NodeX509, createPrivateKey, createPublicKey } from 'node:crypto';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { isIP } from 'node:net';
import { Agent, request } from 'undici';
import type { Logger } from '../core/index.ts';
import { CaError } from './errors.ts';
import { writeFileAtomic } from './fs.ts';
import { exportPrivateKeyPem, generateKeyPair, signingAlgorithm } from './keys.ts';
import { parseCertsOnlyPkcs7 } from './pkcs7.ts';
import { x509 } from './x509.ts';

/** Options of {@link keepIdentity}. */
export interface KeepIdentityOptions {
  /** STS base URL serving `/.well-known/est/*`; a function when it is known only later (an STS renewing through itself). */
  readonly estUrl: string | (() => string);
  /** Where the chain (leaf first) and the key live: the part's `tls.cert` and `tls.key`. */
  readonly certFile: string;
  readonly keyFile: string;
  /** Roots the STS must chain to. */
  readonly trustBundleFile: string;
  /** A join token to enrol with when there is no usable certificate, or `files` (never enrol). */
  readonly bootstrap: 'files' | { readonly joinToken: string };
  /** Fraction of the lifetime after which to renew (0.5). */
  readonly renewAt: number;
  /** Random spread of the renewal time, as a fraction of the lifetime. */
  readonly jitter: number;
  readonly retryMinMs: number;
  readonly retryMaxMs: number;
  readonly logger: Logger;
  /** Called after a new certificate and key are on disk (e.g. to reload the TLS watcher at once). */
  readonly onRenewed?: (notAfter: Date) => void;
  readonly timeoutMs?: number;
  readonly deps?: { readonly now?: () => number; readonly random?: () => number };
}

/** A running renewal loop for one workload certificate. */
export interface IdentityKeeper {
  /** End of the current certificate's life. */
  notAfter(): Date;
  /** Renews now (one attempt); rejects on failure, leaving the files untouched. */
  renewNow(): Promise<Date>;
  readonly stats: { renewals: number; failures: number; enrolled: boolean };
  stop(): void;
}

/**
 * Keeps a workload's certificate alive over EST (RFC 7030):
 * 1. at start, finishes a renewal a crash interrupted (a `<key>.next` that matches the
 *    certificate), and when there is no usable certificate (missing, expired, key mismatch)
 *    enrols with the join token: a new key generated here (0600, never sent), a CSR, `simpleenroll`;
 * 2. then renews at `renewAt` of the lifetime (± jitter) with `simplereenroll` over mTLS with the
 *    current certificate, retrying with exponential backoff; the current files stay in place
 *    until a new pair is complete, so a CA outage shorter than the remaining life costs nothing.
 * Files change in an order a restart can always recover from: new key to `<key>.next`, chain
 * (atomic rename), then key (atomic rename).
 */
export async function keepIdentity(options: KeepIdentityOptions): Promise<IdentityKeeper> {
  const now = options.deps?.now ?? Date.now;
  const random = options.deps?.random ?? Math.random;
  const { logger, certFile, keyFile } = options;
  const nextKeyFile = `${keyFile}.next`;
  const estBase = () => new URL(typeof options.estUrl === 'string' ? options.estUrl : options.estUrl());
  const trust = () => readFileSync(options.trustBundleFile, 'utf8');
  const stats = { renewals: 0, failures: 0, enrolled: false };

  recoverInterruptedRenewal(certFile, keyFile, nextKeyFile, logger);
  let current = usable(certFile, keyFile, now());
  if (!current) {
    if (options.bootstrap === 'files')
      throw new CaError(
        'ERR_CA_IDENTITY_MISSING',
        `${certFile}: no usable certificate (missing, expired or not matching ${keyFile}) and identity.bootstrap is "files"; give a join token to enrol`,
      );
    if (!options.bootstrap.joinToken)
      throw new CaError(
        'ERR_CA_IDENTITY_MISSING',
        `${certFile}: no usable certificate and no join token to enrol with (identity.bootstrap names an empty or missing token)`,
      );
    current = await enrol('simpleenroll', { authorization: `Bearer ${options.bootstrap.joinToken}` });
    stats.enrolled = true;
    logger.info({ notAfter: current.notAfter.toISOString() }, 'enrolled with a join token');
  }

  async function enrol(
    op: 'simpleenroll' | 'simplereenroll',
    auth: { authorization: string } | { cert: string; key: string },
  ): Promise<{ notAfter: Date; notBefore: Date }> {
    const keys = await generateKeyPair('ecdsa-p256');
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: 'CN=portcullis-workload',
      keys,
      signingAlgorithm: signingAlgorithm('ecdsa-p256'),
    });
    const base = estBase();
    const host = base.hostname.replace(/^\[|\]$/g, '');
    const agent = new Agent({
      connect: {
        ca: trust(),
        ...('cert' in auth ? { cert: auth.cert, key: auth.key } : {}),
        ...(isIP(host) ? {} : { servername: host }),
      },
      headersTimeout: options.timeoutMs ?? 10_000,
      bodyTimeout: options.timeoutMs ?? 10_000,
    });
    let text: string;
    let status: number;
    try {
      const res = await request(new URL(`/.well-known/est/${op}`, base), {
        method: 'POST',
        dispatcher: agent,
        headers: {
          'content-type': 'application/pkcs10',
          ...('authorization' in auth ? { authorization: auth.authorization } : {}),
        },
        body: Buffer.from(csr.rawData).toString('base64'),
      });
      status = res.statusCode;
      text = await res.body.text();
    } catch (err) {
      throw new CaError('ERR_CA_ENROLMENT_FAILED', `EST ${op} at ${base.origin}: ${(err as Error).message}`, {
        cause: err,
      });
    } finally {
      await agent.close();
    }
    if (status !== 200) {
      let why = text.slice(0, 200);
      try {
        const e = JSON.parse(text) as { error?: string; error_description?: string };
        why = `${e.error ?? ''}: ${e.error_description ?? ''}`;
      } catch {
        // not JSON: the start of the body says enough
      }
      throw new CaError(
        'ERR_CA_ENROLMENT_FAILED',
        `EST ${op} at ${base.origin} refused: HTTP ${status} ${why}`,
      );
    }
    const chain = parseCertsOnlyPkcs7(text);
    const leaf = new NodeX509(chain[0]!);
    const ours = Buffer.from(await crypto.subtle.exportKey('spki', keys.publicKey));
    if (!leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(ours))
      throw new CaError(
        'ERR_CA_CHAIN_INVALID',
        `EST ${op}: the certificate returned is not for the key sent`,
      );
    const keyPem = await exportPrivateKeyPem(keys.privateKey);
    writeFileAtomic(nextKeyFile, keyPem, 0o600);
    writeFileAtomic(certFile, chain.join(''), 0o644);
    renameSync(nextKeyFile, keyFile);
    // The CA backdates notBefore for slow clocks: the lifetime that counts starts on receipt.
    return {
      notAfter: new Date(leaf.validTo),
      notBefore: new Date(Math.max(Date.parse(leaf.validFrom), now())),
    };
  }

  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let attempt = 0;
  const schedule = (delayMs: number) => {
    if (stopped) return;
    clearTimeout(timer);
    timer = setTimeout(tick, Math.max(0, delayMs));
    timer.unref();
  };
  const nextRenewal = () => {
    const life = current!.notAfter.getTime() - current!.notBefore.getTime();
    const spread = (random() * 2 - 1) * options.jitter * life;
    return current!.notBefore.getTime() + life * options.renewAt + spread - now();
  };
  const renewNow = async () => {
    const renewed = await enrol('simplereenroll', {
      cert: readFileSync(certFile, 'utf8'),
      key: readFileSync(keyFile, 'utf8'),
    });
    current = renewed;
    stats.renewals++;
    logger.info({ notAfter: renewed.notAfter.toISOString() }, 'certificate renewed');
    options.onRenewed?.(renewed.notAfter);
    return renewed.notAfter;
  };
  async function tick() {
    try {
      await renewNow();
      attempt = 0;
      schedule(nextRenewal());
    } catch (err) {
      stats.failures++;
      const left = current!.notAfter.getTime() - now();
      const delay = Math.min(
        options.retryMaxMs,
        options.retryMinMs * 2 ** attempt++,
        Math.max(left / 4, 1000),
      );
      logger.warn(
        { err: (err as Error).message, retryInMs: Math.round(delay), expiresInMs: left },
        'certificate renewal failed; serving on the current certificate and retrying',
      );
      schedule(delay);
    }
  }
  schedule(nextRenewal());
  return {
    notAfter: () => current!.notAfter,
    renewNow,
    stats,
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/** The validity of the chain at `certFile` if it loads, matches `keyFile` and has not expired. */
function usable(
  certFile: string,
  keyFile: string,
  nowMs: number,
): { notAfter: Date; notBefore: Date } | undefined {
  try {
    const leaf = new NodeX509(readFileSync(certFile, 'utf8'));
    const key = createPrivateKey(readFileSync(keyFile, 'utf8'));
    if (!leaf.checkPrivateKey(key)) return undefined;
    const notAfter = new Date(leaf.validTo);
    if (notAfter.getTime() <= nowMs) return undefined;
    return { notAfter, notBefore: new Date(leaf.validFrom) };
  } catch {
    return undefined;
  }
}

/** A crash between writing the chain and renaming the new key leaves `<key>.next` matching the chain. */
function recoverInterruptedRenewal(
  certFile: string,
  keyFile: string,
  nextKeyFile: string,
  logger: Logger,
): void {
  if (!existsSync(nextKeyFile)) return;
  try {
    const leaf = new NodeX509(readFileSync(certFile, 'utf8'));
    const next = createPublicKey(createPrivateKey(readFileSync(nextKeyFile, 'utf8')));
    if (leaf.publicKey.equals(next)) {
      renameSync(nextKeyFile, keyFile);
      logger.info({ file: keyFile }, 'finished a renewal interrupted before the key was moved into place');
    }
  } catch {
    // no chain yet or unreadable: the start-up check below decides
  }
}
