import { AsnConvert } from '@peculiar/asn1-schema';
import {
  GeneralName as AsnGeneralName,
  GeneralSubtree,
  GeneralSubtrees,
  NameConstraints,
  id_ce_nameConstraints,
} from '@peculiar/asn1-x509';
import { randomBytes } from 'node:crypto';
import { x509 } from './x509.ts';

/** Which certificate of the hierarchy a template is for. */
export type CertificateRole = 'root' | 'intermediate' | 'leaf';

/** What a leaf certificate names: one SPIFFE ID, optional DNS names. */
export interface LeafNames {
  readonly spiffeId: string;
  readonly dnsNames: readonly string[];
  readonly ipAddresses?: readonly string[];
}

/**
 * A fresh random positive 128-bit serial as lowercase hex (CA/B BR ask for at least 64 bits of
 * randomness; docs/architecture.md fixes 128). The top bit is cleared so DER needs no sign byte, and the
 * second-highest bit is set so every serial has the same length and its hex form never starts
 * with a zero (tools print serials with and without leading zeros; ours have none to lose).
 */
export function randomSerial(random: (n: number) => Uint8Array = randomBytes): string {
  const bytes = Uint8Array.from(random(16));
  bytes[0] = (bytes[0]! & 0x7f) | 0x40;
  return Buffer.from(bytes).toString('hex');
}

/**
 * The extensions of a certificate of `role` (without the key identifiers, which need the keys):
 * - root: CA, keyCertSign + cRLSign;
 * - intermediate: CA with pathLen 0, keyCertSign + cRLSign, URI name constraint permitting only
 *   the trust domain's host (RFC 5280 §4.2.1.10 constrains the host part of URIs);
 * - leaf: not a CA, digitalSignature only, EKU serverAuth + clientAuth, SAN with exactly one URI.
 */
export function certificateExtensions(
  role: CertificateRole,
  opts: { trustDomain?: string; names?: LeafNames },
): x509.Extension[] {
  switch (role) {
    case 'root':
      return [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      ];
    case 'intermediate': {
      if (!opts.trustDomain) throw new TypeError('"trustDomain" is required for an intermediate');
      return [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        uriNameConstraints(opts.trustDomain),
      ];
    }
    case 'leaf': {
      const names = opts.names;
      if (!names) throw new TypeError('"names" is required for a leaf');
      return [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension(
          [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
          false,
        ),
        new x509.SubjectAlternativeNameExtension(
          [
            { type: 'url', value: names.spiffeId },
            ...names.dnsNames.map((value) => ({ type: 'dns' as const, value })),
            ...(names.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
          ],
          false,
        ),
      ];
    }
    default:
      throw new TypeError(`unknown certificate role "${String(role)}"`);
  }
}

/** A critical nameConstraints extension permitting URIs whose host is exactly `trustDomain`. */
function uriNameConstraints(trustDomain: string): x509.Extension {
  const constraints = new NameConstraints({
    permittedSubtrees: new GeneralSubtrees([
      new GeneralSubtree({ base: new AsnGeneralName({ uniformResourceIdentifier: trustDomain }) }),
    ]),
  });
  return new x509.Extension(id_ce_nameConstraints, true, AsnConvert.serialize(constraints));
}
