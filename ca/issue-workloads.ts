import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Registry } from '../core/index.ts';
import { CaError } from './errors.ts';
import { DEFAULT_CRL_VALIDITY_MS, createCrl, loadCrlFile } from './crl.ts';
import type { RevocationList } from './crl.ts';
import type { CaMaterial } from './directory.ts';
import { writeFileAtomic } from './fs.ts';
import { issueCertificate } from './issue.ts';
import { exportPrivateKeyPem, generateKeyPair } from './keys.ts';
import type { KeyAlgorithm } from './keys.ts';
import { exportPkcs12 } from './pkcs12.ts';
import { planLeaf } from './plan-leaf.ts';
import { splitPemBundle } from './pem.ts';
import { normalizeSerial } from './serial.ts';

/** Options of {@link issueWorkloadCertificates}. */
export interface IssueWorkloadsOptions {
  readonly registry: Registry;
  readonly ca: CaMaterial;
  readonly outDir: string;
  readonly validityMs: number;
  readonly renewWithinMs: number;
  readonly keyAlgorithm: KeyAlgorithm;
  /** Also write `<name>.p12` bundles under this passphrase. */
  readonly p12Passphrase?: string;
  readonly crlValidityMs?: number;
  readonly deps: { readonly now: () => Date; readonly progress?: (line: string) => void };
}

/** The outcome for one workload. */
export interface WorkloadOutcome {
  readonly name: string;
  readonly action: 'issued' | 'renewed' | 'unchanged';
  readonly reason?: string;
  readonly notAfter: Date;
  readonly serial?: string;
}

/** The outcome of a whole run: per workload, and every file written. */
export interface IssueWorkloadsResult {
  readonly outcomes: readonly WorkloadOutcome[];
  readonly written: readonly string[];
}

/** File names in the output directory (docs/architecture.md § CA and certificate profile). */
export const OUT_FILES = {
  root: 'root.pem',
  intermediate: 'intermediate.pem',
  crl: 'crl.pem',
  cert: (name: string) => `${name}.pem`,
  key: (name: string) => `${name}-key.pem`,
  p12: (name: string) => `${name}.p12`,
} as const;

/**
 * Idempotent issuance for every workload of the registry: issues what is missing, renews what
 * {@link planLeaf} says must be renewed, leaves the rest byte for byte. Writes the trust files
 * (root, intermediate, CRL) only when their content changes. Refuses a registry whose trust
 * domain is not the CA's before writing anything.
 */
