import { dirname, join, basename } from 'node:path';
import { z } from 'zod';
import { ConfigError, parseConfigText, readConfiguredFile, strictObject } from '../../core/index.ts';
import type { Registry } from '../../core/index.ts';
import { resolveCaller } from './caller.ts';

/** What a test case expects: the policy's decision (and the rule that makes it), or a refused target. */
export type ExpectedOutcome = 'allow' | 'deny' | 'refused';

/** One case of a policy test file, with its caller resolved to a SPIFFE ID. */
export interface PolicyTestCase {
  /** `cases[i]`, for messages. */
  readonly key: string;
  readonly name: string;
  /** The caller as written (a workload name or SPIFFE ID). */
  readonly caller: string;
  readonly subject: string;
  readonly method: string;
  /** The request target as the sidecar would receive it (path and optional query). */
  readonly path: string;
  readonly expect: ExpectedOutcome;
  /** The rule expected to decide (required for allow and deny). */
  readonly rule?: string;
}

/** A parsed `<policy>.test.yaml`. */
export interface PolicyTestFile {
  readonly file: string;
  /** The policy file the cases run against (resolved beside the test file). */
  readonly policyFile: string;
  readonly cases: readonly PolicyTestCase[];
}

const caseSchema = strictObject({
  name: z.string().min(1).max(200),
  caller: z.string().min(1).max(2048),
  method: z.string().regex(/^[A-Z]{1,16}$/, 'must be an upper-case HTTP method'),
  path: z.string().min(1).max(4096),
  expect: z.enum(['allow', 'deny', 'refused']),
  rule: z.string().min(1).max(256).optional(),
});

const fileSchema = strictObject({
  policy: z.string().min(1).optional(),
  cases: z.array(caseSchema).min(1),
});

/** `orders.test.yaml` → `orders.yaml`, in the same directory. */
export function defaultPolicyFileFor(testFile: string): string {
  return join(dirname(testFile), basename(testFile).replace(/\.test\.ya?ml$/, '.yaml'));
}

/**
 * Reads and parses a policy test file. Every failure is one {@link ConfigError} line naming the
 * file and key: unknown keys, a caller that is neither a registry workload name nor a registered
 * SPIFFE ID, `rule` missing on an allow/deny case or present on a `refused` one, duplicate names.
 */
export function loadPolicyTestFile(file: string, registry: Registry): PolicyTestFile {
  const parsed = parseConfigText(readConfiguredFile(file, 'policy test file'), file, fileSchema);
  const invalid = (key: string, problem: string) => new ConfigError('ERR_CONFIG_INVALID', file, key, problem);
  const names = new Set<string>();
  const cases = parsed.cases.map((c, i): PolicyTestCase => {
    const key = `cases[${i}]`;
    if (names.has(c.name)) throw invalid(`${key}.name`, `duplicate case name "${c.name}"`);
    names.add(c.name);
    const subject = resolveCaller(registry, c.caller);
    if (subject === undefined)
      throw invalid(
        `${key}.caller`,
        `"${c.caller}" is neither a workload name nor a SPIFFE ID in the registry`,
      );
    if (c.expect === 'refused' && c.rule !== undefined)
      throw invalid(`${key}.rule`, 'a refused request reaches no rule; drop "rule"');
    if (c.expect !== 'refused' && c.rule === undefined)
      throw invalid(key, `"expect: ${c.expect}" needs "rule" (the rule that decides, or default-deny)`);
    return Object.freeze({ key, ...c, subject });
  });
  const policyFile =
    parsed.policy !== undefined ? join(dirname(file), parsed.policy) : defaultPolicyFileFor(file);
  return Object.freeze({ file, policyFile, cases: Object.freeze(cases) });
}
