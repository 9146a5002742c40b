import { X509Certificate as NodeX509, createHash } from 'node:crypto';
import type { AuditEvent } from '../core/index.ts';
import { normalizeSerial } from './serial.ts';

/**
 * The `cert.issued` audit event of one certificate: serial, SPIFFE ID, validity, key thumbprint
 * (base64url SHA-256 of the SubjectPublicKeyInfo) and how the subject was authenticated — the
 * same shape online (EST) and offline (`certs issue`) issuance record.
 */
export function certIssuedEvent(input: {
  readonly certPem: string;
  readonly workload: string;
  /** `offline` (certs issue), `join-token` or `mtls`. */
  readonly auth: string;
  readonly action: string;
  readonly reason?: string;
  readonly time: Date;
}): AuditEvent {
  const leaf = new NodeX509(input.certPem);
  const spiffeId = /URI:(spiffe:\/\/[^,\s]+)/.exec(leaf.subjectAltName ?? '')?.[1];
  const serial = normalizeSerial(leaf.serialNumber);
  return {
    type: 'cert.issued',
    time: input.time.toISOString(),
    ...(spiffeId ? { subject: spiffeId } : {}),
    target: serial,
    action: input.action,
    decision: 'allow',
    reason: input.reason ?? 'issued',
    attributes: {
      serial,
      notBefore: new Date(leaf.validFrom).toISOString(),
      notAfter: new Date(leaf.validTo).toISOString(),
      keyThumbprint: createHash('sha256')
        .update(leaf.publicKey.export({ type: 'spki', format: 'der' }))
        .digest('base64url'),
      workload: input.workload,
      auth: input.auth,
    },
  };
}
