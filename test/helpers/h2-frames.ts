// Hand-built HTTP/2 frames (RFC 9113 §4, §6) and HPACK literals (RFC 7541 §6.2.2), for tests that
// must send what no well-behaved client library will: rapid resets, endless CONTINUATION, header
// bombs, floods. Only the shapes the tests need; no Huffman, no dynamic table.
import { connect } from 'node:tls';
import type { TLSSocket } from 'node:tls';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

export const FRAME = {
  DATA: 0,
  HEADERS: 1,
  RST_STREAM: 3,
  SETTINGS: 4,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
};
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 };

export function frame(
  type: number,
  flags: number,
  streamId: number,
  payload: Buffer = Buffer.alloc(0),
): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1); `first` holds the bits above the prefix. */
function hpackInt(value: number, n: number, first = 0): Buffer {
  const max = (1 << n) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  value -= max;
  while (value >= 128) {
    out.push((value % 128) + 128);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return Buffer.from(out);
}

/** A header block of literal fields without indexing, new names (no Huffman): nothing enters any table. */
export function headerBlock(fields: readonly (readonly [string, string])[]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    parts.push(
      Buffer.from([0x00]),
      hpackInt(name.length, 7),
      Buffer.from(name),
      hpackInt(value.length, 7),
      Buffer.from(value),
    );
  }
  return Buffer.concat(parts);
}

export function settings(values: Record<number, number> = {}): Buffer {
  const entries = Object.entries(values);
  const payload = Buffer.alloc(6 * entries.length);
  entries.forEach(([id, v], i) => {
    payload.writeUInt16BE(Number(id), i * 6);
    payload.writeUInt32BE(v, i * 6 + 2);
  });
  return frame(FRAME.SETTINGS, 0, 0, payload);
}

export function rstStream(streamId: number, code = 8 /* CANCEL */): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return frame(FRAME.RST_STREAM, 0, streamId, p);
}

export function ping(n: number): Buffer {
  const p = Buffer.alloc(8);
  p.writeUInt32BE(n >>> 0, 4);
  return frame(FRAME.PING, 0, 0, p);
}

/** A raw HTTP/2 connection over mTLS (ALPN h2) that records what the server sends back. */
export interface RawH2 {
  readonly socket: TLSSocket;
  /** Frame types received, in order (GOAWAY is 7). */
  readonly received: number[];
  /** Resolves when the server closes the connection (or it errors). */
  readonly closed: Promise<void>;
  /** Writes, resolving when the bytes are handed to the kernel or the connection is gone. */
  send(bytes: Buffer): Promise<void>;
}

export function openRawH2(port: number, cert: string, key: string): Promise<RawH2> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: '127.0.0.1',
      port,
      cert,
      key,
      ALPNProtocols: ['h2'],
      rejectUnauthorized: false,
    });
    const received: number[] = [];
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        received.push(buf[3]!);
        buf = buf.subarray(9 + len);
      }
    });
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('error', () => {});
    socket.once('secureConnect', () => {
      if (socket.alpnProtocol !== 'h2') return reject(new Error(`ALPN ${socket.alpnProtocol}`));
      const send = (bytes: Buffer) =>
        new Promise<void>((r) => {
          if (socket.destroyed || !socket.writable) return r();
          socket.write(bytes, () => r());
        });
      void send(Buffer.concat([PREFACE, settings()]));
      resolve({ socket, received, closed, send });
    });
    socket.once('error', reject);
  });
}
