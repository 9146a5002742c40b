import type { buildConnector } from 'undici';
import { chainIntermediatesPem, createPeerVerifier, peerConnector } from '../../ca/index.ts';
import type { TlsMaterial } from '../../ca/index.ts';
import { parseSpiffeId } from '../../core/index.ts';
import { AuditError } from '../errors.ts';

/**
 * An undici `connect` function for the collector: TLS 1.3 with the workload's own certificate;
 * before any byte is written the collector's certificate passes ca/'s X.509-SVID peer policy
 * with the serverAuth purpose (the same policy every listener and dialer applies) and must carry
 * `collectorId`. A refused certificate fails the connection with the policy's CaError (its
 * `code` says why); another SPIFFE ID fails it with `ERR_AUDIT_PEER_REFUSED`. A handshake that
 * outlasts `timeoutMs` fails with `ERR_AUDIT_COLLECTOR_UNREACHABLE`.
 */
export function collectorConnector(
  material: TlsMaterial,
  collectorId: string,
  options: { readonly timeoutMs: number; readonly clockSkewMs?: number },
): buildConnector.connector {
  return peerConnector({
    material,
    verifier: createPeerVerifier({
      trustAnchorsPem: material.ca,
      intermediatesPem: chainIntermediatesPem(material.cert),
      trustDomain: parseSpiffeId(collectorId).trustDomain,
      purpose: 'serverAuth',
      ...(options.clockSkewMs !== undefined ? { clockSkewMs: options.clockSkewMs } : {}),
    }),
    accept: (peer) => {
      if (peer.spiffeId.uri !== collectorId)
        throw new AuditError(
          'ERR_AUDIT_PEER_REFUSED',
          `collector certificate does not name ${collectorId} (it names ${peer.spiffeId.uri})`,
        );
    },
    timeoutMs: options.timeoutMs,
    onTimeout: () =>
      new AuditError('ERR_AUDIT_COLLECTOR_UNREACHABLE', 'TLS connect to the collector timed out'),
  });
}
