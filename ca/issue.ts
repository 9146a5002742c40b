import { x509 } from './x509.ts';
import { certificateExtensions, randomSerial } from './templates.ts';
import type { CertificateRole, LeafNames } from './templates.ts';
import { signingAlgorithm } from './keys.ts';
import type { KeyAlgorithm } from './keys.ts';

/** A CA that can sign: its certificate, its private key and that key's algorithm. */
export interface SigningCa {
  readonly cert: x509.X509Certificate;
  readonly privateKey: CryptoKey;
  readonly algorithm: KeyAlgorithm;
}

/** Inputs of {@link issueCertificate}. */
export interface IssueCertificateInput {
  readonly role: CertificateRole;
  /** Distinguished name, e.g. `O=example.org, CN=orders`. */
  readonly subject: string;
  /** The subject's public key: a WebCrypto key, or the parsed key of a CSR. */
  readonly publicKey: CryptoKey | x509.PublicKey;
  /** The signing CA; absent for a self-signed root (then `selfKeys` signs). */
  readonly issuer?: SigningCa;
  readonly selfKeys?: { readonly privateKey: CryptoKey; readonly algorithm: KeyAlgorithm };
  readonly validityMs: number;
  readonly trustDomain?: string;
  readonly names?: LeafNames;
  /** Injected clock and randomness (STYLE.md #4). */
  readonly deps: { readonly now: () => Date; readonly randomSerial?: () => string };
}

/** Certificates start a minute in the past so that peers with a slightly slow clock accept them. */
const BACKDATE_MS = 60_000;

/**
 * Issues one certificate of the hierarchy: a self-signed root, an intermediate signed by the
 * root, or a workload leaf signed by the intermediate (see {@link certificateExtensions}).
 * Every certificate but the root carries an authority key identifier; every one a subject key id.
 */
export async function issueCertificate(input: IssueCertificateInput): Promise<x509.X509Certificate> {
  if (!Number.isSafeInteger(input.validityMs) || input.validityMs <= 0)
    throw new TypeError('"validityMs" must be a positive integer');
  const signer = input.issuer ?? input.selfKeys;
  if (!signer) throw new TypeError('"issuer" or "selfKeys" is required');
  if ((input.role === 'root') !== !input.issuer) throw new TypeError('only a root is self-signed');
  const now = input.deps.now().getTime();
  const notBefore = new Date(now - BACKDATE_MS);
  let notAfter = new Date(now + input.validityMs);
  // A certificate never outlives its issuer (RFC 5280 path validation would refuse it anyway).
  if (input.issuer && notAfter > input.issuer.cert.notAfter) notAfter = input.issuer.cert.notAfter;
  const extensions = certificateExtensions(input.role, {
    trustDomain: input.trustDomain,
    names: input.names,
  });
  extensions.push(await x509.SubjectKeyIdentifierExtension.create(input.publicKey));
  if (input.issuer)
    extensions.push(await x509.AuthorityKeyIdentifierExtension.create(input.issuer.cert.publicKey));
  return x509.X509CertificateGenerator.create({
    serialNumber: (input.deps.randomSerial ?? randomSerial)(),
    subject: input.subject,
    issuer: input.issuer ? input.issuer.cert.subject : input.subject,
    notBefore,
    notAfter,
    signingAlgorithm: signingAlgorithm(signer.algorithm),
    publicKey: input.publicKey,
    signingKey: signer.privateKey,
    extensions,
  });
}
