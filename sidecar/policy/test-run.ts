import { ConfigError } from '../../core/index.ts';
import { DEFAULT_DENY_RULE } from './compile.ts';
import { createExplainer } from './explain.ts';
import type { Policy } from './parse.ts';
import type { PolicyTestCase, PolicyTestFile } from './test-file.ts';

/** What a case got: the outcome and the deciding rule (absent when the target was refused). */
export interface ActualOutcome {
  readonly outcome: 'allow' | 'deny' | 'refused';
  readonly rule?: string;
  /** Why the target was refused, or which rules matched and lost. */
  readonly detail: string;
}

/** One case's result. */
export interface PolicyTestResult {
  readonly case: PolicyTestCase;
  readonly pass: boolean;
  readonly actual: ActualOutcome;
}

/** The results of one test file against its policy. */
export interface PolicyTestReport {
  readonly file: string;
  readonly policyFile: string;
  readonly results: readonly PolicyTestResult[];
  readonly passed: number;
  readonly failed: number;
}

/**
 * Runs every case of a test file through the sidecar's own request-target check and compiled
 * policy (see {@link createExplainer}). A case naming a rule the policy does not have is a
 * {@link ConfigError} (`cases[i].rule`), not a failure: it would fail forever for a typo.
 */
export function runPolicyTests(tests: PolicyTestFile, policy: Policy): PolicyTestReport {
  const ids = new Set([...policy.rules.map((r) => r.id), DEFAULT_DENY_RULE]);
  for (const c of tests.cases)
    if (c.rule !== undefined && !ids.has(c.rule))
      throw new ConfigError(
        'ERR_CONFIG_INVALID',
        tests.file,
        `${c.key}.rule`,
        `no rule "${c.rule}" in ${tests.policyFile} (rules: ${[...ids].join(', ')})`,
      );
  const explainer = createExplainer(policy);
  const results = tests.cases.map((c): PolicyTestResult => {
    const e = explainer.explain(c.subject, c.method, c.path);
    const actual: ActualOutcome =
      e.outcome === 'refused'
        ? { outcome: 'refused', detail: e.reason }
        : {
            outcome: e.decision.allow ? 'allow' : 'deny',
            rule: e.decision.rule,
            detail: e.losers.length
              ? `also matched: ${e.losers.map((l) => `${l.id} (${l.effect}, lost to ${l.lostTo})`).join(', ')}`
              : '',
          };
    const pass = actual.outcome === c.expect && (c.expect === 'refused' || actual.rule === c.rule);
    return { case: c, pass, actual };
  });
  const failed = results.filter((r) => !r.pass).length;
  return { file: tests.file, policyFile: tests.policyFile, results, passed: results.length - failed, failed };
}

const describeOutcome = (o: { outcome: string; rule?: string }) =>
  o.outcome === 'refused' ? 'refused by the request-target checks' : `${o.outcome} by rule ${o.rule}`;

/**
 * The report as text: one line per file, and for each failed case a diff block (`-` expected,
 * `+` actual) naming the case, its key, the caller and the request.
 */
export function formatPolicyTestReport(report: PolicyTestReport): string {
  const lines: string[] = [];
  for (const r of report.results) {
    if (r.pass) continue;
    const c = r.case;
    lines.push(`FAIL ${report.file}: ${c.key} "${c.name}"`);
    lines.push(`     caller ${c.caller === c.subject ? c.subject : `${c.caller} (${c.subject})`}`);
    lines.push(`     request ${c.method} ${c.path}`);
    lines.push(`   - expected: ${describeOutcome({ outcome: c.expect, rule: c.rule })}`);
    lines.push(`   + actual:   ${describeOutcome(r.actual)}`);
    if (r.actual.detail) lines.push(`     (${r.actual.detail})`);
  }
  lines.push(
    `${report.failed ? 'FAIL' : 'ok  '} ${report.file} (policy ${report.policyFile}): ${report.passed} passed, ${report.failed} failed`,
  );
  return lines.join('\n');
}
