import { z } from 'zod';
import { timerDurationSchema, pathSchema, resolveConfigPath, strictObject } from './config.ts';

/** `renewAt`: a fraction of the certificate's lifetime, written `50%` or `0.5`; between 10% and 90%. */
const fractionSchema = z
  .union([z.number(), z.string().regex(/^\d{1,2}(?:\.\d+)?%$/, 'must be a percentage like "50%"')])
  .transform((v) => (typeof v === 'number' ? v : Number(v.slice(0, -1)) / 100))
  .refine((f) => f >= 0.1 && f <= 0.9, 'must be between 10% and 90% of the lifetime');

/**
 * The `identity:` section a part (sidecar, STS, collector, audit client) may carry: how it gets
 * its first certificate and when it renews it over EST. The files are the part's `tls.cert` and
 * `tls.key`; `tls.trustBundle` authenticates the STS at bootstrap.
 */
export const identityConfigSchema = strictObject({
  /** STS base URL serving `/.well-known/est/*`; the sidecar defaults it to its `sts.url`. */
  est: z.url({ protocol: /^https$/, error: 'must be an https URL' }).optional(),
  /**
   * `files`: the certificate and key already exist (e.g. from `certs issue`) and are renewed in
   * place. Otherwise a join token enrols the part once when it has no usable certificate: given
   * inline, in a file (read once, then not needed again), or in an environment variable.
   */
  bootstrap: z.union([
    z.literal('files'),
    strictObject({ joinToken: z.string().min(1) }),
    strictObject({ joinTokenFile: pathSchema }),
    strictObject({
      joinTokenEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name'),
    }),
  ]),
  renewAt: fractionSchema.default(0.5),
  /** Random spread around the renewal time, as a fraction of the lifetime. */
  jitter: z.number().min(0).max(0.2).default(0.05),
  /** First retry delay after a failed renewal; doubles up to `retryMax`. */
  retryMin: timerDurationSchema.default(1_000),
  retryMax: timerDurationSchema.default(30_000),
});

/** A parsed `identity:` section. */
export type IdentityConfig = z.output<typeof identityConfigSchema>;

/** The section with a `joinTokenFile` resolved against the config file's directory. */
export function resolveIdentityConfig(
  identity: IdentityConfig | undefined,
  baseDir: string,
): IdentityConfig | undefined {
  if (!identity || identity.bootstrap === 'files' || !('joinTokenFile' in identity.bootstrap))
    return identity;
  return {
    ...identity,
    bootstrap: { joinTokenFile: resolveConfigPath(identity.bootstrap.joinTokenFile, baseDir) },
  };
}
