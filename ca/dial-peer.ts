import { connect as tlsConnect } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import type { Socket } from 'node:net';
import type { buildConnector } from 'undici';
import type { PeerIdentity, PeerVerifier } from './verify-peer.ts';
import type { TlsMaterial } from './watch-tls.ts';

/** Options of {@link peerConnector}. */
export interface PeerConnectorOptions {
  /** The dialer's own chain and key, and the trust bundle (the handshake's `ca`: nothing else). */
  readonly material: TlsMaterial;
  /** A verifier built with the `serverAuth` purpose. */
  readonly verifier: PeerVerifier;
  /** Called with the verified server; throws to refuse it (a SPIFFE ID or host name that is not the expected one). */
  readonly accept: (peer: PeerIdentity, socket: TLSSocket) => void;
  readonly timeoutMs: number;
  /** The error a handshake that outlasts `timeoutMs` fails with. */
  readonly onTimeout: () => Error;
  readonly minVersion?: 'TLSv1.2' | 'TLSv1.3';
}

/**
 * An undici `connect` function that dials mTLS and, before any request byte is written, judges
 * the server with the X.509-SVID peer policy (docs/decisions/0006): the handshake's own verdict is
 * one of the policy's inputs, not the gate, so a refusal carries the policy's `ERR_CA_*` code.
 */
export function peerConnector(o: PeerConnectorOptions): buildConnector.connector {
  return (target, callback) => {
    const done = callback as (err: Error | null, socket: Socket | null) => void;
    const socket = tlsConnect({
      host: target.hostname,
      port: Number(target.port) || 443,
      ...(target.servername ? { servername: target.servername } : {}),
      cert: o.material.cert,
      key: o.material.key,
      ca: o.material.ca,
      minVersion: o.minVersion ?? 'TLSv1.3',
      ALPNProtocols: ['http/1.1'],
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
    const timer = setTimeout(() => finish(o.onTimeout()), o.timeoutMs);
    socket.once('secureConnect', () => {
      try {
        o.accept(o.verifier.verifySocket(socket), socket);
        finish(null);
      } catch (err) {
        finish(err as Error);
      }
    });
    socket.once('error', (err) => finish(err));
  };
}
