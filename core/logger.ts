import { pino } from 'pino';
import type { DestinationStream, Logger, LevelWithSilent } from 'pino';
import { ConfigError } from './errors.ts';

export type { Logger } from 'pino';

/**
 * Paths pino censors in every log line: credentials, tokens, keys and passphrases, at the top
 * level and one level down (pino redaction does not recurse).
 */
export const REDACTED_PATHS: readonly string[] = [
  'authorization',
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'headers.cookie',
  'access_token',
  'subject_token',
  'token',
  'privateKey',
  'masterKey',
  'passphrase',
  'password',
  'secret',
  '*.authorization',
  '*.access_token',
  '*.subject_token',
  '*.token',
  '*.privateKey',
  '*.masterKey',
  '*.passphrase',
  '*.password',
  '*.secret',
  '*.d',
];

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  readonly name: string;
  readonly level?: LevelWithSilent;
  /** Defaults to stdout. Tests pass a stream to read the lines back. */
  readonly destination?: DestinationStream;
}

/** The levels `PORTCULLIS_LOG_LEVEL` (and `--log-level`) take, most to least verbose. */
export const LOG_LEVELS: readonly LevelWithSilent[] = [
  'trace',
  'debug',
  'info',
  'warn',
  'error',
  'fatal',
  'silent',
];

/**
 * The level named by the `PORTCULLIS_LOG_LEVEL` environment variable, `undefined` when unset or
 * empty; any other value is a {@link ConfigError} naming the variable and the levels it takes.
 */
export function logLevelFromEnv(env: NodeJS.ProcessEnv = process.env): LevelWithSilent | undefined {
  const value = env.PORTCULLIS_LOG_LEVEL;
  if (value === undefined || value === '') return undefined;
  if ((LOG_LEVELS as readonly string[]).includes(value)) return value as LevelWithSilent;
  throw new ConfigError(
    'ERR_CONFIG_INVALID',
    'PORTCULLIS_LOG_LEVEL',
    '',
    `must be one of ${LOG_LEVELS.join(', ')}; got ${JSON.stringify(value.slice(0, 40))}`,
  );
}

/**
 * A pino JSON logger with secrets redacted (see {@link REDACTED_PATHS}), at `options.level`, else
 * `PORTCULLIS_LOG_LEVEL`, else `info`.
 */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      name: options.name,
      level: options.level ?? logLevelFromEnv() ?? 'info',
      redact: { paths: [...REDACTED_PATHS], censor: '[redacted]' },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    options.destination ?? pino.destination(1),
  );
}
