import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate as NodeX509 } from 'node:crypto';
import { DEFAULT_CRL_VALIDITY_MS, createCrl, loadCrlFile } from './crl.ts';
import type { RevocationList } from './crl.ts';
import type { CaMaterial } from './directory.ts';
import { writeFileAtomic } from './fs.ts';
import { OUT_FILES } from './issue-workloads.ts';
import { normalizeSerial } from './serial.ts';
import { x509 } from './x509.ts';

/** CRL reasons accepted on the command line (RFC 5280 §5.3.1 names). */
export const REVOCATION_REASONS = [
  'unspecified',
  'keyCompromise',
  'cACompromise',
  'affiliationChanged',
  'superseded',
  'cessationOfOperation',
] as const;
export type RevocationReason = (typeof REVOCATION_REASONS)[number];

/** Options of {@link revokeCertificate}. */
export interface RevokeOptions {
  readonly ca: CaMaterial;
  readonly outDir: string;
  readonly serial: string;
  readonly reason?: RevocationReason;
  readonly crlValidityMs?: number;
  readonly deps: { readonly now: () => Date };
}

/** The outcome of a revocation: the new CRL, whether the serial was already on it, and whose it was. */
export interface RevokeResult {
  readonly serial: string;
  readonly alreadyRevoked: boolean;
  /** The workload whose certificate in `outDir` carries this serial, when one does. */
  readonly workload?: string;
  readonly crl: RevocationList;
}

/**
 * Adds a serial to the intermediate's CRL in `outDir/crl.pem` (created when missing) and
 * re-signs it with the next CRL number. Revoking an already revoked serial changes nothing.
 */
export async function revokeCertificate(opts: RevokeOptions): Promise<RevokeResult> {
  const serial = normalizeSerial(opts.serial);
  const path = join(opts.outDir, OUT_FILES.crl);
  const current = await loadCrlFile(path, opts.ca.intermediate.cert);
  const workload = findWorkloadBySerial(opts.outDir, serial);
  if (current?.entries.some((e) => e.serial === serial))
    return { serial, alreadyRevoked: true, workload, crl: current };
  const reason = opts.reason ? x509.X509CrlReason[opts.reason] : undefined;
  const crl = await createCrl({
    issuer: opts.ca.intermediate,
    entries: [
      ...(current?.entries ?? []),
      { serial, revokedAt: opts.deps.now(), ...(reason !== undefined ? { reason } : {}) },
    ],
    number: (current?.number ?? 0) + 1,
    validityMs: opts.crlValidityMs ?? DEFAULT_CRL_VALIDITY_MS,
    deps: opts.deps,
  });
  writeFileAtomic(path, crl.pem);
  return { serial, alreadyRevoked: false, workload, crl };
}

function findWorkloadBySerial(outDir: string, serial: string): string | undefined {
  let files: string[];
  try {
    files = readdirSync(outDir);
  } catch {
    return undefined;
  }
  for (const f of files) {
    if (
      !f.endsWith('.pem') ||
      f.endsWith('-key.pem') ||
      [OUT_FILES.root, OUT_FILES.intermediate, OUT_FILES.crl].includes(f as 'root.pem')
    )
      continue;
    try {
      if (normalizeSerial(new NodeX509(readFileSync(join(outDir, f))).serialNumber) === serial)
        return f.slice(0, -4);
    } catch {
      // not a certificate: skip
    }
  }
  return undefined;
}
