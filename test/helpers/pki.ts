// Test PKI: a real CA directory, real leaves for the example identities, and a mint for odd
// certificates (expired, foreign CA, two URI SANs, CA:true leaf…) that peer checks must refuse.
import { mkdtempSync, rmSync, copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate as NodeX509 } from 'node:crypto';
import { certificateThumbprint, loadRegistry } from '../../core/index.ts';
import type { Registry } from '../../core/index.ts';
import {
  exportPrivateKeyPem,
  generateKeyPair,
  initCaDirectory,
  issueWorkloadCertificates,
  normalizeSerial,
  randomSerial,
  signingAlgorithm,
  splitPemBundle,
  x509,
} from './ca-internals.ts';
import type { CaMaterial, KeyAlgorithm } from './ca-internals.ts';

const EXAMPLE_IDENTITIES = new URL('../../identities/example.yaml', import.meta.url);

/** A workload's credentials on disk and in memory. */
export interface TestLeaf {
  /** Path of leaf + intermediate PEM. */
  readonly certFile: string;
  readonly keyFile: string;
  /** Leaf followed by the intermediate. */
  readonly certPem: string;
  readonly keyPem: string;
  readonly leafDer: Uint8Array;
  readonly serial: string;
  readonly thumbprint: string;
}

/** Options of {@link TestPki.mint}: every knob a hostile or broken certificate may turn. */
export interface MintOptions {
  readonly uris?: readonly string[];
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  readonly ca?: boolean;
  readonly keyUsage?: number;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  /** Who signs: the test intermediate (default), the root directly, the foreign CA, or a minted CA. */
  readonly signer?: 'intermediate' | 'root' | 'foreign' | MintedCa;
  readonly keyAlgorithm?: KeyAlgorithm | 'rsa-1024' | 'rsa-2048' | 'ecdsa-p384' | 'ecdsa-p521';
  /** Include the intermediate in the returned chain (default true). */
  readonly withIntermediate?: boolean;
  /** Subject DN (default `O=test, CN=minted`); `''` is the empty subject. */
  readonly subject?: string;
  /** Mark the subjectAltName critical (default false). */
  readonly sanCritical?: boolean;
  /** Extended key usages (default serverAuth + clientAuth); null leaves the extension out. */
  readonly extKeyUsages?: readonly string[] | null;
  /** Leave the keyUsage extension out. */
  readonly keyUsageOmitted?: boolean;
  /** Hash the issuer signs with (default SHA-256; SHA-1 for the refused case). */
  readonly signatureHash?: 'SHA-1' | 'SHA-256' | 'SHA-384';
  readonly extraExtensions?: readonly x509.Extension[];
  /** OIDs of the usual extensions to leave out (e.g. the authorityKeyIdentifier `2.5.29.35`). */
  readonly omitExtensions?: readonly string[];
}

/** Options of {@link TestPki.mintIntermediate}. */
export interface MintCaOptions {
  readonly extraExtensions?: readonly x509.Extension[];
  /** Default keyCertSign + cRLSign. */
  readonly keyUsage?: number;
  /** Default true. */
  readonly basicConstraintsCritical?: boolean;
  /** Default 0. */
  readonly pathLength?: number;
  /** Default the test root; another minted CA makes a longer path. */
  readonly signer?: MintedCa;
}

/** A CA certificate minted under the test root (for odd intermediates). */
export interface MintedCa {
  readonly cert: x509.X509Certificate;
  readonly privateKey: CryptoKey;
  readonly algorithm: KeyAlgorithm;
  /** The CA and any minted CA above it (not the root). */
  readonly pem: string;
}

/** A minted certificate with its key and the chain a peer would present. */
export interface MintedCert {
  readonly certPem: string;
  readonly keyPem: string;
  /** What a peer presents: the leaf, plus the intermediate unless withIntermediate is false. */
  readonly chainPem: string;
  readonly leafDer: Uint8Array;
  readonly chainDer: Uint8Array[];
  readonly serial: string;
}

