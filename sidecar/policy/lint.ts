import type { Registry } from '../../core/index.ts';
import { SidecarError } from '../errors.ts';
import { checkRequestTarget } from '../inbound/target.ts';
import { createExplainer } from './explain.ts';
import type { Explainer } from './explain.ts';
import type { Policy, PolicyRule } from './parse.ts';

/** Stable codes of lint findings. */
export type LintCode =
  | 'POLICY_IDENTITY_UNKNOWN'
  | 'POLICY_RULE_UNREACHABLE'
  | 'POLICY_RULE_SHADOWED'
  | 'POLICY_RULE_REDUNDANT'
  | 'POLICY_RULE_UNCHECKED'
  | 'POLICY_ROLE_UNUSED';

/** One finding. Errors make `policy lint` exit 1; warnings are printed and exit 0. */
export interface LintFinding {
  readonly severity: 'error' | 'warning';
  readonly code: LintCode;
  readonly file: string;
  /** Where in the file: `service`, `roles.storefront`, `rules[2]`, `rules[2].paths[0]`. */
  readonly key: string;
  readonly message: string;
}

/** Above this many witness requests for one rule, coverage is not analysed (the rule is reported as such). */
const MAX_WITNESSES = 20_000;

/**
 * Lints a parsed policy. Errors: identities absent from the registry (the service, role members,
 * rule subjects); rules no request can reach (every request they name is refused by the sidecar's
 * request-target checks, such as `CONNECT`); allow rules that a deny overrides on every request
 * they match (or one path of such a rule). Warnings: rules covered by other rules (removing one
 * changes no decision), rules too wide to check, and roles no rule uses.
 *
 * Coverage is decided by running witness requests through the sidecar's compiled policy: each
 * rule's subjects (role members; a fresh identity for `*`), methods (a fresh method for `*`) and
 * paths with every `:param` filled by a fresh segment and the final `*` by rests of every depth up
 * to one past the policy's longest pattern, with and without a trailing slash ({@link pathWitnesses}).
 * A fresh value matches another rule only where that rule matches any value, so a rule whose
 * witnesses are all covered is covered for every request (decision 0071).
 */
export function lintPolicy(policy: Policy, registry: Registry): LintFinding[] {
  const out: LintFinding[] = [];
  const find = (severity: LintFinding['severity'], code: LintCode, key: string, message: string) =>
    out.push({ severity, code, file: policy.file, key, message });

  if (!registry.byId(policy.service))
    find('error', 'POLICY_IDENTITY_UNKNOWN', 'service', `${policy.service} is not a registered workload`);
  for (const [role, members] of policy.roles)
    for (const m of members)
      if (!registry.byId(m))
        find('error', 'POLICY_IDENTITY_UNKNOWN', `roles.${role}`, `member ${m} is not a registered workload`);
  const used = new Set<string>();
  policy.rules.forEach((r, i) => {
    for (const s of r.subjects) {
      if (s.startsWith('role:')) used.add(s.slice(5));
      else if (s !== '*' && !registry.byId(s))
        find('error', 'POLICY_IDENTITY_UNKNOWN', `rules[${i}].subjects`, `${s} is not a registered workload`);
    }
  });
  for (const role of policy.roles.keys())
    if (!used.has(role))
      find(
        'warning',
        'POLICY_ROLE_UNUSED',
        `roles.${role}`,
        `role "${role}" is declared but no rule uses it`,
      );

  const explainer = createExplainer(policy);
  const fresh = freshValues(policy);
  policy.rules.forEach((rule, i) => {
    const key = `rules[${i}]`;
    const witnesses = witnessesOf(rule, policy, fresh);
    if (witnesses === undefined) {
      find(
        'warning',
        'POLICY_RULE_UNCHECKED',
        key,
        `rule "${rule.id}" names more than ${MAX_WITNESSES} subject/method/path combinations: shadowing and coverage not checked`,
      );
      return;
    }
    const reachable = witnesses.filter((w) => passesTargetChecks(w.method, w.path));
    if (reachable.length === 0) {
      const why = rule.methods.every((m) => m === 'CONNECT')
        ? 'CONNECT is refused by the request-target checks'
        : 'every path it names is refused by the request-target checks';
      find('error', 'POLICY_RULE_UNREACHABLE', key, `rule "${rule.id}" can never match: ${why}`);
      return;
    }
    const refusedMethods = rule.methods.filter((m) => m === 'CONNECT');
    if (refusedMethods.length)
      find(
        'warning',
        'POLICY_RULE_UNREACHABLE',
        `${key}.methods`,
        `CONNECT is refused by the request-target checks`,
      );
    const whole = coverage(rule, reachable, explainer);
    const names = (d: Set<string>) => [...d].map((x) => `"${x}"`).join(', ');
    if (rule.effect === 'allow' && whole.deniedEverywhere) {
      find(
        'error',
        'POLICY_RULE_SHADOWED',
        key,
        `allow rule "${rule.id}" never allows anything: deny ${names(whole.deciders)} overrides every request it matches`,
      );
      return;
    }
    if (whole.coveredEverywhere) {
      find(
        'warning',
        'POLICY_RULE_REDUNDANT',
        key,
        `${rule.effect} rule "${rule.id}" is covered by ${names(whole.deciders)}: removing it changes no decision`,
      );
      return;
    }
    // One path of an allow rule may be dead while the others work: name that path.
    if (rule.effect === 'allow' && rule.paths.length > 1)
      rule.paths.forEach((p, j) => {
        const only = reachable.filter((w) => w.pattern === p);
        const part = coverage(rule, only, explainer);
        if (only.length && part.deniedEverywhere)
          find(
            'error',
            'POLICY_RULE_SHADOWED',
            `${key}.paths[${j}]`,
            `path ${p} of allow rule "${rule.id}" never allows anything: deny ${names(part.deciders)} overrides it`,
          );
      });
  });
  return out;
}

