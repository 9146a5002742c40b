// Sends raw request bytes on a plain or TLS connection and returns everything the server wrote
// until it closed: for requests an HTTP client library would refuse to send.
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { ConnectionOptions } from 'node:tls';
import { normalizeSerial } from '../../ca/index.ts';

/** Options of {@link rawExchange}: `tls` connects with TLS (client certificate and all), else plain TCP. */
export interface RawTarget {
  readonly port: number;
  readonly tls?: ConnectionOptions;
}

/**
 * Writes `request` and resolves with the whole answer once the server closes the connection (a
 * reset after an answer still resolves with it). Fails after 5 s without a close.
 */
export function rawExchange(target: RawTarget, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = target.tls
      ? tlsConnect({ port: target.port, host: '127.0.0.1', rejectUnauthorized: false, ...target.tls })
      : netConnect(target.port, '127.0.0.1');
    let text = '';
    socket.setTimeout(5_000, () => socket.destroy(new Error('no answer within 5 s')));
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
    socket.on('error', (err) => (text ? resolve(text) : reject(err)));
    socket.on('close', () => resolve(text));
    socket.once(target.tls ? 'secureConnect' : 'connect', () => socket.write(request));
  });
}

/** The JSON body of a raw HTTP/1.1 answer with a content-length. */
export function rawJsonBody(answer: string): unknown {
  return JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4));
}

/**
 * The serial (canonical hex, as `normalizeSerial` gives it) of the leaf a server presents on a
 * fresh TLS connection: what a renewed certificate changes.
 */
export function servedSerial(port: number, tls: ConnectionOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect(
      { port, host: '127.0.0.1', rejectUnauthorized: false, servername: 'localhost', ...tls },
      () => {
        const serial = normalizeSerial(socket.getPeerX509Certificate()!.serialNumber);
        socket.destroy();
        resolve(serial);
      },
    );
    socket.on('error', reject);
  });
}
