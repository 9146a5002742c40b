// Per-request access log lines (docs/operations.md, Access logs): opt-in, pino JSON on the part's
// own log, sampled for busy services. The audit log is the record of decisions; these lines are
// for the operator who tails a part's log and has no audit-reader certificate.
import { z } from 'zod';
import { strictObject } from './config.ts';
import type { Logger } from './logger.ts';

/** The `accessLog:` section of the STS and sidecar configs. */
export const accessLogSchema = strictObject({
  /** Off by default: a busy sidecar writes a line per request. */
  enabled: z.boolean().default(false),
  /**
   * Fraction of *successful* requests logged (0–1); refusals and 5xx are always logged, so a
   * sampled log still shows every denial.
   */
  sample: z.number().min(0).max(1).default(1),
}).default({ enabled: false, sample: 1 });

/** Parsed `accessLog:` settings. */
export type AccessLogConfig = z.output<typeof accessLogSchema>;

/**
 * One access log line. Only identifiers and outcomes: never a token, a key or a header value;
 * `target` is the request target as the request-target checks saw it (no query secrets are
 * expected there, but it is cut at 512 characters).
 */
export interface AccessLine {
  /** Which listener: `inbound`, `outbound`, `token`. */
  readonly side: string;
  readonly method: string;
  readonly target: string;
  readonly status: number;
  /** `allow` or `deny` where a policy or the STS decided. */
  readonly decision?: 'allow' | 'deny';
  /** The refusal's error code, or `allowed`. */
  readonly reason?: string;
  readonly rule?: string;
  /** The caller's verified SPIFFE ID (inbound, STS) or the route's audience (outbound). */
  readonly caller?: string;
  readonly peer?: string;
  readonly latencyMs: number;
  readonly traceId?: string;
}

/**
 * A writer of access lines at level `info` (message `access`), or `undefined` when disabled, so a
 * hot path pays one `if`. `random` decides sampling (tests pass a fixed one).
 */
export function createAccessLog(
  logger: Logger,
  config: AccessLogConfig,
  random: () => number = Math.random,
): ((line: AccessLine) => void) | undefined {
  if (!config.enabled) return undefined;
  const { sample } = config;
  return (line) => {
    const always =
      line.status >= 500 || line.decision === 'deny' || (line.status >= 400 && line.status !== 404);
    if (!always && sample < 1 && random() >= sample) return;
    logger.info(
      {
        access: {
          ...line,
          target: line.target.length > 512 ? `${line.target.slice(0, 511)}…` : line.target,
          latencyMs: Math.round(line.latencyMs * 1000) / 1000,
        },
      },
      'access',
    );
  };
}
