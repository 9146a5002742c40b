import { ConfigError } from '../../core/index.ts';

/** A file named by the config cannot be used: `<file>: <key>: <problem>`, one line. */
export class ConfigFileError extends ConfigError {
  constructor(file: string, key: string, problem: string, cause?: unknown) {
    super('ERR_CONFIG_INVALID', file, key, problem, { cause });
  }
}
