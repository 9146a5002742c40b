import { connect as tlsConnect } from 'node:tls';
import type { Socket } from 'node:net';
import type { buildConnector } from 'undici';
import { chainIntermediatesPem, createPeerVerifier } from '../../ca/index.ts';
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
  const verifier = createPeerVerifier({
    trustAnchorsPem: material.ca,
    intermediatesPem: chainIntermediatesPem(material.cert),
    trustDomain: parseSpiffeId(collectorId).trustDomain,
    purpose: 'serverAuth',
    ...(options.clockSkewMs !== undefined ? { clockSkewMs: options.clockSkewMs } : {}),
  });
  return (target, callback) => {
    const done = callback as (err: Error | null, socket: Socket | null) => void;
    const socket = tlsConnect({
      host: target.hostname,
      port: Number(target.port) || 443,
      cert: material.cert,
      key: material.key,
      ca: material.ca,
      minVersion: 'TLSv1.3',
      ALPNProtocols: ['http/1.1'],
      // Judged below by the peer policy (the handshake's chain check is one of its inputs).
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
    });
    let settled = false;
    const finish = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        socket.destroy();
        done(err, null);
      } else done(null, socket);
    };
    const timer = setTimeout(
      () =>
        finish(new AuditError('ERR_AUDIT_COLLECTOR_UNREACHABLE', 'TLS connect to the collector timed out')),
      options.timeoutMs,
    );
    socket.once('secureConnect', () => {
      try {
        const peer = verifier.verifySocket(socket);
        if (peer.spiffeId.uri !== collectorId)
          throw new AuditError(
            'ERR_AUDIT_PEER_REFUSED',
            `collector certificate does not name ${collectorId} (it names ${peer.spiffeId.uri})`,
          );
        finish(null);
      } catch (err) {
        finish(err as Error);
      }
    });
    socket.once('error', (err) => finish(err));
  };
}
