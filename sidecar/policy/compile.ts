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
  /** First segment of each path (`""` for `/`); null where any first segment can match (`/*`, `/:x…`). */
  readonly firstSegments: readonly (string | null)[];
}

interface SubjectRules {
  readonly deny: readonly CompiledRule[];
  readonly allow: readonly CompiledRule[];
}

const SUBJECT_CACHE_MAX = 10_000;
/** The index slot of methods and first segments that no rule names (no method or segment has a space). */
const OTHER = ' ';

/**
 * Compiles a policy into a matcher with the same semantics as Casbin's `enforce` on
 * {@link translatePolicy}'s rows (a test holds the two together): candidate rules are indexed by
 * subject (cached), method and first path segment (decision 0036), literal paths are set lookups, patterns are regular expressions built the
 * way keyMatch2 builds them. Deny-override, then first allow by file order, then default deny.
 */
export function compilePolicy(policy: Policy): Authorizer {
  const memberOf = new Map<string, string[]>();
  for (const [role, members] of policy.roles)
    for (const m of members) (memberOf.get(m) ?? memberOf.set(m, []).get(m)!).push(`role:${role}`);
  const compiled = policy.rules.map((r) => ({ rule: r, compiled: compileRule(r) }));
  // subject → method → first segment → candidate rules.
  const index = new Map<string, Map<string, Map<string, SubjectRules>>>();
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

  // Which rules can apply is decided by the subject, the method and the path's first segment;
  // each (subject, method, first segment) gets its candidate lists once. Methods and segments
  // that no rule names share one slot each, so a caller cannot grow the index with new ones.
  const methodsNamed = new Set(compiled.flatMap(({ compiled: c }) => (c.methods ? [...c.methods] : [])));
  const segmentsNamed = new Set(
    compiled.flatMap(({ compiled: c }) => c.firstSegments.filter((x): x is string => x !== null)),
  );

  function rulesFor(subject: string, method: string, segment: string): SubjectRules {
    let bySubject = index.get(subject);
    if (!bySubject) {
      if (index.size >= SUBJECT_CACHE_MAX) index.clear();
      index.set(subject, (bySubject = new Map()));
    }
    const m = methodsNamed.has(method) ? method : OTHER;
    const seg = segmentsNamed.has(segment) ? segment : OTHER;
    let byMethod = bySubject.get(m);
    if (!byMethod) bySubject.set(m, (byMethod = new Map()));
    let s = byMethod.get(seg);
    if (s) return s;
    const names = new Set([subject, ...(memberOf.get(subject) ?? [])]);
    const deny: CompiledRule[] = [];
    const allow: CompiledRule[] = [];
    for (const { rule, compiled: c } of compiled) {
      if (!rule.subjects.some((x) => x === '*' || names.has(x))) continue;
      if (c.methods !== null && !c.methods.has(m)) continue;
      if (!c.firstSegments.some((x) => x === null || x === seg)) continue;
      (rule.effect === 'deny' ? deny : allow).push(c);
    }
    s = { deny, allow };
    byMethod.set(seg, s);
    return s;
  }

  return {
    policy,
    decide(subject, method, path) {
      const { deny, allow } = rulesFor(subject, method, firstSegment(path));
      for (const c of deny) if (matches(c, method, path)) return make(false, c.id);
      for (const c of allow) if (matches(c, method, path)) return make(true, c.id);
      return defaultDeny;
    },
  };
}

/** The text between the leading `/` and the next one (`""` for `/` or a path not starting with `/`). */
function firstSegment(path: string): string {
  if (path.charCodeAt(0) !== 0x2f) return '';
  const end = path.indexOf('/', 1);
  return end === -1 ? path.slice(1) : path.slice(1, end);
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
    firstSegments: rule.paths.map(patternFirstSegment),
    methods: rule.methods.includes('*') ? null : new Set(rule.methods),
    exact,
    patterns,
  };
}

/**
 * The literal first segment every path a pattern matches starts with, or null when the first
 * segment is `*` or a `:param`. keyMatch2 anchors a literal segment between `/` and `/` or the end.
 */
function patternFirstSegment(pattern: string): string | null {
  const seg = firstSegment(pattern);
  return seg === '*' || seg.startsWith(':') ? null : seg;
}

/** keyMatch2's regular expression for a validated pattern: `.` literal, `/*` → `/.*`, `:x` → `[^/]+`. */
function patternRegExp(pattern: string): RegExp {
  const body = pattern
    .replaceAll('.', '\\.')
    .replaceAll('/*', '/.*')
    .replace(/:[A-Za-z_][A-Za-z0-9_]*/g, '[^/]+');
  return new RegExp(`^${body}$`);
}
