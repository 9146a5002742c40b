import type forge from 'node-forge';
import { createHash, createPrivateKey, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';

/** Options of {@link exportPkcs12}. */
export interface Pkcs12Input {
  /** Leaf first, then the chain to include (intermediate, optionally the root). DER each. */
  readonly chainDer: readonly Uint8Array[];
  /** The leaf's private key, PEM. */
  readonly privateKeyPem: string;
  readonly passphrase: string;
  /** friendlyName of the key and leaf (usually the workload name). */
  readonly friendlyName: string;
}

const PBKDF2_ITERATIONS = 100_000;

// node-forge is loaded on first use: every process that imports ca/ (the sidecar, the STS) would
// otherwise carry it, and only the cert script exports PKCS#12.
let forgeLib: typeof forge | undefined;
const lib = (): typeof forge => (forgeLib ??= createRequire(import.meta.url)('node-forge') as typeof forge);

/**
 * A PKCS#12 (PFX) bundle of a workload's key and chain, readable by OpenSSL, Java and browsers:
 * the key as a pkcs8ShroudedKeyBag under PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC), certificates
 * in cert bags, integrity by an HMAC-SHA256 MAC (RFC 7292 appendix B key derivation).
 *
 * node-forge supplies the ASN.1, PBES2 and PKCS#12 KDF primitives; its one-call
 * `toPkcs12Asn1` only understands RSA keys, so the bags are assembled here for any key type.
 */
export function exportPkcs12(input: Pkcs12Input): Uint8Array {
  const forge = lib();
  const { asn1, pki } = forge;
  if (input.chainDer.length === 0) throw new TypeError('"chainDer" must hold at least the leaf');
  if (typeof input.passphrase !== 'string' || input.passphrase.length === 0)
    throw new TypeError('"passphrase" must be non-empty');
  const keyDer = createPrivateKey(input.privateKeyPem).export({ type: 'pkcs8', format: 'der' });
  const localKeyId = createHash('sha1').update(input.chainDer[0]!).digest('binary');
  const attrs = bagAttributes(input.friendlyName, localKeyId);

  const certBags = input.chainDer.map((der, i) =>
    seq([
      oid(pki.oids.certBag!),
      ctx0([seq([oid(pki.oids.x509Certificate!), ctx0([octets(Buffer.from(der).toString('binary'))])])]),
      ...(i === 0 ? [attrs] : []),
    ]),
  );
  const keyInfo = asn1.fromDer(forge.util.createBuffer(keyDer.toString('binary')));
  const shrouded = pki.encryptPrivateKeyInfo(keyInfo, input.passphrase, {
    algorithm: 'aes256',
    count: PBKDF2_ITERATIONS,
    prfAlgorithm: 'sha256',
  } as forge.pki.EncryptionOptions);
  const keyBag = seq([oid(pki.oids.pkcs8ShroudedKeyBag!), ctx0([shrouded]), attrs]);

  const authSafe = seq([dataContent(seq(certBags)), dataContent(seq([keyBag]))]);
  const authSafeDer = asn1.toDer(authSafe).getBytes();

  const macSalt = randomBytes(16).toString('binary');
  const macKey = forge.pkcs12.generateKey(
    input.passphrase,
    forge.util.createBuffer(macSalt),
    3,
    PBKDF2_ITERATIONS,
    32,
    forge.md.sha256.create(),
  );
  const hmac = forge.hmac.create();
  hmac.start(forge.md.sha256.create() as unknown as forge.md.MessageDigest, macKey);
  hmac.update(authSafeDer);
  const macData = seq([
    seq([
      seq([oid(pki.oids.sha256!), asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, '')]),
      octets(hmac.digest().getBytes()),
    ]),
    octets(macSalt),
    asn1.create(
      asn1.Class.UNIVERSAL,
      asn1.Type.INTEGER,
      false,
      asn1.integerToDer(PBKDF2_ITERATIONS).getBytes(),
    ),
  ]);
  const pfx = seq([
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(3).getBytes()),
    dataContent(authSafe),
    macData,
  ]);
  return new Uint8Array(Buffer.from(asn1.toDer(pfx).getBytes(), 'binary'));
}

function seq(items: forge.asn1.Asn1[]): forge.asn1.Asn1 {
  const { asn1 } = lib();
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, items);
}
function oid(id: string): forge.asn1.Asn1 {
  const { asn1 } = lib();
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(id).getBytes());
}
function octets(bytes: string): forge.asn1.Asn1 {
  const { asn1 } = lib();
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, bytes);
}
function ctx0(items: forge.asn1.Asn1[]): forge.asn1.Asn1 {
  const { asn1 } = lib();
  return asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, items);
}
/** PKCS#7 ContentInfo of type `data` wrapping the DER of `content`. */
function dataContent(content: forge.asn1.Asn1): forge.asn1.Asn1 {
  const { asn1, pki } = lib();
  return seq([oid(pki.oids.data!), ctx0([octets(asn1.toDer(content).getBytes())])]);
}
function bagAttributes(friendlyName: string, localKeyId: string): forge.asn1.Asn1 {
  const { asn1, pki } = lib();
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SET, true, [
    seq([
      oid(pki.oids.localKeyId!),
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SET, true, [octets(localKeyId)]),
    ]),
    seq([
      oid(pki.oids.friendlyName!),
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SET, true, [
        // forge encodes a BMPSTRING's JS string value as UCS-2 itself.
        asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BMPSTRING, false, friendlyName),
      ]),
    ]),
  ]);
}
