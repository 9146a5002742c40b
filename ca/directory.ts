import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate as NodeX509 } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { NameConstraints, id_ce_nameConstraints } from '@peculiar/asn1-x509';
import { parseTrustDomain } from '../core/index.ts';
import { CaError } from './errors.ts';
import { exportPrivateKeyPem, generateKeyPair, importPrivateKeyPem } from './keys.ts';
import type { KeyAlgorithm } from './keys.ts';
import { issueCertificate } from './issue.ts';
import type { SigningCa } from './issue.ts';
import { writeFileAtomic } from './fs.ts';
import { x509 } from './x509.ts';

/** File names inside a CA directory. Private keys are 0600, the directory 0700. */
export const CA_FILES = {
  rootCert: 'root.pem',
  rootKey: 'root-key.pem',
  intermediateCert: 'intermediate.pem',
  intermediateKey: 'intermediate-key.pem',
} as const;

/** A loaded CA directory: the root (trust anchor) and the intermediate that signs workloads. */
export interface CaMaterial {
  readonly dir: string;
  readonly trustDomain: string;
  readonly root: x509.X509Certificate;
  readonly rootPem: string;
  readonly intermediate: SigningCa;
  readonly intermediatePem: string;
}

/** Options of {@link initCaDirectory}. */
export interface InitCaOptions {
  readonly trustDomain: string;
  readonly keyAlgorithm?: KeyAlgorithm;
  /** Replace an existing CA. Without it, an existing CA is an `ERR_CA_EXISTS` error. */
  readonly force?: boolean;
  readonly rootValidityMs?: number;
  readonly intermediateValidityMs?: number;
  readonly deps?: { readonly now?: () => Date };
}

const YEAR_MS = 365 * 86_400_000;

/**
 * Creates a root CA and an intermediate CA (pathLen 0, URI name constraints limited to the
 * trust domain) in `dir`. Refuses to overwrite an existing CA unless `force` is set.
 */
export async function initCaDirectory(dir: string, options: InitCaOptions): Promise<CaMaterial> {
  const trustDomain = parseTrustDomain(options.trustDomain);
  const present = Object.values(CA_FILES).filter((f) => existsSync(join(dir, f)));
  if (present.length > 0 && !options.force) {
    throw new CaError(
      'ERR_CA_EXISTS',
      `${dir}: a CA already exists here (${present.join(', ')}); pass --force to replace it`,
    );
  }
  if (existsSync(dir) && !statSync(dir).isDirectory())
    throw new CaError('ERR_CA_INVALID', `${dir}: exists and is not a directory`);
  const now = options.deps?.now ?? (() => new Date());
  const algorithm = options.keyAlgorithm ?? 'ecdsa-p256';
  const rootKeys = await generateKeyPair(algorithm);
  const root = await issueCertificate({
    role: 'root',
    subject: `O=${trustDomain}, CN=Portcullis Root CA`,
    publicKey: rootKeys.publicKey,
    selfKeys: { privateKey: rootKeys.privateKey, algorithm },
    validityMs: options.rootValidityMs ?? 10 * YEAR_MS,
    deps: { now },
  });
  const intermediateKeys = await generateKeyPair(algorithm);
  const intermediate = await issueCertificate({
    role: 'intermediate',
    subject: `O=${trustDomain}, CN=Portcullis Intermediate CA`,
    publicKey: intermediateKeys.publicKey,
    issuer: { cert: root, privateKey: rootKeys.privateKey, algorithm },
    trustDomain,
    validityMs: options.intermediateValidityMs ?? YEAR_MS,
    deps: { now },
  });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileAtomic(join(dir, CA_FILES.rootKey), await exportPrivateKeyPem(rootKeys.privateKey), 0o600);
  writeFileAtomic(
    join(dir, CA_FILES.intermediateKey),
    await exportPrivateKeyPem(intermediateKeys.privateKey),
    0o600,
  );
  writeFileAtomic(join(dir, CA_FILES.rootCert), root.toString('pem') + '\n');
  writeFileAtomic(join(dir, CA_FILES.intermediateCert), intermediate.toString('pem') + '\n');
  return loadCaDirectory(dir);
}

