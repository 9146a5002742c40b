import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../../core/index.ts';

const TEST_FILE = /\.test\.ya?ml$/;
const YAML = /\.ya?ml$/;

/**
 * Expands paths into policy files (`kind: 'policy'`: `*.yaml` that are not tests) or policy test
 * files (`kind: 'test'`: `*.test.yaml`). A directory contributes its matching files (sorted, not
 * recursive); a file is taken as named. A missing path, or a directory holding none, is a
 * {@link ConfigError} naming it.
 */
export function findPolicyFiles(paths: readonly string[], kind: 'policy' | 'test'): string[] {
  const out: string[] = [];
  for (const p of paths) {
    let dir: boolean;
    try {
      dir = statSync(p).isDirectory();
    } catch (err) {
      throw new ConfigError('ERR_CONFIG_NOT_FOUND', p, '', 'no such file or directory', { cause: err });
    }
    if (!dir) {
      if (kind === 'test' && !TEST_FILE.test(p))
        throw new ConfigError(
          'ERR_CONFIG_INVALID',
          p,
          '',
          'is not a policy test file (name it <policy>.test.yaml)',
        );
      if (kind === 'policy' && TEST_FILE.test(p))
        throw new ConfigError(
          'ERR_CONFIG_INVALID',
          p,
          '',
          'is a policy test file, not a policy (run it with policy test)',
        );
      out.push(p);
      continue;
    }
    const found = readdirSync(p)
      .filter((f) => (kind === 'test' ? TEST_FILE.test(f) : YAML.test(f) && !TEST_FILE.test(f)))
      .sort()
      .map((f) => join(p, f));
    if (found.length === 0)
      throw new ConfigError(
        'ERR_CONFIG_NOT_FOUND',
        p,
        '',
        kind === 'test' ? 'holds no policy test files (*.test.yaml)' : 'holds no policy files (*.yaml)',
      );
    out.push(...found);
  }
  return out;
}
