import type { Policy } from './parse.ts';

/**
 * The Casbin model every policy is translated to: RBAC with role membership (`g`), a wildcard
 * subject, `keyMatch2` paths, and deny-override (any matching deny wins; else any allow; else deny).
 */
export const CASBIN_MODEL = `
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act, eft, id

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = (p.sub == "*" || g(r.sub, p.sub)) && keyMatch2(r.obj, p.obj) && (p.act == "*" || r.act == p.act)
`;

/** A policy as Casbin rows: `p` rows `[sub, obj, act, eft, id]` and `g` rows `[member, role:<name>]`. */
export interface CasbinRows {
  readonly policies: string[][];
  readonly groupings: string[][];
}

/**
 * Translates a parsed policy into Casbin rows for {@link CASBIN_MODEL}. Path patterns are handed
 * to keyMatch2 with `.` escaped (keyMatch2 builds a regular expression from its pattern). Pure.
 */
export function translatePolicy(policy: Policy): CasbinRows {
  const policies: string[][] = [];
  for (const rule of policy.rules)
    for (const sub of rule.subjects)
      for (const path of rule.paths)
        for (const act of rule.methods) policies.push([sub, casbinPattern(path), act, rule.effect, rule.id]);
  const groupings: string[][] = [];
  for (const [role, members] of policy.roles) for (const m of members) groupings.push([m, `role:${role}`]);
  return { policies, groupings };
}

/** The keyMatch2 form of a policy path pattern. */
export function casbinPattern(path: string): string {
  return path.replaceAll('.', '\\.');
}
