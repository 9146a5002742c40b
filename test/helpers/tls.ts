// One real TLS connection to a listener like the STS's (it asks for a client certificate and
// leaves judging it to the peer policy), for tests of what the policy makes of the server side.
import { once } from 'node:events';
import { connect, createServer } from 'node:tls';
import type { AddressInfo } from 'node:net';
import type { TLSSocket, TlsOptions } from 'node:tls';
import type { TestPki } from './pki.ts';

/** The accepted, server-side socket, and how to end the connection and the listener. */
export interface AcceptedTls {
  readonly socket: TLSSocket;
  close(): void;
}

/**
 * Listens on a loopback port with the test PKI's `sts` leaf (root as `ca`, `requestCert`, not
 * `rejectUnauthorized`), connects once with `client`'s chain and key (none: no client
 * certificate) and resolves with the server's side once its handshake is done.
 */
export async function acceptTls(
  pki: TestPki,
  client: { readonly cert?: string; readonly key?: string } = {},
  serverOptions: TlsOptions = {},
): Promise<AcceptedTls> {
  const sts = pki.leaf('sts');
  const server = createServer({
    cert: sts.certPem,
    key: sts.keyPem,
    ca: pki.rootPem,
    requestCert: true,
    rejectUnauthorized: false,
    ...serverOptions,
  });
  const seen = once(server, 'secureConnection') as Promise<[TLSSocket]>;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const socket = connect({
    port: (server.address() as AddressInfo).port,
    host: '127.0.0.1',
    ...client,
    // The client's view of the server is not what these tests are about.
    rejectUnauthorized: false,
  });
  const close = () => {
    socket.destroy();
    server.close();
  };
  try {
    const [accepted] = await seen;
    return { socket: accepted, close };
  } catch (err) {
    close();
    throw err;
  }
}
