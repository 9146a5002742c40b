import { readFileSync } from 'node:fs';
import { ConfigError } from '../../core/index.ts';
import { parsePolicy } from './parse.ts';
import type { Policy } from './parse.ts';

/** Reads and parses a policy file; a missing file is `ERR_CONFIG_NOT_FOUND`, bad content `ERR_CONFIG_INVALID`. */
export function loadPolicyFile(file: string, expectedService?: string): Policy {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
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
  return parsePolicy(text, file, expectedService);
}
