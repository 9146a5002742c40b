import { readFileSync } from 'node:fs';
import { Gauge } from 'prom-client';
import type { Registry as PromRegistry } from 'prom-client';
import { ConfigError } from '../core/index.ts';
import type { IdentityConfig, Logger } from '../core/index.ts';
import type { IdentityKeeper } from './keep-identity.ts';

/**
 * What a part's composition root calls before it loads its TLS files: with an `identity:`
 * section, makes sure a certificate is on disk (enrolling with the join token if needed) and keeps
 * it renewed; `reload` is called after each renewal (the part's TLS watcher reloads at once).
 * Exposes `portcullis_identity_cert_expiry_timestamp_seconds` on `metricsRegistry`.
 */
export async function startIdentity(options: {
  readonly identity: IdentityConfig | undefined;
  readonly tls: { readonly cert: string; readonly key: string; readonly trustBundle: string };
  /** EST URL when the section names none (the sidecar's `sts.url`; the STS's own listener). */
  readonly defaultEst?: string | (() => string);
  readonly logger: Logger;
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly file?: string;
}): Promise<(IdentityKeeper & { attach(reload: () => void, metrics?: PromRegistry): void }) | undefined> {
  const { identity } = options;
  if (!identity) return undefined;
  const file = options.file ?? '<config>';
  const estUrl = identity.est ?? options.defaultEst;
  if (!estUrl)
    throw new ConfigError(
      'ERR_CONFIG_INVALID',
      file,
      'identity.est',
      'is required (the STS URL serving EST)',
    );
  let bootstrap: 'files' | { joinToken: string };
  const b = identity.bootstrap;
  if (b === 'files') bootstrap = 'files';
  else if ('joinToken' in b) bootstrap = { joinToken: b.joinToken };
  else if ('joinTokenFile' in b) {
    let token = '';
    try {
      token = readFileSync(b.joinTokenFile, 'utf8').trim();
    } catch {
      // a missing token file is fine once enrolled: the keeper asks for it only when it must enrol
    }
    bootstrap = { joinToken: token };
  } else {
    bootstrap = { joinToken: (options.env ?? process.env)[b.joinTokenEnv] ?? '' };
  }
  let reload: () => void = () => {};
  // Loaded only with an identity: section: enrolment and renewal need the X.509 builder
  // (@peculiar/x509 and its dependency injection), which a part with files only never uses.
  const { keepIdentity } = await import('./keep-identity.ts');
  const keeper = await keepIdentity({
    estUrl,
    certFile: options.tls.cert,
    keyFile: options.tls.key,
    trustBundleFile: options.tls.trustBundle,
    bootstrap,
    renewAt: identity.renewAt,
    jitter: identity.jitter,
    retryMinMs: identity.retryMin,
    retryMaxMs: identity.retryMax,
    logger: options.logger,
    onRenewed: () => reload(),
  });
  return Object.assign(keeper, {
    attach(r: () => void, metrics?: PromRegistry) {
      reload = r;
      // A renewal may have landed between start-up and now.
      r();
      if (metrics)
        new Gauge({
          name: 'portcullis_identity_cert_expiry_timestamp_seconds',
          help: 'When the workload certificate this part renews over EST expires (Unix seconds)',
          registers: [metrics],
          collect() {
            this.set(keeper.notAfter().getTime() / 1000);
          },
        });
    },
  });
}
