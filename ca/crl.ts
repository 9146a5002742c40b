import { readFileSync } from 'node:fs';
import { AsnConvert } from '@peculiar/asn1-schema';
import { CRLNumber, id_ce_cRLNumber } from '@peculiar/asn1-x509';
import { CaError } from './errors.ts';
import { normalizeSerial } from './serial.ts';
import { pem, signingAlgorithm } from './keys.ts';
import type { SigningCa } from './issue.ts';
import { x509 } from './x509.ts';

/** One revoked certificate. */
export interface RevokedEntry {
  /** Canonical serial (see normalizeSerial). */
  readonly serial: string;
  readonly revokedAt: Date;
  readonly reason?: x509.X509CrlReason;
}

/** A parsed, signature-checked CRL. */
export interface RevocationList {
  readonly number: number;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date | undefined;
  readonly entries: readonly RevokedEntry[];
  readonly pem: string;
}

/** Inputs of {@link createCrl}. */
export interface CreateCrlInput {
  readonly issuer: SigningCa;
  readonly entries: readonly RevokedEntry[];
  readonly number: number;
  readonly validityMs: number;
  readonly deps: { readonly now: () => Date };
}

/** Signs a v2 CRL (RFC 5280 §5) with a CRL number and an authority key identifier. */
export async function createCrl(input: CreateCrlInput): Promise<RevocationList> {
  const thisUpdate = input.deps.now();
  const nextUpdate = new Date(thisUpdate.getTime() + input.validityMs);
  const crl = await x509.X509CrlGenerator.create({
    issuer: input.issuer.cert.subject,
    thisUpdate,
    nextUpdate,
    signingAlgorithm: signingAlgorithm(input.issuer.algorithm),
    signingKey: input.issuer.privateKey,
    extensions: [
      await x509.AuthorityKeyIdentifierExtension.create(input.issuer.cert.publicKey),
      new x509.Extension(id_ce_cRLNumber, false, AsnConvert.serialize(new CRLNumber(input.number))),
    ],
    entries: input.entries.map((e) => ({
      serialNumber: e.serial.length % 2 ? `0${e.serial}` : e.serial,
      revocationDate: e.revokedAt,
      ...(e.reason !== undefined ? { reason: e.reason } : {}),
    })),
  });
  return {
    number: input.number,
    thisUpdate,
    nextUpdate,
    entries: input.entries,
    pem: pem('X509 CRL', new Uint8Array(crl.rawData)),
  };
}

/**
 * Parses a PEM CRL and checks that `issuer` signed it. Throws CaError `ERR_CA_CRL_INVALID` for
 * anything else: unparsable, wrong signer, bad signature.
 */
export async function parseCrl(pemText: string, issuer: x509.X509Certificate): Promise<RevocationList> {
  let crl: x509.X509Crl;
  try {
    const m = /-----BEGIN X509 CRL-----([A-Za-z0-9+/=\s]+)-----END X509 CRL-----/.exec(pemText);
    if (!m) throw new Error('no "X509 CRL" PEM block');
    crl = new x509.X509Crl(new Uint8Array(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64')));
  } catch (err) {
    throw new CaError('ERR_CA_CRL_INVALID', 'not a PEM X.509 CRL', { cause: err });
  }
  if (crl.issuer !== issuer.subject || !(await crl.verify({ publicKey: issuer.publicKey }))) {
    throw new CaError('ERR_CA_CRL_INVALID', `CRL is not signed by "${issuer.subject}"`);
  }
  const numberExt = crl.getExtension(id_ce_cRLNumber);
  const number = numberExt ? AsnConvert.parse(numberExt.value, CRLNumber).value : 0;
  return {
    number,
    thisUpdate: crl.thisUpdate,
    nextUpdate: crl.nextUpdate,
    entries: crl.entries.map((e) => ({
      serial: normalizeSerial(e.serialNumber),
      revokedAt: e.revocationDate,
      ...(e.reason !== undefined ? { reason: e.reason } : {}),
    })),
    pem: pemText,
  };
}

/** How long a CRL is valid when neither `certs issue` nor `certs revoke` is told otherwise. */
export const DEFAULT_CRL_VALIDITY_MS = 7 * 86_400_000;

/**
 * The CRL at `path`, checked against the intermediate, or undefined when there is none yet.
 * Throws CaError `ERR_CA_CRL_INVALID` naming the file when it is there but cannot be read or is
 * not a CRL of `issuer`.
 */
export async function loadCrlFile(
  path: string,
  issuer: x509.X509Certificate,
): Promise<RevocationList | undefined> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    // Only a missing file means "no CRL yet": any other failure must not start an empty CRL
    // over the revocations the unreadable one holds.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CaError(
      'ERR_CA_CRL_INVALID',
      `${path}: cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      { cause: err },
    );
  }
  try {
    return await parseCrl(text, issuer);
  } catch (err) {
    throw new CaError(
      'ERR_CA_CRL_INVALID',
      `${path}: ${(err as Error).message}; move it away to start a new CRL`,
      {
        cause: err,
      },
    );
  }
}
