import type { TLSSocket } from 'node:tls';
import type { buildConnector } from 'undici';
import { SidecarError } from '../errors.ts';
import { createH2Client, openH2OverSocket } from '../h2/relay.ts';
import type { H2Client } from '../h2/relay.ts';
import type { Route } from './route.ts';
import { connectWith } from './upgrade.ts';

/**
 * The one multiplexed HTTP/2 connection to a route's peer sidecar: dialled with the same mTLS
 * connector as the HTTP/1.1 pool (its certificate and SPIFFE ID checked before any byte of a
 * request is written), ALPN `h2`, and shared by every HTTP/2 call to that route; re-dialled when
 * it closes or receives GOAWAY. A peer that does not negotiate `h2` is
 * `ERR_SIDECAR_UPSTREAM_UNAVAILABLE`.
 */
export function h2PeerClient(route: Route, connector: buildConnector.connector, timeoutMs: number): H2Client {
  return createH2Client(async () => {
    const socket = (await connectWith(connector, route.address)) as TLSSocket;
    if (socket.alpnProtocol !== 'h2') {
      socket.destroy();
      throw new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 'the peer sidecar did not negotiate HTTP/2');
    }
    return openH2OverSocket(`https://${route.address}`, socket, timeoutMs);
  });
}