interface Witness {
  /** The rule's path pattern this witness stands for. */
  readonly pattern: string;
  readonly subject: string;
  readonly method: string;
  readonly path: string;
}

interface Fresh {
  readonly subject: string;
  readonly method: string;
  readonly segments: readonly [string, string];
  /** One more than the most segments any path pattern of the policy has. */
  readonly depth: number;
}

/** Values no rule or role names: a fresh subject, method and two path segments; and the witness depth. */
function freshValues(policy: Policy): Fresh {
  const text = JSON.stringify({ r: policy.rules, o: [...policy.roles] });
  let tag = 'lint';
  while (text.includes(tag)) tag += 'x';
  return {
    subject: `spiffe://${tag}.invalid/any-caller`,
    method: tag
      .toUpperCase()
      .slice(0, 16)
      .replace(/[^A-Z]/g, 'X'),
    segments: [`${tag}-a`, `${tag}-b`],
    depth:
      1 +
      Math.max(0, ...policy.rules.flatMap((r) => r.paths.map((p) => p.split('/').filter(Boolean).length))),
  };
}

function witnessesOf(rule: PolicyRule, policy: Policy, fresh: Fresh): Witness[] | undefined {
  const subjects = rule.subjects.flatMap((s) =>
    s === '*' ? [fresh.subject] : s.startsWith('role:') ? [...(policy.roles.get(s.slice(5)) ?? [])] : [s],
  );
  const methods = rule.methods.includes('*') ? [fresh.method] : rule.methods;
  const paths = rule.paths.flatMap((pattern) =>
    pathWitnesses(pattern, fresh, fresh.depth).map((path) => ({ pattern, path })),
  );
  if (subjects.length * methods.length * paths.length > MAX_WITNESSES) return undefined;
  const out: Witness[] = [];
  for (const subject of subjects)
    for (const method of methods) for (const p of paths) out.push({ subject, method, ...p });
  return out;
}

/** Whether other rules decide every witness: all by a deny, or all by some rule of the rule's own effect (or a deny). */
function coverage(rule: PolicyRule, witnesses: readonly Witness[], explainer: Explainer) {
  const deciders = new Set<string>();
  let deniedEverywhere = true;
  let coveredEverywhere = true;
  for (const w of witnesses) {
    const others = explainer.matching(w.subject, w.method, w.path).filter((r) => r.id !== rule.id);
    const deny = others.find((r) => r.effect === 'deny');
    if (rule.effect === 'allow') {
      const allow = others.find((r) => r.effect === 'allow');
      if (deny) deciders.add(deny.id);
      else {
        deniedEverywhere = false;
        if (allow) deciders.add(allow.id);
        else coveredEverywhere = false;
      }
    } else {
      deniedEverywhere = false;
      if (deny) deciders.add(deny.id);
      else coveredEverywhere = false;
    }
  }
  return { deciders, deniedEverywhere, coveredEverywhere };
}

/**
 * Concrete paths standing for every path a pattern matches (that the target checks let through).
 * `:param` becomes a fresh segment. A final `*` becomes the empty rest and 1 … `depth` fresh
 * segments, each with and without a trailing slash: a rule without `*` matches rests of exactly
 * its own length, so with `depth` above the longest pattern of the policy only rules ending in `*`
 * (which match every longer rest too) can match the deepest witnesses.
 */
function pathWitnesses(pattern: string, fresh: Fresh, depth: number): string[] {
  const [a, b] = fresh.segments;
  const body = pattern.replace(/:[A-Za-z_][A-Za-z0-9_]*/g, a);
  if (!body.endsWith('/*')) return [body];
  const stem = body.slice(0, -1);
  const out = [stem];
  for (let n = 1; n <= depth; n++) {
    const rest = Array.from({ length: n }, (_, i) => (i % 2 ? b : a)).join('/');
    out.push(`${stem}${rest}`, `${stem}${rest}/`);
  }
  return out;
}

function passesTargetChecks(method: string, path: string): boolean {
  try {
    checkRequestTarget(method, path);
    return true;
  } catch (err) {
    if (err instanceof SidecarError) return false;
    throw err;
  }
}

/** Findings as lines: `file: key: severity: message [CODE]`. */
export function formatLintFindings(findings: readonly LintFinding[]): string {
  return findings.map((f) => `${f.file}: ${f.key}: ${f.severity}: ${f.message} [${f.code}]`).join('\n');
}