/**
 * Loads and checks a CA directory: all four files present, each key matching its certificate,
 * the intermediate a CA signed by the root and name-constrained to one trust domain.
 * Throws CaError `ERR_CA_NOT_FOUND` (no such directory) or `ERR_CA_INVALID` naming the file.
 */
export async function loadCaDirectory(dir: string): Promise<CaMaterial> {
  if (!existsSync(dir))
    throw new CaError(
      'ERR_CA_NOT_FOUND',
      `${dir}: no such CA directory (create one with: portcullis ca init)`,
    );
  if (!statSync(dir).isDirectory()) throw new CaError('ERR_CA_INVALID', `${dir}: is not a directory`);
  const read = (name: string) => {
    const path = join(dir, name);
    try {
      return readFileSync(path, 'utf8');
    } catch {
      throw new CaError(
        'ERR_CA_INVALID',
        `${path}: missing; ${dir} is not a CA directory (create one with: portcullis ca init)`,
      );
    }
  };
  const rootPem = read(CA_FILES.rootCert);
  const intermediatePem = read(CA_FILES.intermediateCert);
  const root = parseCert(rootPem, join(dir, CA_FILES.rootCert));
  const intermediateCert = parseCert(intermediatePem, join(dir, CA_FILES.intermediateCert));
  const intKey = await importPrivateKeyPem(
    read(CA_FILES.intermediateKey),
    join(dir, CA_FILES.intermediateKey),
  );
  // The root key signs nothing after `ca init` and is meant to be kept offline
  // (docs/operations.md): checked when it is here, not required.
  if (existsSync(join(dir, CA_FILES.rootKey))) {
    const rootKey = await importPrivateKeyPem(read(CA_FILES.rootKey), join(dir, CA_FILES.rootKey));
    await assertKeyMatches(root, rootKey.keys.publicKey, join(dir, CA_FILES.rootKey));
  }
  await assertKeyMatches(intermediateCert, intKey.keys.publicKey, join(dir, CA_FILES.intermediateKey));
  const nodeRoot = new NodeX509(rootPem);
  const nodeInt = new NodeX509(intermediatePem);
  if (!nodeRoot.ca || !nodeInt.ca)
    throw new CaError('ERR_CA_INVALID', `${dir}: root.pem and intermediate.pem must both be CA certificates`);
  if (!nodeInt.checkIssued(nodeRoot) || !nodeInt.verify(nodeRoot.publicKey)) {
    throw new CaError(
      'ERR_CA_INVALID',
      `${join(dir, CA_FILES.intermediateCert)}: not signed by ${join(dir, CA_FILES.rootCert)}`,
    );
  }
  const trustDomain = constrainedTrustDomain(intermediateCert, join(dir, CA_FILES.intermediateCert));
  return {
    dir,
    trustDomain,
    root,
    rootPem,
    intermediate: { cert: intermediateCert, privateKey: intKey.keys.privateKey, algorithm: intKey.algorithm },
    intermediatePem,
  };
}

function parseCert(pemText: string, path: string): x509.X509Certificate {
  try {
    return new x509.X509Certificate(pemText);
  } catch (err) {
    throw new CaError('ERR_CA_INVALID', `${path}: not a PEM certificate`, { cause: err });
  }
}

async function assertKeyMatches(
  cert: x509.X509Certificate,
  publicKey: CryptoKey,
  keyPath: string,
): Promise<void> {
  const fromKey = Buffer.from(await crypto.subtle.exportKey('spki', publicKey));
  if (!fromKey.equals(Buffer.from(cert.publicKey.rawData))) {
    throw new CaError('ERR_CA_INVALID', `${keyPath}: does not match its certificate`);
  }
}

/** The trust domain an intermediate is constrained to (its single permitted URI host). */
function constrainedTrustDomain(cert: x509.X509Certificate, path: string): string {
  const ext = cert.getExtension(id_ce_nameConstraints);
  const permitted = ext ? (AsnConvert.parse(ext.value, NameConstraints).permittedSubtrees ?? []) : [];
  const hosts = permitted.map((s) => s.base.uniformResourceIdentifier).filter((h): h is string => !!h);
  if (hosts.length !== 1) {
    throw new CaError(
      'ERR_CA_INVALID',
      `${path}: the intermediate must be name-constrained to exactly one trust domain`,
    );
  }
  return hosts[0]!;
}
