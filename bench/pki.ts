// The benchmarks' PKI: the example identities, a CA and every workload's certificate, exactly as
// `npm run certs` makes them, under a throwaway directory.
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { initCaDirectory, issueWorkloadCertificates } from '../ca/index.ts';
import { loadRegistry } from '../core/index.ts';

/** Creates `dir/identities`, `dir/ca` and `dir/certs` (ECDSA P-256, valid for a day). */
export async function examplePki(dir: string): Promise<{ readonly ids: string; readonly certs: string }> {
  const ids = join(dir, 'identities');
  mkdirSync(ids);
  copyFileSync(new URL('../identities/example.yaml', import.meta.url), join(ids, 'example.yaml'));
  const registry = loadRegistry(ids);
  const ca = await initCaDirectory(join(dir, 'ca'), {
    trustDomain: registry.trustDomain,
    keyAlgorithm: 'ecdsa-p256',
  });
  const certs = join(dir, 'certs');
  await issueWorkloadCertificates({
    registry,
    ca,
    outDir: certs,
    validityMs: 86_400_000,
    renewWithinMs: 3_600_000,
    keyAlgorithm: 'ecdsa-p256',
    deps: { now: () => new Date() },
  });
  return { ids, certs };
}

/** The issuer of the benchmarks' STS (the example deployment's). */
export const EXAMPLE_ISSUER = 'https://sts.portcullis.internal';

/**
 * The STS config every benchmark starts from (before `parseStsConfig`): loopback on a free port,
 * the STS certificate of {@link examplePki}'s `certs`, its identities, a file keystore under
 * `dir/keys` and audit in memory. A bench spreads its own fields over it.
 */
export function exampleStsConfig(dir: string, pki: { readonly ids: string; readonly certs: string }) {
  return {
    listen: { host: '127.0.0.1', port: 0 },
    tls: {
      cert: join(pki.certs, 'sts.pem'),
      key: join(pki.certs, 'sts-key.pem'),
      trustBundle: join(pki.certs, 'root.pem'),
    },
    identities: pki.ids,
    issuer: EXAMPLE_ISSUER,
    keystore: { type: 'file', dir: join(dir, 'keys') },
    audit: { sink: 'memory' },
  };
}
