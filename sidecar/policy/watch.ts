import { statSync } from 'node:fs';
import type { Logger } from '../../core/index.ts';
import { compilePolicy } from './compile.ts';
import type { Authorizer } from './compile.ts';
import { loadPolicyFile } from './load.ts';

/** Holds the policy in force and swaps it when the file changes. */
export interface PolicyWatcher {
  /** The authorizer in force: the last policy that parsed. */
  current(): Authorizer;
  /** Re-reads the file now. Returns true if a new policy took effect; an invalid file keeps the old one. */
  reload(): boolean;
  /** Counters for metrics: successful reloads and refused (invalid) files. */
  readonly stats: { reloads: number; failures: number; lastError: string | undefined };
  close(): void;
}

/** Dependencies of {@link watchPolicy}; `intervalMs` is how often the file's mtime and size are polled. */
export interface PolicyWatchDeps {
  readonly file: string;
  readonly service: string;
  readonly intervalMs: number;
  readonly logger: Logger;
}

/**
 * Loads the policy (throwing on a bad file at start) and polls its mtime/size. A changed file
 * that fails to parse leaves the previous policy in force, logs why and counts a failure.
 * Polling rather than fs.watch: it sees atomic renames and works on every filesystem.
 */
export function watchPolicy(deps: PolicyWatchDeps): PolicyWatcher {
  let authorizer = compilePolicy(loadPolicyFile(deps.file, deps.service));
  let stamp = fingerprint(deps.file);
  const stats = { reloads: 0, failures: 0, lastError: undefined as string | undefined };
  const reload = (): boolean => {
    try {
      const next = compilePolicy(loadPolicyFile(deps.file, deps.service));
      if (next.policy.hash === authorizer.policy.hash) return false;
      authorizer = next;
      stats.reloads++;
      stats.lastError = undefined;
      deps.logger.info({ file: deps.file, policyHash: next.policy.hash }, 'policy reloaded');
      return true;
    } catch (err) {
      stats.failures++;
      stats.lastError = (err as Error).message;
      deps.logger.error(
        { file: deps.file, err: (err as Error).message, policyHash: authorizer.policy.hash },
        'policy file invalid; previous policy stays in force',
      );
      return false;
    }
  };
  const timer = setInterval(() => {
    const now = fingerprint(deps.file);
    if (now === stamp) return;
    stamp = now;
    reload();
  }, deps.intervalMs);
  timer.unref();
  return {
    current: () => authorizer,
    reload,
    stats,
    close: () => clearInterval(timer),
  };
}

function fingerprint(file: string): string {
  try {
    const s = statSync(file, { bigint: true });
    return `${s.mtimeNs}:${s.size}:${s.ino}`;
  } catch {
    return 'missing';
  }
}
