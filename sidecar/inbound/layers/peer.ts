import type { TLSSocket } from 'node:tls';
import type { PeerVerifier } from '../../../ca/index.ts';
import { SidecarError } from '../../errors.ts';
import type { InboundLayer } from '../context.ts';

/**
 * Layer 1, TLS peer: the connection's client certificate chains to the trust bundle, carries
 * exactly one SPIFFE ID of the trust domain, is in date and not revoked (ca/'s verifier, chain
 * cached per socket, expiry and revocation checked per request). Refusal: `ERR_SIDECAR_PEER_UNVERIFIED`
 * with the ca/ code in the audit attributes.
 */
export function peerLayer(verifier: () => PeerVerifier): InboundLayer {
  return (ctx) => {
    try {
      ctx.peer = verifier().verifySocket(ctx.req.socket as TLSSocket);
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'unknown';
      ctx.attributes = { peerError: code };
      throw new SidecarError('ERR_SIDECAR_PEER_UNVERIFIED', 'client certificate refused', { cause: err });
    }
  };
}
