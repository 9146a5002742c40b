import { randomBytes } from 'node:crypto';

const OPCODE_CLOSE = 0x8;

/**
 * Follows the WebSocket frames (RFC 6455 §5.2) of one direction of a relayed connection without
 * copying or unmasking payloads: only frame headers are read, so the cost is per frame, not per
 * byte. It tells whether the bytes relayed so far end on a frame boundary (where the sidecar may
 * add a close frame of its own without corrupting the stream) and whether a close frame went by,
 * with its status code. A header that cannot be followed (a length past 2^53) stops the tracking:
 * the stream is then never written into.
 */
export class FrameCursor {
  /** Header bytes of the frame being read (at most 14). */
  private readonly header = Buffer.alloc(14);
  private headerLength = 0;
  /** Payload bytes of the current frame still to come; -1 while in a header. */
  private remaining = -1;
  private opcode = 0;
  private mask: Buffer | undefined;
  /** Offset into the current payload, for the close code's two bytes. */
  private offset = 0;
  private codeBytes: number[] | undefined;
  /** True once a header could not be followed. */
  lost = false;
  /** True once a close frame began in this direction. */
  sawClose = false;
  /** The status code of that close frame, when it carried one. */
  closeCode: number | undefined;

  /** Whether everything relayed so far ends exactly between two frames. */
  get atBoundary(): boolean {
    return !this.lost && this.remaining <= 0 && this.headerLength === 0;
  }

  /** Follows `chunk`, the next bytes relayed in this direction. */
  feed(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length && !this.lost) {
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, chunk.length - i);
        if (this.codeBytes && this.offset < 2) this.readCode(chunk, i, take);
        this.remaining -= take;
        this.offset += take;
        i += take;
        if (this.remaining === 0) this.endFrame();
        continue;
      }
      this.header[this.headerLength++] = chunk[i++]!;
      const need = this.headerSize();
      if (need === undefined || this.headerLength < need) continue;
      this.startFrame();
    }
  }

  /** Bytes the header in progress needs, once its first two are in; undefined before. */
  private headerSize(): number | undefined {
    if (this.headerLength < 2) return undefined;
    const b1 = this.header[1]!;
    const len7 = b1 & 0x7f;
    return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (b1 & 0x80 ? 4 : 0);
  }

  private startFrame(): void {
    const h = this.header;
    const len7 = h[1]! & 0x7f;
    let length: number;
    let at = 2;
    if (len7 === 126) {
      length = h.readUInt16BE(2);
      at = 4;
    } else if (len7 === 127) {
      const big = h.readBigUInt64BE(2);
      if (big > BigInt(Number.MAX_SAFE_INTEGER)) {
        this.lost = true;
        return;
      }
      length = Number(big);
      at = 10;
    } else length = len7;
    this.opcode = h[0]! & 0x0f;
    // The mask is only needed to read a close frame's code: no copy for the other frames.
    this.mask =
      this.opcode === OPCODE_CLOSE && h[1]! & 0x80 ? Buffer.from(h.subarray(at, at + 4)) : undefined;
    this.headerLength = 0;
    this.offset = 0;
    this.remaining = length;
    this.codeBytes = undefined;
    if (this.opcode === OPCODE_CLOSE && !this.sawClose) {
      this.sawClose = true;
      if (length >= 2) this.codeBytes = [];
    }
    if (length === 0) this.endFrame();
  }

  private readCode(chunk: Buffer, from: number, take: number): void {
    for (let k = 0; k < take && this.offset + k < 2; k++) {
      const byte = chunk[from + k]! ^ (this.mask ? this.mask[(this.offset + k) % 4]! : 0);
      this.codeBytes!.push(byte);
    }
    if (this.codeBytes!.length === 2) {
      this.closeCode = (this.codeBytes![0]! << 8) | this.codeBytes![1]!;
      this.codeBytes = undefined;
    }
  }

  private endFrame(): void {
    this.remaining = -1;
    this.codeBytes = undefined;
  }
}

/**
 * A close frame (RFC 6455 §5.5.1) with `code` and a short UTF-8 reason. `masked` for frames the
 * sidecar sends as the client (towards the upstream server); servers send them unmasked.
 */
export function closeFrame(code: number, reason: string, masked: boolean): Buffer {
  const text = Buffer.from(reason.slice(0, 100), 'utf8');
  const payload = Buffer.alloc(2 + text.length);
  payload.writeUInt16BE(code, 0);
  text.copy(payload, 2);
  if (!masked) return Buffer.concat([Buffer.from([0x88, payload.length]), payload]);
  const key = randomBytes(4);
  for (let i = 0; i < payload.length; i++) payload[i] = payload[i]! ^ key[i % 4]!;
  return Buffer.concat([Buffer.from([0x88, 0x80 | payload.length]), key, payload]);
}
