import { DurationError } from './errors.ts';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION = /^(?:\d+(?:ms|s|m|h|d))+$/;
const PART = /(\d+)(ms|s|m|h|d)/g;

/**
 * Parses a Go-style duration (`90s`, `5m`, `1h30m`, `24h`, `7d`, `250ms`) into milliseconds.
 * Zero and negative durations are refused: every duration in Portcullis is a positive span.
 */
export function parseDuration(input: string): number {
  if (typeof input !== 'string') throw new TypeError('"input" must be a string');
  if (!DURATION.test(input)) {
    throw new DurationError(`"${input}" is not a duration (use forms like 30s, 5m, 1h30m, 24h, 7d)`);
  }
  let total = 0;
  for (const [, n, unit] of input.matchAll(PART)) total += Number(n) * UNIT_MS[unit!]!;
  if (!Number.isSafeInteger(total) || total <= 0) {
    throw new DurationError(`"${input}" must be a positive duration`);
  }
  return total;
}

/** Formats milliseconds back into the shortest duration string that parses to the same value. */
export function formatDuration(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms <= 0) throw new TypeError('"ms" must be a positive integer');
  let rest = ms;
  let out = '';
  for (const unit of ['d', 'h', 'm', 's', 'ms'] as const) {
    const size = UNIT_MS[unit]!;
    if (rest >= size) {
      out += `${Math.floor(rest / size)}${unit}`;
      rest %= size;
    }
  }
  return out;
}
