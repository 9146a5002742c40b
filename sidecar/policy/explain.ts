import { SidecarError } from '../errors.ts';
import { checkRequestTarget } from '../inbound/target.ts';
import { compilePolicy, DEFAULT_DENY_RULE } from './compile.ts';
import type { Authorizer, Decision } from './compile.ts';
import type { Policy, PolicyRule } from './parse.ts';

/** A rule that matched a request but did not decide it, and why. */
export interface LosingRule {
  readonly id: string;
  readonly effect: 'allow' | 'deny';
  /** `deny-override`: a deny matched, so this allow lost; `earlier-rule`: an earlier rule of the same effect decided. */
  readonly lostTo: 'deny-override' | 'earlier-rule';
}

/** What the sidecar would do with one request, and why. */
export type Explanation =
  | {
      /** The request target checks refused it before the policy was consulted. */
      readonly outcome: 'refused';
      readonly code: 'ERR_SIDECAR_PATH_AMBIGUOUS';
      readonly reason: string;
    }
  | {
      readonly outcome: 'decided';
      /** The path the policy saw (the target without its query). */
      readonly path: string;
      /** The sidecar's own decision on this request (the compiled policy). */
      readonly decision: Decision;
      /** Every rule that matched, in file order; the deciding rule among them unless default deny. */
      readonly matched: readonly string[];
      readonly losers: readonly LosingRule[];
    };

/** A policy prepared for explaining: the compiled policy and one compiled policy per rule. */
export interface Explainer {
  readonly policy: Policy;
  readonly authorizer: Authorizer;
  explain(subject: string, method: string, target: string): Explanation;
  /** The rules that match the request on their own, in file order (the path as the policy sees it; no target check). */
  matching(subject: string, method: string, path: string): PolicyRule[];
}

/**
 * Prepares {@link Explainer} for a policy. Decisions come from the sidecar's compiled policy
 * (the one {@link compilePolicy} gives the authorize layer); which rules matched comes from the
 * same compiler run on a policy of that one rule, so no second matcher exists. The request
 * target goes through the sidecar's own {@link checkRequestTarget} first.
 */
export function createExplainer(policy: Policy): Explainer {
  const authorizer = compilePolicy(policy);
  const single = policy.rules.map((rule) => ({
    rule,
    authorizer: compilePolicy({ ...policy, rules: [rule] }),
  }));
  const matching = (subject: string, method: string, path: string): PolicyRule[] =>
    single
      .filter((s) => s.authorizer.decide(subject, method, path).rule !== DEFAULT_DENY_RULE)
      .map((s) => s.rule);
  return {
    policy,
    authorizer,
    matching,
    explain(subject, method, target) {
      let path: string;
      try {
        path = checkRequestTarget(method, target).path;
      } catch (err) {
        if (err instanceof SidecarError && err.code === 'ERR_SIDECAR_PATH_AMBIGUOUS')
          return { outcome: 'refused', code: err.code, reason: err.message };
        throw err;
      }
      const decision = authorizer.decide(subject, method, path);
      const matched = matching(subject, method, path);
      const denied = matched.some((r) => r.effect === 'deny');
      const losers = matched
        .filter((r) => r.id !== decision.rule)
        .map((r): LosingRule => ({
          id: r.id,
          effect: r.effect,
          lostTo: r.effect === 'allow' && denied ? 'deny-override' : 'earlier-rule',
        }));
      return { outcome: 'decided', path, decision, matched: matched.map((r) => r.id), losers };
    },
  };
}

/** An explanation as the lines `policy explain` prints. */
export function formatExplanation(e: Explanation, subject: string, method: string, file: string): string {
  if (e.outcome === 'refused') return `refused before the policy: ${e.reason} [${e.code}]`;
  const d = e.decision;
  const lines = [
    `${d.allow ? 'allow' : 'deny'} by rule ${d.rule} (${file}, mode ${d.mode}, ${d.policyHash})`,
    `  request: ${subject} ${method} ${e.path}`,
  ];
  if (d.mode === 'audit' && !d.allow) lines.push('  mode audit: the deny is recorded, not enforced');
  if (e.losers.length === 0) lines.push('  no other rule matched');
  for (const l of e.losers)
    lines.push(
      `  also matched: ${l.id} (${l.effect}) — lost to ${l.lostTo === 'deny-override' ? `deny-override by ${d.rule}` : `the earlier ${l.effect} ${d.rule}`}`,
    );
  return lines.join('\n');
}
