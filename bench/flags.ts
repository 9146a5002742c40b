// Command-line flags of the bench scripts: an unknown flag, a missing or ambiguous value (one that
// starts with a dash) or a value that is not a duration is one line on stderr and exit 2, not a
// stack trace.
import { parseArgs } from 'node:util';
import type { ParseArgsConfig } from 'node:util';
import { parseDuration } from '../core/index.ts';

/** `parseArgs(config)`, whose refusal ends the script with its message and exit 2. */
export function benchFlags<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (err) {
    return refuse((err as Error).message);
  }
}

/** The milliseconds of `--name`'s value (`30s`, `2m`…); a value that is not a duration ends the script, exit 2. */
export function durationFlag(name: string, value: unknown): number {
  try {
    return parseDuration(String(value));
  } catch (err) {
    return refuse(`--${name}: ${(err as Error).message}`);
  }
}

function refuse(message: string): never {
  console.error(message);
  process.exit(2);
}