/** A CA, an identity registry and certificates for its workloads, all in a temp dir. */
export interface TestPki {
  readonly dir: string;
  readonly trustDomain: string;
  readonly identitiesDir: string;
  readonly registry: Registry;
  readonly ca: CaMaterial;
  /** Root PEM: the trust bundle. */
  readonly rootPem: string;
  readonly rootFile: string;
  readonly intermediatePem: string;
  readonly certsDir: string;
  leaf(name: string): TestLeaf;
  /** A part's `tls:` config section for the leaf `name`, with the test root as trust bundle. */
  tlsConfig(name: string): { cert: string; key: string; trustBundle: string };
  mint(options?: MintOptions): Promise<MintedCert>;
  /** An intermediate CA under the test root (pathLen 0, no name constraints), with `extraExtensions`. */
  mintIntermediate(options?: MintCaOptions): Promise<MintedCa>;
  cleanup(): void;
}

/**
 * Creates a CA and leaves for `identities/example.yaml` (or `identitiesYaml`) under a temp dir,
 * exactly as `npm run certs` would. Call `cleanup()` when done.
 */
export async function makeTestPki(
  options: { identitiesYaml?: string; keyAlgorithm?: KeyAlgorithm } = {},
): Promise<TestPki> {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-pki-'));
  const identitiesDir = join(dir, 'identities');
  mkdirSync(identitiesDir);
  if (options.identitiesYaml) {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(identitiesDir, 'registry.yaml'), options.identitiesYaml);
  } else {
    copyFileSync(EXAMPLE_IDENTITIES, join(identitiesDir, 'example.yaml'));
  }
  const registry = loadRegistry(identitiesDir);
  const keyAlgorithm = options.keyAlgorithm ?? 'ecdsa-p256';
  const ca = await initCaDirectory(join(dir, 'ca'), { trustDomain: registry.trustDomain, keyAlgorithm });
  const certsDir = join(dir, 'certs');
  await issueWorkloadCertificates({
    registry,
    ca,
    outDir: certsDir,
    validityMs: 24 * 3_600_000,
    renewWithinMs: 3_600_000,
    keyAlgorithm,
    deps: { now: () => new Date() },
  });
  let foreign: CaMaterial | undefined;
  const rootFile = join(certsDir, 'root.pem');

  return {
    dir,
    trustDomain: registry.trustDomain,
    identitiesDir,
    registry,
    ca,
    rootPem: ca.rootPem,
    rootFile,
    intermediatePem: ca.intermediatePem,
    certsDir,
    tlsConfig(name) {
      return {
        cert: join(certsDir, `${name}.pem`),
        key: join(certsDir, `${name}-key.pem`),
        trustBundle: rootFile,
      };
    },
    leaf(name) {
      const certFile = join(certsDir, `${name}.pem`);
      const keyFile = join(certsDir, `${name}-key.pem`);
      const certPem = readFileSync(certFile, 'utf8');
      const node = new NodeX509(certPem);
      return {
        certFile,
        keyFile,
        certPem,
        keyPem: readFileSync(keyFile, 'utf8'),
        leafDer: new Uint8Array(node.raw),
        serial: normalizeSerial(node.serialNumber),
        thumbprint: certificateThumbprint(node.raw),
      };
    },
    async mint(o = {}) {
      if (o.signer === 'foreign' && !foreign) {
        foreign = await initCaDirectory(join(dir, 'foreign-ca'), { trustDomain: registry.trustDomain });
      }
      const issuer =
        typeof o.signer === 'object'
          ? o.signer
          : o.signer === 'foreign'
            ? foreign!.intermediate
            : o.signer === 'root'
              ? await rootSigner(ca)
              : ca.intermediate;
      const alg = o.keyAlgorithm ?? 'ecdsa-p256';
      const rsaBits = alg === 'rsa-1024' ? 1024 : alg === 'rsa-2048' ? 2048 : undefined;
      const ecCurve = alg === 'ecdsa-p384' ? 'P-384' : alg === 'ecdsa-p521' ? 'P-521' : undefined;
      const keys = rsaBits
        ? ((await crypto.subtle.generateKey(
            {
              name: 'RSASSA-PKCS1-v1_5',
              modulusLength: rsaBits,
              publicExponent: new Uint8Array([1, 0, 1]),
              hash: 'SHA-256',
            },
            true,
            ['sign', 'verify'],
          )) as CryptoKeyPair)
        : ecCurve
          ? ((await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: ecCurve }, true, [
              'sign',
              'verify',
            ])) as CryptoKeyPair)
          : await generateKeyPair(alg as KeyAlgorithm);
      const now = Date.now();
      const uris = o.uris ?? [`spiffe://${registry.trustDomain}/ns/shop/sa/web`];
      const usual: x509.Extension[] = [
        new x509.BasicConstraintsExtension(o.ca ?? false, undefined, true),
        ...(o.keyUsageOmitted
          ? []
          : [new x509.KeyUsagesExtension(o.keyUsage ?? x509.KeyUsageFlags.digitalSignature, true)]),
        ...(o.extKeyUsages === null
          ? []
          : [
              new x509.ExtendedKeyUsageExtension([
                ...(o.extKeyUsages ?? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
              ]),
            ]),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(issuer.cert.publicKey),
      ];
      const extensions = usual
        .filter((e) => !(o.omitExtensions ?? []).includes(e.type))
        .concat(o.extraExtensions ?? []);
      const names = [
        ...uris.map((value) => ({ type: 'url' as const, value })),
        ...(o.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
        ...(o.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
      ];
      if (names.length > 0)
        extensions.push(new x509.SubjectAlternativeNameExtension(names, o.sanCritical ?? false));
      const sigAlg = signingAlgorithm(issuer.algorithm);
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: randomSerial(),
        subject: o.subject ?? 'O=test, CN=minted',
        issuer: issuer.cert.subject,
        notBefore: o.notBefore ?? new Date(now - 60_000),
        notAfter: o.notAfter ?? new Date(now + 3_600_000),
        signingAlgorithm: o.signatureHash ? { ...sigAlg, hash: o.signatureHash } : sigAlg,
        publicKey: keys.publicKey,
        signingKey: issuer.privateKey,
        extensions,
      });
      const certPem = cert.toString('pem') + '\n';
      const intermediatePem =
        typeof o.signer === 'object'
          ? o.signer.pem
          : o.signer === 'foreign'
            ? foreign!.intermediatePem
            : ca.intermediatePem;
      const withIntermediate = (o.withIntermediate ?? true) && o.signer !== 'root';
      const leafDer = new Uint8Array(cert.rawData);
      return {
        certPem,
        keyPem: await exportPrivateKeyPem(keys.privateKey),
        chainPem: withIntermediate ? certPem + intermediatePem : certPem,
        leafDer,
        chainDer: withIntermediate ? [leafDer, ...splitPemBundle(intermediatePem)] : [leafDer],
        serial: normalizeSerial(cert.serialNumber),
      };
    },
    async mintIntermediate(o = {}) {
      const signer = o.signer ?? (await rootSigner(ca));
      const keys = await generateKeyPair('ecdsa-p256');
      const now = Date.now();
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: randomSerial(),
        subject: `O=${registry.trustDomain}, CN=Minted Intermediate ${randomSerial().slice(0, 8)}`,
        issuer: signer.cert.subject,
        notBefore: new Date(now - 60_000),
        notAfter: new Date(now + 24 * 3_600_000),
        signingAlgorithm: signingAlgorithm(signer.algorithm),
        publicKey: keys.publicKey,
        signingKey: signer.privateKey,
        extensions: [
          new x509.BasicConstraintsExtension(true, o.pathLength ?? 0, o.basicConstraintsCritical ?? true),
          new x509.KeyUsagesExtension(
            o.keyUsage ?? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
            true,
          ),
          await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
          await x509.AuthorityKeyIdentifierExtension.create(signer.cert.publicKey),
          ...(o.extraExtensions ?? []),
        ],
      });
      const pem = cert.toString('pem') + '\n';
      return {
        cert,
        privateKey: keys.privateKey,
        algorithm: 'ecdsa-p256' as const,
        // A CA under another minted CA carries that CA's chain, as a peer would send it.
        pem: o.signer ? pem + o.signer.pem : pem,
      };
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function rootSigner(ca: CaMaterial) {
  const { importPrivateKeyPem } = await import('./ca-internals.ts');
  const key = await importPrivateKeyPem(readFileSync(join(ca.dir, 'root-key.pem'), 'utf8'), 'root key');
  return { cert: ca.root, privateKey: key.keys.privateKey, algorithm: key.algorithm };
}
