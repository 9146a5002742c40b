import type { TlsMaterial } from '../../ca/index.ts';
import { connect as tlsConnect } from 'node:tls';
import type { ConnectionOptions, TLSSocket } from 'node:tls';
import type { Socket } from 'node:net';
import type { buildConnector } from 'undici';
import type { PeerVerifier } from '../../ca/index.ts';
import { SidecarError } from '../errors.ts';

/**
 * An undici `connect` function that opens TLS 1.3 with the sidecar's own certificate and, before
 * any request byte is written, checks the server with ca/'s peer verifier (chain, one SPIFFE ID in
 * the trust domain, expiry, revocation) and that its SPIFFE ID is `expectedId`. A mismatch is
 * `ERR_SIDECAR_PEER_IDENTITY_MISMATCH`. `material` is read at every new connection, so a reloaded
 * certificate is used from the next connection on.
 */
export function createMtlsConnector(opts: {
  readonly material: () => TlsMaterial;
  readonly verifier: () => PeerVerifier;
  readonly expectedId: string;
  readonly timeoutMs: number;
  /** What a handshake that outlasts `timeoutMs` is: the STS unreachable, or a slow peer sidecar. */
  readonly timeoutCode: 'ERR_SIDECAR_STS_UNAVAILABLE' | 'ERR_SIDECAR_UPSTREAM_TIMEOUT';
  /** ALPN protocols offered (`['http/1.1']` by default; `['h2']` for the multiplexed peer connection). */
  readonly alpn?: readonly string[];
}): buildConnector.connector {
  return (options, callback) => {
    const m = opts.material();
    const tlsOptions: ConnectionOptions = {
      host: options.hostname,
      port: Number(options.port) || 443,
      cert: m.cert,
      key: m.key,
      ca: m.ca,
      minVersion: 'TLSv1.3',
      // The certificate and the SPIFFE ID are checked below by ca/'s verifier (serverAuth
      // purpose), not by hostname; the handshake's own chain check is one of its inputs.
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
      ALPNProtocols: [...(opts.alpn ?? ['http/1.1'])],
    };
    let done = false;
    const finish = (err: Error | null, socket?: TLSSocket) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        socket?.destroy();
        (callback as (e: Error | null, s: Socket | null) => void)(err, null);
      } else (callback as (e: Error | null, s: Socket | null) => void)(null, socket!);
    };
    const socket = tlsConnect(tlsOptions);
    const timer = setTimeout(
      () => finish(new SidecarError(opts.timeoutCode, 'TLS connect timed out'), socket),
      opts.timeoutMs,
    );
    socket.setNoDelay(true);
    socket.once('secureConnect', () => {
      try {
        const peer = opts.verifier().verifySocket(socket);
        if (peer.spiffeId.uri !== opts.expectedId) {
          throw new SidecarError(
            'ERR_SIDECAR_PEER_IDENTITY_MISMATCH',
            `server is ${peer.spiffeId.uri}, expected ${opts.expectedId}`,
          );
        }
        finish(null, socket);
      } catch (err) {
        finish(
          err instanceof SidecarError
            ? err
            : new SidecarError(
                'ERR_SIDECAR_PEER_IDENTITY_MISMATCH',
                `server certificate refused [${(err as { code?: string }).code ?? 'unknown'}]: ${(err as Error).message}`,
                { cause: err },
              ),
          socket,
        );
      }
    });
    socket.once('error', (err) => finish(err, socket));
  };
}
