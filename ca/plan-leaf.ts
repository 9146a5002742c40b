import { X509Certificate as NodeX509, createPrivateKey, createPublicKey } from 'node:crypto';
import type { Workload } from '../core/index.ts';
import { x509 } from './x509.ts';

/** What to do with one workload's certificate. */
export type LeafPlan =
  | { readonly action: 'keep'; readonly notAfter: Date }
  | { readonly action: 'issue' | 'renew'; readonly reason: string };

/** What is on disk for a workload now (undefined when a file is missing). */
export interface ExistingLeaf {
  readonly certPem?: string;
  readonly keyPem?: string;
}

/**
 * Decides whether a workload's certificate stays, is issued, or is renewed: renewed when it
 * cannot be read, its key does not match, another intermediate signed it, its names differ from
 * the registry entry, or it expires within `renewWithinMs`. Pure: reads no file, no clock.
 */
export function planLeaf(input: {
  readonly workload: Workload;
  readonly existing: ExistingLeaf;
  readonly intermediatePem: string;
  readonly nowMs: number;
  readonly renewWithinMs: number;
}): LeafPlan {
  const { workload, existing } = input;
  if (existing.certPem === undefined) return { action: 'issue', reason: 'no certificate yet' };
  if (existing.keyPem === undefined) return { action: 'renew', reason: 'private key file is missing' };
  let leaf: NodeX509;
  let parsed: x509.X509Certificate;
  try {
    leaf = new NodeX509(existing.certPem);
    parsed = new x509.X509Certificate(existing.certPem);
  } catch {
    return { action: 'renew', reason: 'certificate file is unreadable' };
  }
  try {
    const spki = (pem: string | NodeX509) =>
      (typeof pem === 'string' ? createPublicKey(createPrivateKey(pem)) : pem.publicKey).export({
        type: 'spki',
        format: 'der',
      });
    if (!spki(existing.keyPem).equals(spki(leaf)))
      return { action: 'renew', reason: 'private key does not match the certificate' };
  } catch {
    return { action: 'renew', reason: 'private key file is unreadable' };
  }
  const intermediate = new NodeX509(input.intermediatePem);
  if (!leaf.checkIssued(intermediate) || !leaf.verify(intermediate.publicKey)) {
    return { action: 'renew', reason: 'signed by another intermediate' };
  }
  const san = parsed.getExtension(x509.SubjectAlternativeNameExtension);
  const items = san?.names.items ?? [];
  const uris = items.filter((n) => n.type === 'url').map((n) => n.value);
  const dns = items
    .filter((n) => n.type === 'dns')
    .map((n) => n.value)
    .sort();
  const wantDns = [...workload.dnsNames].sort();
  const ips = items
    .filter((n) => n.type === 'ip')
    .map((n) => canonicalIp(n.value))
    .sort();
  const wantIps = workload.ipAddresses.map(canonicalIp).sort();
  if (
    uris.length !== 1 ||
    uris[0] !== workload.spiffeId.uri ||
    dns.join(',') !== wantDns.join(',') ||
    ips.join(',') !== wantIps.join(',')
  ) {
    return { action: 'renew', reason: 'registry entry changed (SPIFFE ID, DNS names or IP addresses)' };
  }
  const notAfter = parsed.notAfter;
  if (notAfter.getTime() - input.nowMs <= input.renewWithinMs) {
    return {
      action: 'renew',
      reason:
        notAfter.getTime() <= input.nowMs
          ? 'expired'
          : `expires ${notAfter.toISOString()}, within the renewal threshold`,
    };
  }
  return { action: 'keep', notAfter };
}

/** One spelling per address, so that `::1` and `0:0:0:0:0:0:0:1` compare equal. */
function canonicalIp(ip: string): string {
  return ip.includes(':') ? new URL(`http://[${ip}]`).hostname : ip;
}
