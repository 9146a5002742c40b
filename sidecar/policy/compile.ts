import type { Policy, PolicyMode, PolicyRule } from './parse.ts';

/** Rule name reported when no rule matched. */
export const DEFAULT_DENY_RULE = 'default-deny';

/** An authorization decision (STYLE.md #12): always a value, always audited. */
export interface Decision {
  readonly allow: boolean;
  /** `allowed`, or `ERR_SIDECAR_POLICY_DENIED`. */
  readonly reason: 'allowed' | 'ERR_SIDECAR_POLICY_DENIED';
  /** The id of the matched rule, or {@link DEFAULT_DENY_RULE}. */
  readonly rule: string;
  readonly policyHash: string;
  readonly mode: PolicyMode;
}

/** A compiled policy: `decide` is synchronous and allocation-free on the common path. */
export interface Authorizer {
  readonly policy: Policy;
  decide(subject: string, method: string, path: string): Decision;
}

interface CompiledRule {
  readonly id: string;
  /** null: any method. */
  readonly methods: ReadonlySet<string> | null;
  readonly exact: ReadonlySet<string>;
  readonly patterns: readonly RegExp[];
}

interface SubjectRules {
  readonly deny: readonly CompiledRule[];
  readonly allow: readonly CompiledRule[];
}

const SUBJECT_CACHE_MAX = 10_000;

/**
 * Compiles a policy into a matcher with the same semantics as Casbin's `enforce` on
 * {@link translatePolicy}'s rows (a test holds the two together): rules are pre-filtered per
 * subject (cached), literal paths are set lookups, patterns are regular expressions built the
 * way keyMatch2 builds them. Deny-override, then first allow by file order, then default deny.
 */
export function compilePolicy(policy: Policy): Authorizer {
  const memberOf = new Map<string, string[]>();
  for (const [role, members] of policy.roles)
    for (const m of members) (memberOf.get(m) ?? memberOf.set(m, []).get(m)!).push(`role:${role}`);
  const compiled = policy.rules.map((r) => ({ rule: r, compiled: compileRule(r) }));
  const bySubject = new Map<string, SubjectRules>();
  const decisions = new Map<string, Decision>();
  const make = (allow: boolean, rule: string): Decision => {
    const key = `${allow ? 1 : 0}${rule}`;
    let d = decisions.get(key);
    if (!d) {
      d = Object.freeze({
        allow,
        reason: allow ? 'allowed' : 'ERR_SIDECAR_POLICY_DENIED',
        rule,
        policyHash: policy.hash,
        mode: policy.mode,
      });
      decisions.set(key, d);
    }
    return d;
  };
  const defaultDeny = make(false, DEFAULT_DENY_RULE);

  function rulesFor(subject: string): SubjectRules {
    let s = bySubject.get(subject);
    if (s) return s;
    const names = new Set([subject, ...(memberOf.get(subject) ?? [])]);
    const deny: CompiledRule[] = [];
    const allow: CompiledRule[] = [];
    for (const { rule, compiled: c } of compiled) {
      if (!rule.subjects.some((x) => x === '*' || names.has(x))) continue;
      (rule.effect === 'deny' ? deny : allow).push(c);
    }
    s = { deny, allow };
    if (bySubject.size >= SUBJECT_CACHE_MAX) bySubject.clear();
    bySubject.set(subject, s);
    return s;
  }

  return {
    policy,
    decide(subject, method, path) {
      const { deny, allow } = rulesFor(subject);
      for (const c of deny) if (matches(c, method, path)) return make(false, c.id);
      for (const c of allow) if (matches(c, method, path)) return make(true, c.id);
      return defaultDeny;
    },
  };
}

function matches(c: CompiledRule, method: string, path: string): boolean {
  if (c.methods !== null && !c.methods.has(method)) return false;
  if (c.exact.has(path)) return true;
  for (const re of c.patterns) if (re.test(path)) return true;
  return false;
}

function compileRule(rule: PolicyRule): CompiledRule {
  const exact = new Set<string>();
  const patterns: RegExp[] = [];
  for (const p of rule.paths) {
    if (!p.includes(':') && !p.includes('*')) exact.add(p);
    else patterns.push(patternRegExp(p));
  }
  return {
    id: rule.id,
    methods: rule.methods.includes('*') ? null : new Set(rule.methods),
    exact,
    patterns,
  };
}

/** keyMatch2's regular expression for a validated pattern: `.` literal, `/*` → `/.*`, `:x` → `[^/]+`. */
function patternRegExp(pattern: string): RegExp {
  const body = pattern
    .replaceAll('.', '\\.')
    .replaceAll('/*', '/.*')
    .replace(/:[A-Za-z_][A-Za-z0-9_]*/g, '[^/]+');
  return new RegExp(`^${body}$`);
}
