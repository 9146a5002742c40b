import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CA_FILES, loadCaDirectory } from './directory.ts';
import type { CaMaterial } from './directory.ts';
import { CaError } from './errors.ts';
import { writeFileAtomic } from './fs.ts';
import { issueCertificate } from './issue.ts';
import { exportPrivateKeyPem, generateKeyPair, importPrivateKeyPem } from './keys.ts';

/** Options of {@link createNextIntermediate}. */
export interface NextIntermediateOptions {
  /** Directory holding the root (`root.pem` and `root-key.pem`), e.g. the current CA directory. */
  readonly rootDir: string;
  /** New CA directory: `root.pem` copied, a new `intermediate.pem` and `intermediate-key.pem` (0600). */
  readonly outDir: string;
  readonly validityMs?: number;
  readonly deps?: { readonly now?: () => Date };
}

/**
 * The first step of an intermediate rotation (docs/operations.md): a new intermediate, signed by
 * the same root, name-constrained to the same trust domain, in a CA directory of its own. The
 * root's key is read, never copied. Refuses (`ERR_CA_EXISTS`) to write over an existing CA.
 */
export async function createNextIntermediate(options: NextIntermediateOptions): Promise<CaMaterial> {
  const current = await loadCaDirectory(options.rootDir);
  const rootKeyPath = join(options.rootDir, CA_FILES.rootKey);
  if (!existsSync(rootKeyPath))
    throw new CaError('ERR_CA_INVALID', `${rootKeyPath}: the root key is needed to sign a new intermediate`);
  const present = Object.values(CA_FILES).filter((f) => existsSync(join(options.outDir, f)));
  if (present.length)
    throw new CaError('ERR_CA_EXISTS', `${options.outDir}: a CA already exists here (${present.join(', ')})`);
  const rootKey = await importPrivateKeyPem(readFileSync(rootKeyPath, 'utf8'), rootKeyPath);
  const algorithm = current.intermediate.algorithm;
  const keys = await generateKeyPair(algorithm);
  const intermediate = await issueCertificate({
    role: 'intermediate',
    // A distinct subject, so that tools and logs tell the two intermediates apart.
    subject: `O=${current.trustDomain}, CN=Portcullis Intermediate CA ${new Date((options.deps?.now ?? (() => new Date()))()).toISOString().slice(0, 19)}Z`,
    publicKey: keys.publicKey,
    issuer: { cert: current.root, privateKey: rootKey.keys.privateKey, algorithm: rootKey.algorithm },
    trustDomain: current.trustDomain,
    validityMs: options.validityMs ?? 365 * 86_400_000,
    deps: { now: options.deps?.now ?? (() => new Date()) },
  });
  mkdirSync(options.outDir, { recursive: true, mode: 0o700 });
  writeFileAtomic(join(options.outDir, CA_FILES.rootCert), current.rootPem);
  writeFileAtomic(
    join(options.outDir, CA_FILES.intermediateKey),
    await exportPrivateKeyPem(keys.privateKey),
    0o600,
  );
  writeFileAtomic(join(options.outDir, CA_FILES.intermediateCert), intermediate.toString('pem') + '\n');
  return loadCaDirectory(options.outDir);
}
