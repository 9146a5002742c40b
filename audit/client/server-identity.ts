import type { PeerCertificate } from 'node:tls';

/**
 * A TLS `checkServerIdentity` for the collector: the chain is checked against the trust bundle by
 * TLS itself; the name that matters is the SPIFFE ID, which must be the certificate's one and
 * only URI SAN. (Node quotes SAN values holding separators, so a crafted value cannot split into
 * a matching entry.)
 */
export function expectCollectorId(collectorId: string) {
  const want = `URI:${collectorId}`;
  return (_host: string, cert: PeerCertificate): Error | undefined => {
    const uris = (cert.subjectaltname ?? '').split(', ').filter((s) => s.startsWith('URI:'));
    return uris.length === 1 && uris[0] === want
      ? undefined
      : new Error(`collector certificate does not name ${collectorId}`);
  };
}
