import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from './errors.ts';
import { parseRegistry } from './registry.ts';
import type { Registry } from './registry.ts';

/**
 * Loads every `*.yaml` / `*.yml` file of a registry directory (or one file) into a
 * {@link Registry}. A missing path or a directory without YAML files is `ERR_CONFIG_NOT_FOUND`.
 */
export function loadRegistry(path: string): Registry {
  let files: string[];
  try {
    files = statSync(path).isDirectory()
      ? readdirSync(path)
          .filter((f) => /\.ya?ml$/.test(f))
          .sort()
          .map((f) => join(path, f))
      : [path];
  } catch (err) {
    throw new ConfigError('ERR_CONFIG_NOT_FOUND', path, '', 'no such file or directory', { cause: err });
  }
  if (files.length === 0) {
    throw new ConfigError('ERR_CONFIG_NOT_FOUND', path, '', 'holds no identity registry (*.yaml) files');
  }
  return parseRegistry(
    files.map((file) => {
      try {
        return { file, text: readFileSync(file, 'utf8') };
      } catch (err) {
        throw new ConfigError(
          'ERR_CONFIG_NOT_FOUND',
          file,
          '',
          `cannot be read (${(err as NodeJS.ErrnoException).code})`,
          {
            cause: err,
          },
        );
      }
    }),
  );
}
