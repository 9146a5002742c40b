import type { TLSSocket } from 'node:tls';
import type { PeerVerifier } from '../../../ca/index.ts';
import { SidecarError } from '../../errors.ts';
import type { InboundLayer } from '../context.ts';
import { H2Request } from '../../h2/exchange.ts';

/**
 * Layer 1, TLS peer: the connection's client certificate chains to the trust bundle, carries
 * exactly one SPIFFE ID of the trust domain, is in date and not revoked (ca/'s verifier, chain
 * cached per socket, expiry and revocation checked per request; an HTTP/2 stream is judged on its
 * connection's socket, so every stream of a connection shares one verdict). Refusal: `ERR_SIDECAR_PEER_UNVERIFIED`
 * with the ca/ code in the audit attributes.
 */
export function peerLayer(verifier: () => PeerVerifier): InboundLayer {
  return (ctx) => {
    // An HTTP/2 request's `socket` is a new proxy per stream; the session's is one per connection.
    const { req } = ctx;
    const socket = req instanceof H2Request ? req.socket : (req.socket as TLSSocket);
    // A stream reset at once (rapid reset) has no session left to judge: recorded, not judged.
    if (!socket) throw new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 'the client reset the stream');
    try {
      ctx.peer = verifier().verifySocket(socket);
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'unknown';
      ctx.attributes = { peerError: code };
      throw new SidecarError('ERR_SIDECAR_PEER_UNVERIFIED', 'client certificate refused', { cause: err });
    }
  };
}
