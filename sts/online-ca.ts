import { statSync } from 'node:fs';
import { join } from 'node:path';
import { CA_FILES, loadCaDirectory } from '../ca/index.ts';
import type { CaMaterial } from '../ca/index.ts';
import type { Logger } from '../core/index.ts';
import type { EstCa } from './http/routes/est.ts';

/** The STS's online CA, following its directory: an intermediate rotation needs no restart. */
export interface OnlineCa extends EstCa {
  stop(): void;
}

/**
 * Loads `ca.dir` and re-reads it when its intermediate files change (polled every `intervalMs`):
 * a new pair that loads (key matching certificate, signed by the root, same trust domain) signs
 * from then on; anything else keeps the current one and logs. `cacerts` serves the trust bundle,
 * the current intermediate and the previous one while leaves it signed may still be in use.
 */
export async function openOnlineCa(options: {
  readonly dir: string;
  readonly svidTtlCapMs: number;
  readonly trustBundlePem: () => string;
  readonly intervalMs: number;
  readonly logger: Logger;
}): Promise<OnlineCa> {
  const { dir, logger } = options;
  let material: CaMaterial = await loadCaDirectory(dir);
  let previousPem: string | undefined;
  const stamp = () =>
    [CA_FILES.intermediateCert, CA_FILES.intermediateKey]
      .map((f) => {
        try {
          const s = statSync(join(dir, f), { bigint: true });
          return `${s.mtimeNs}:${s.size}:${s.ino}`;
        } catch {
          return 'missing';
        }
      })
      .join('|');
  let last = stamp();
  let loading = false;
  const timer = setInterval(() => {
    const now = stamp();
    if (now === last || loading) return;
    loading = true;
    loadCaDirectory(dir).then(
      (next) => {
        last = now;
        loading = false;
        if (next.trustDomain !== material.trustDomain) {
          logger.error(
            { dir },
            'the CA directory now names another trust domain; keeping the current intermediate',
          );
          return;
        }
        if (next.intermediatePem === material.intermediatePem) return;
        previousPem = material.intermediatePem;
        material = next;
        logger.info(
          { dir, subject: next.intermediate.cert.subject },
          'online CA: a new intermediate signs from now on',
        );
      },
      (err: unknown) => {
        // A half-copied pair (new key, old certificate) lands here until the second file arrives.
        loading = false;
        logger.warn(
          { dir, err: (err as Error).message },
          'online CA directory unusable; keeping the current intermediate',
        );
      },
    );
  }, options.intervalMs);
  timer.unref();
  return {
    get signer() {
      return material.intermediate;
    },
    get trustDomain() {
      return material.trustDomain;
    },
    caCertsPem: () =>
      `${options.trustBundlePem()}\n${material.rootPem}\n${material.intermediatePem}\n${previousPem ?? ''}`,
    svidTtlCapMs: options.svidTtlCapMs,
    stop: () => clearInterval(timer),
  };
}
