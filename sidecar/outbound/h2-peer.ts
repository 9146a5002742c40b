import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { buildConnector } from 'undici';
import { SidecarError } from '../errors.ts';
import { createH2Client, openH2OverSocket } from '../h2/relay.ts';
import type { H2Client } from '../h2/relay.ts';
import type { Route } from './route.ts';

/**
 * The one multiplexed HTTP/2 connection to a route's peer sidecar: dialled with the same mTLS
 * connector as the HTTP/1.1 pool (its certificate and SPIFFE ID checked before any byte of a
 * request is written), ALPN `h2`, and shared by every HTTP/2 call to that route; re-dialled when
 * it closes or receives GOAWAY. A peer that does not negotiate `h2` is
 * `ERR_SIDECAR_UPSTREAM_UNAVAILABLE`.
 */
export function h2PeerClient(route: Route, connector: buildConnector.connector, timeoutMs: number): H2Client {
  const [hostname, port] = splitAddress(route.address);
  return createH2Client(async () => {
    const socket = await new Promise<TLSSocket>((resolve, reject) =>
      connector(
        {
          hostname,
          host: route.address,
          port,
          protocol: 'https:',
          servername: undefined,
        } as unknown as buildConnector.Options,
        ((err: Error | null, s: Socket | null) =>
          err ? reject(err) : resolve(s as TLSSocket)) as buildConnector.Callback,
      ),
    );
    if (socket.alpnProtocol !== 'h2') {
      socket.destroy();
      throw new SidecarError('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 'the peer sidecar did not negotiate HTTP/2');
    }
    return openH2OverSocket(`https://${route.address}`, socket, timeoutMs);
  });
}

function splitAddress(address: string): [string, string] {
  const at = address.lastIndexOf(':');
  const host = address.slice(0, at);
  return [host.startsWith('[') ? host.slice(1, -1) : host, address.slice(at + 1)];
}
