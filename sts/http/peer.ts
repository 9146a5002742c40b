import type { TLSSocket } from 'node:tls';
import type { SpiffeId } from '../../core/index.ts';

/** The part of a verified peer the STS uses (ca/'s `PeerIdentity` satisfies it). */
export interface StsPeer {
  readonly spiffeId: SpiffeId;
  readonly serial: string;
  readonly thumbprint: string;
  readonly notAfter: Date;
}

/** The peer check the STS needs: ca/'s `createPeerVerifier(...)` result satisfies it. */
export interface StsPeerVerifier {
  /** Throws a `CaError` (with a `code`) when the peer is refused; caches chain work per socket. */
  verifySocket(socket: TLSSocket): StsPeer;
}
