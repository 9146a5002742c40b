import { readFile } from 'node:fs/promises';
import { parseCrl, x509 } from '../../ca/index.ts';
import type { Logger } from '../../core/index.ts';
import { StsError } from '../errors.ts';
import type { DenyList } from './deny-list.ts';

/** Options of {@link startCrlSource}. */
export interface CrlSourceOptions {
  /** PEM CRL file, e.g. certs/crl.pem written by `portcullis certs revoke`. */
  readonly file: string;
  /** PEM of the CA that signs the CRL (the intermediate). */
  readonly issuerPem: string;
  readonly denyList: DenyList;
  readonly logger: Logger;
  /** How often to re-read the file. */
  readonly pollIntervalMs: number;
  /** How long after its revocation date a serial stays on the deny-list. */
  readonly entryLifetimeMs: number;
}

/**
 * Feeds the serials of a CRL signed by `issuerPem` into the deny-list, now and whenever the
 * file changes. At start-up a missing, unsigned or foreign CRL is `ERR_STS_CRL_INVALID`; later,
 * a bad file is logged and the serials already loaded stay revoked.
 */
export async function startCrlSource(options: CrlSourceOptions): Promise<{ stop(): void }> {
  let issuer: x509.X509Certificate;
  try {
    issuer = new x509.X509Certificate(options.issuerPem);
  } catch (err) {
    throw new StsError(
      'ERR_STS_CRL_INVALID',
      `${options.file}: the CRL issuer certificate cannot be parsed`,
      {
        cause: err,
      },
    );
  }
  let last: string | undefined;
  const load = async () => {
    let text: string;
    try {
      text = await readFile(options.file, 'utf8');
    } catch (err) {
      throw new StsError(
        'ERR_STS_CRL_INVALID',
        `${options.file}: cannot be read (${(err as NodeJS.ErrnoException).code})`,
        { cause: err },
      );
    }
    if (text === last) return;
    let crl;
    try {
      crl = await parseCrl(text, issuer);
    } catch (err) {
      throw new StsError('ERR_STS_CRL_INVALID', `${options.file}: ${(err as Error).message}`, { cause: err });
    }
    for (const entry of crl.entries) {
      options.denyList.revokeSerial(entry.serial, entry.revokedAt.getTime() + options.entryLifetimeMs);
    }
    last = text;
  };
  await load();
  const timer = setInterval(() => {
    load().catch((err: unknown) => {
      options.logger.warn(
        { err: { message: (err as Error).message } },
        'CRL reload failed; keeping the serials already loaded',
      );
    });
  }, options.pollIntervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
