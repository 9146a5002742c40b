import { closeSync, openSync, readFileSync, unlinkSync, writeSync, fsyncSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { StoreError } from '../errors.ts';

/** What a lock file says about its holder. */
export interface LockHolder {
  readonly pid: number;
  readonly host: string;
  /** The holder's process start time as the kernel counts it (`/proc/<pid>/stat` field 22), or null off Linux. */
  readonly start: string | null;
  readonly since: string;
}

/** Name of the lock file in a file store's directory. */
export const LOCK_FILE = 'LOCK';

function processStart(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (comm) may hold spaces and parentheses: count from the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function alive(holder: LockHolder): boolean {
  try {
    process.kill(holder.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  // A recycled pid is another process: its start time differs from the one recorded.
  const start = processStart(holder.pid);
  return holder.start === null || start === null || start === holder.start;
}

/**
 * Takes the single-writer lock of a store directory: creates `DIR/LOCK` exclusively (O_EXCL)
 * holding `{pid, host, start, since}`. A lock left by a process that died (SIGKILL, power
 * cut) on this host is taken over; one held by a live process, or by another host (whose
 * liveness cannot be checked), is refused with `ERR_AUDIT_STORE_LOCKED` naming the holder.
 * Returns the release function.
 */
export function lockStoreDir(dir: string, now: () => Date = () => new Date()): () => void {
  const file = join(dir, LOCK_FILE);
  const me: LockHolder = {
    pid: process.pid,
    host: hostname(),
    start: processStart(process.pid),
    since: now().toISOString(),
  };
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number;
    try {
      fd = openSync(file, 'wx', 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
        throw new StoreError(
          'ERR_AUDIT_STORE_UNAVAILABLE',
          `${file}: cannot create the lock file (${(err as NodeJS.ErrnoException).code})`,
          { cause: err },
        );
      let holder: LockHolder | undefined;
      try {
        holder = JSON.parse(readFileSync(file, 'utf8')) as LockHolder;
      } catch {
        holder = undefined; // torn or empty: its writer died between create and write
      }
      const stale =
        holder === undefined ||
        typeof holder.pid !== 'number' ||
        (holder.host === me.host && holder.pid !== process.pid && !alive(holder));
      if (!stale)
        throw new StoreError(
          'ERR_AUDIT_STORE_LOCKED',
          `${dir}: the store is held by pid ${holder!.pid} on ${holder!.host} since ${holder!.since}; ` +
            'one collector per file store (remove LOCK only if that process is gone)',
        );
      try {
        unlinkSync(file);
      } catch {
        // another starter removed it first; retry the exclusive create
      }
      continue;
    }
    try {
      writeSync(fd, `${JSON.stringify(me)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      try {
        unlinkSync(file);
      } catch {
        // already gone
      }
    };
  }
  throw new StoreError('ERR_AUDIT_STORE_LOCKED', `${dir}: could not take the lock (contended)`);
}
