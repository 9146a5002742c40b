import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { ConfigError } from './errors.ts';
import { parseConfigText } from './config.ts';

/**
 * Reads and parses a YAML config file against `schema`. A missing or unreadable file is a
 * {@link ConfigError} with code `ERR_CONFIG_NOT_FOUND`; bad content is `ERR_CONFIG_INVALID`.
 */
export function loadConfigFile<S extends z.ZodType>(file: string, schema: S): z.output<S> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const problem =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EISDIR'
          ? 'is a directory, not a file'
          : `cannot be read (${code})`;
    throw new ConfigError('ERR_CONFIG_NOT_FOUND', file, '', problem, { cause: err });
  }
  return parseConfigText(text, file, schema);
}

/**
 * Reads a file a config names (a certificate, a key, a CRL) as UTF-8 text. A missing or
 * unreadable file is a {@link ConfigError} `ERR_CONFIG_NOT_FOUND` saying which setting named it:
 * `<file>: <setting>: cannot be read (ENOENT)`.
 */
export function readConfiguredFile(file: string, setting: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError('ERR_CONFIG_NOT_FOUND', file, '', `${setting}: cannot be read (${code})`, {
      cause: err,
    });
  }
}
