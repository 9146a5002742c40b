import type { FileHandle } from 'node:fs/promises';

/**
 * Writes every byte of `buffers` at the handle's position, or throws. A write that the OS cuts
 * short (the disk filled mid-way, a file-size limit) reports no error, only fewer bytes: the rest
 * is written again until it is all there, and a write that makes no progress is an error. Until
 * this resolves, nothing written here may be reported as kept.
 */
export async function writeFully(fh: FileHandle, buffers: readonly Buffer[]): Promise<void> {
  let pending = buffers.filter((b) => b.length > 0);
  while (pending.length) {
    const { bytesWritten } =
      pending.length === 1 ? await fh.write(pending[0]!) : await fh.writev(pending as Buffer[]);
    if (bytesWritten === 0)
      throw Object.assign(new Error('the segment file takes no more bytes'), { code: 'ENOSPC' });
    let left = bytesWritten;
    while (pending.length && left >= pending[0]!.length) {
      left -= pending[0]!.length;
      pending = pending.slice(1);
    }
    if (left > 0) pending = [pending[0]!.subarray(left), ...pending.slice(1)];
  }
}
