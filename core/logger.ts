import { pino } from 'pino';
import type { DestinationStream, Logger, LevelWithSilent } from 'pino';

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

/** A pino JSON logger with secrets redacted (see {@link REDACTED_PATHS}). */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      name: options.name,
      level: options.level ?? (process.env.PORTCULLIS_LOG_LEVEL as LevelWithSilent | undefined) ?? 'info',
      redact: { paths: [...REDACTED_PATHS], censor: '[redacted]' },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    options.destination ?? pino.destination(1),
  );
}
