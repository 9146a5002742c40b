import { parseArgs } from 'node:util';
import type { ParseArgsConfig } from 'node:util';
import { isPortcullisError } from '../../core/index.ts';

/** A usage mistake on the command line: printed as one line, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/**
 * `err instanceof UsageError`, also for one thrown by another copy of this module: the build
 * (`npm run build`) bundles each command group with a copy of its own.
 */
export function isUsageError(err: unknown): err is UsageError {
  return err instanceof UsageError || (err instanceof Error && err.name === 'UsageError');
}

/** One `portcullis <group> [sub]` command. `run` returns the process exit code. */
export interface CliCommand {
  /** Words after `portcullis`, e.g. `certs issue`. */
  readonly name: string;
  readonly summary: string;
  /** Full `--help` text. */
  readonly usage: string;
  run(argv: readonly string[]): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * Parses flags with node:util parseArgs in strict mode: unknown flags, missing values and
 * stray positionals become a {@link UsageError} naming the flag.
 */
export function parseFlags<O extends Options>(argv: readonly string[], options: O, command: string) {
  try {
    return parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    const msg = (err as Error).message.split('\n')[0]!.replace(/\. To specify a positional argument.*$/, '');
    throw new UsageError(`${command}: ${msg} (see: portcullis ${command} --help)`);
  }
}

/** Returns the flag's value or throws a {@link UsageError} saying it is required. */
export function required<T>(value: T | undefined, flag: string, command: string): T {
  if (value === undefined || value === '')
    throw new UsageError(`${command}: --${flag} is required (see: portcullis ${command} --help)`);
  return value;
}

/** What to do when a server cannot listen, by Node's error code (syscall `listen`). */
const LISTEN_HINTS: Record<string, string> = {
  EADDRINUSE:
    'another process is listening there, perhaps a running `portcullis up`: stop it, or pick another port with listen.port in the config or --port-offset for up',
  EADDRNOTAVAIL: 'no interface of this machine has that address: check listen.host in the config',
  EACCES: 'ports below 1024 need privileges: pick a port of 1024 or more',
};

/**
 * Turns an error into the one line a user sees: domain errors print their message (which
 * names the file, key and problem); anything else prints its message without a stack trace
 * unless PORTCULLIS_DEBUG is set; a server that cannot listen also says what to do about it.
 */
export function describeError(err: unknown): string {
  if (isUsageError(err)) return err.message;
  if (isPortcullisError(err)) return `${err.message} [${err.code}]`;
  if (err instanceof Error) {
    if (process.env.PORTCULLIS_DEBUG) return err.stack ?? err.message;
    const line = err.message.split('\n')[0]!;
    const { code, syscall } = err as NodeJS.ErrnoException;
    const hint = syscall === 'listen' ? LISTEN_HINTS[code ?? ''] : undefined;
    return hint ? `${line} (${hint})` : line;
  }
  return String(err);
}

/** Like {@link parseFlags}, but also returns positional arguments (file and directory paths). */
export function parseFlagsAndPaths<O extends Options>(argv: readonly string[], options: O, command: string) {
  try {
    const { values, positionals } = parseArgs({
      args: [...argv],
      options,
      strict: true,
      allowPositionals: true,
    });
    return { flags: values, paths: positionals };
  } catch (err) {
    const msg = (err as Error).message.split('\n')[0]!;
    throw new UsageError(`${command}: ${msg} (see: portcullis ${command} --help)`);
  }
}
