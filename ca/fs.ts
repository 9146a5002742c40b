import {
  chmodSync,
  closeSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { dirname, basename, join } from 'node:path';

/**
 * Writes a file atomically (temp file in the same directory, fsync, rename), with `mode`
 * applied before any byte is written so that a private key is never readable by others.
 * Returns false, touching nothing, when the file already holds exactly `data`.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): boolean {
  const bytes = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data);
  try {
    if (readFileSync(path).equals(bytes)) {
      chmodSync(path, mode);
      return false;
    }
  } catch {
    // missing or unreadable: write it
  }
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, bytes);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  chmodSync(tmp, mode);
  renameSync(tmp, path);
  return true;
}