export async function issueWorkloadCertificates(opts: IssueWorkloadsOptions): Promise<IssueWorkloadsResult> {
  const { registry, ca, outDir } = opts;
  assertRegistryMatchesCa(registry, ca);
  if (existsSync(outDir) && !statSync(outDir).isDirectory())
    throw new CaError('ERR_CA_INVALID', `${outDir}: exists and is not a directory`);
  // Read and check before the first write: a broken CRL refuses the run with nothing written.
  const currentCrl = await loadCrlFile(join(outDir, OUT_FILES.crl), ca.intermediate.cert);
  const now = opts.deps.now;
  const progress = opts.deps.progress ?? (() => {});
  mkdirSync(outDir, { recursive: true, mode: 0o755 });
  const written: string[] = [];
  const write = (file: string, data: string | Uint8Array, mode?: number) => {
    const path = join(outDir, file);
    if (writeFileAtomic(path, data, mode)) written.push(path);
  };
  write(OUT_FILES.root, ca.rootPem);
  write(OUT_FILES.intermediate, ca.intermediatePem);
  await refreshCrl(opts, currentCrl, write);

  const outcomes: WorkloadOutcome[] = [];
  for (const workload of registry.workloads) {
    const certPath = join(outDir, OUT_FILES.cert(workload.name));
    const keyPath = join(outDir, OUT_FILES.key(workload.name));
    const p12Path = join(outDir, OUT_FILES.p12(workload.name));
    const existing = { certPem: readIfExists(certPath), keyPem: readIfExists(keyPath) };
    const plan = planLeaf({
      workload,
      existing,
      intermediatePem: ca.intermediatePem,
      nowMs: now().getTime(),
      renewWithinMs: opts.renewWithinMs,
    });
    if (plan.action === 'keep') {
      if (opts.p12Passphrase !== undefined && !existsSync(p12Path)) {
        // A kept leaf had both files (planLeaf renews otherwise).
        writeP12(workload.name, existing.certPem!, existing.keyPem!, opts.p12Passphrase, write);
      }
      outcomes.push({ name: workload.name, action: 'unchanged', notAfter: plan.notAfter });
      progress(`unchanged ${workload.name.padEnd(18)} valid until ${plan.notAfter.toISOString()}`);
      continue;
    }
    const keys = await generateKeyPair(opts.keyAlgorithm);
    const cert = await issueCertificate({
      role: 'leaf',
      subject: `O=${registry.trustDomain}, CN=${workload.name}`,
      publicKey: keys.publicKey,
      issuer: ca.intermediate,
      names: {
        spiffeId: workload.spiffeId.uri,
        dnsNames: workload.dnsNames,
        ipAddresses: workload.ipAddresses,
      },
      validityMs: opts.validityMs,
      deps: { now },
    });
    const keyPem = await exportPrivateKeyPem(keys.privateKey);
    const chainPem = cert.toString('pem') + '\n' + ca.intermediatePem;
    // Key first, then certificate: a crash in between leaves a mismatch that the next run renews.
    write(OUT_FILES.key(workload.name), keyPem, 0o600);
    write(OUT_FILES.cert(workload.name), chainPem);
    if (opts.p12Passphrase !== undefined)
      writeP12(workload.name, chainPem, keyPem, opts.p12Passphrase, write);
    const action = plan.action === 'issue' ? 'issued' : 'renewed';
    outcomes.push({
      name: workload.name,
      action,
      reason: plan.reason,
      notAfter: cert.notAfter,
      serial: normalizeSerial(cert.serialNumber),
    });
    progress(
      `${action.padEnd(9)} ${workload.name.padEnd(18)} ${workload.spiffeId.uri} until ${cert.notAfter.toISOString()} (${plan.reason})`,
    );
  }
  return { outcomes, written };
}

function writeP12(
  name: string,
  chainPem: string,
  keyPem: string,
  passphrase: string,
  write: (f: string, d: Uint8Array, m?: number) => void,
) {
  const p12 = exportPkcs12({
    chainDer: splitPemBundle(chainPem),
    privateKeyPem: keyPem,
    passphrase,
    friendlyName: name,
  });
  write(OUT_FILES.p12(name), p12, 0o600);
}

/** Creates the CRL when missing; re-signs it (same entries, next number) when it is close to its nextUpdate. */
async function refreshCrl(
  opts: IssueWorkloadsOptions,
  current: RevocationList | undefined,
  write: (f: string, d: string) => void,
): Promise<void> {
  if (current && (current.nextUpdate?.getTime() ?? 0) - opts.deps.now().getTime() > opts.renewWithinMs)
    return;
  const crl = await createCrl({
    issuer: opts.ca.intermediate,
    entries: current?.entries ?? [],
    number: (current?.number ?? 0) + 1,
    validityMs: opts.crlValidityMs ?? DEFAULT_CRL_VALIDITY_MS,
    deps: { now: opts.deps.now },
  });
  write(OUT_FILES.crl, crl.pem);
}

/**
 * Refuses (CaError `ERR_CA_INVALID`) a registry whose trust domain is not the one the CA's
 * intermediate is name-constrained to. Callers run it before writing anything.
 */
export function assertRegistryMatchesCa(registry: Registry, ca: CaMaterial): void {
  if (registry.trustDomain !== ca.trustDomain) {
    throw new CaError(
      'ERR_CA_INVALID',
      `${registry.workloads[0]?.origin.file ?? 'registry'}: trustDomain "${registry.trustDomain}" differs from the CA's "${ca.trustDomain}" (${ca.dir})`,
    );
  }
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}
