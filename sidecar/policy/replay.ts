import { DurationError, parseDuration } from '../../core/index.ts';
import type { AuditRecord } from '../../audit/index.ts';
import { SidecarError } from '../errors.ts';
import { checkRequestTarget } from '../inbound/target.ts';
import { compilePolicy } from './compile.ts';
import type { Policy } from './parse.ts';

/** Which way a decision flips under the proposed policy. */
export type ReplayChange = 'allowed→denied' | 'denied→allowed';

/** A recorded request that the proposed policy decides the other way. */
export interface ReplayExample {
  readonly seq: number;
  readonly time: string;
  /** The request target as recorded (with its query). */
  readonly target: string;
  readonly traceId?: string;
}

/** Flipped decisions with the same caller, method, path and deciding rules. */
export interface ReplayGroup {
  readonly change: ReplayChange;
  readonly caller: string;
  readonly method: string;
  /** The path the policy saw (the target without its query). */
  readonly path: string;
  /** The rule that decided when the request was made, and the one that decides under the proposed policy. */
  readonly recordedRule: string;
  readonly proposedRule: string;
  count: number;
  readonly examples: ReplayExample[];
}

/** What {@link replayDecisions} found. */
export interface ReplayReport {
  readonly service: string;
  readonly policyFile: string;
  readonly policyHash: string;
  /** Only records appended at or after this time were replayed. */
  readonly since?: string;
  /** `authz.decision` records of the service that were looked at. */
  readonly considered: number;
  /** Of those, re-decided under the proposed policy. */
  readonly replayed: number;
  readonly unchanged: number;
  /** Same decision, another deciding rule (not a flip; counted, not listed). */
  readonly ruleChanged: number;
  readonly allowedToDenied: number;
  readonly deniedToAllowed: number;
  /** Flips, largest group first. */
  readonly groups: readonly ReplayGroup[];
  /** Records the policy never saw or that cannot be re-decided, by why (e.g. refused before the policy with `ERR_SIDECAR_TOKEN_EXPIRED`). */
  readonly skipped: Readonly<Record<string, number>>;
  /** Policy hashes the replayed records were decided under, with counts. */
  readonly recordedPolicies: Readonly<Record<string, number>>;
}

/** Options of {@link replayDecisions}. */
export interface ReplayOptions {
  /** RFC 3339: skip records appended before this time. */
  readonly since?: string;
  /** Examples kept per group (default 3). */
  readonly examples?: number;
}

/**
 * Re-decides every recorded `authz.decision` of the policy's service with the proposed policy,
 * through the sidecar's own compiled policy and request-target check, and groups the decisions
 * that flip. A record belongs to the service when both its `source` (stamped by the collector
 * with the sending sidecar's SPIFFE ID) and its `target` are the service. The request comes from
 * `subject` and `action` (`METHOD target`, as the audit layer records it). Records without a
 * `rule` were refused before the policy (token, binding, path, framing) and no policy changes
 * them: they are counted under `skipped` by reason, as are records whose target was truncated
 * before the end of its path. The policy's own decision is compared: a request it allowed that
 * the sidecar refused afterwards (fair share, body timeout) counts as allowed.
 */
export async function replayDecisions(
  policy: Policy,
  records: AsyncIterable<AuditRecord>,
  options: ReplayOptions = {},
): Promise<ReplayReport> {
  const authorizer = compilePolicy(policy);
  const sinceMs = options.since === undefined ? undefined : Date.parse(options.since);
  const keep = options.examples ?? 3;
  const service = policy.service;
  const groups = new Map<string, ReplayGroup>();
  const skipped: Record<string, number> = {};
  const recordedPolicies: Record<string, number> = {};
  const skip = (why: string) => void (skipped[why] = (skipped[why] ?? 0) + 1);
  let considered = 0;
  let replayed = 0;
  let unchanged = 0;
  let ruleChanged = 0;
  let allowedToDenied = 0;
  let deniedToAllowed = 0;
  let lastTime = '';
  let lastTimeOk = true;
  for await (const record of records) {
    const e = record.event;
    if (e.type !== 'authz.decision' || e.target !== service || e.source !== service) continue;
    if (sinceMs !== undefined) {
      // Records come in append order with mostly repeating times: parse each distinct one once.
      if (record.time !== lastTime) {
        lastTime = record.time;
        lastTimeOk = Date.parse(record.time) >= sinceMs;
      }
      if (!lastTimeOk) continue;
    }
    considered++;
    if (e.rule === undefined || e.decision === undefined) {
      skip(`refused before the policy (${e.reason ?? 'no reason recorded'})`);
      continue;
    }
    if (e.subject === undefined) {
      skip('no caller recorded');
      continue;
    }
    const action = e.action ?? '';
    const space = action.indexOf(' ');
    if (space <= 0) {
      skip('no request recorded (action)');
      continue;
    }
    const method = action.slice(0, space);
    const target = action.slice(space + 1);
    const q = target.indexOf('?');
    const rawPath = q === -1 ? target : target.slice(0, q);
    // The audit layer cuts long targets with "…", which no accepted target holds raw.
    if (rawPath.includes('…')) {
      skip('request target truncated in the record');
      continue;
    }
    let path: string;
    try {
      path = checkRequestTarget(method, rawPath).path;
    } catch (err) {
      if (!(err instanceof SidecarError)) throw err;
      skip('request target refused by the current request-target checks');
      continue;
    }
    replayed++;
    if (e.policyHash !== undefined)
      recordedPolicies[e.policyHash] = (recordedPolicies[e.policyHash] ?? 0) + 1;
    const d = authorizer.decide(e.subject, method, path);
    // What the policy decided: a deny it made is ERR_SIDECAR_POLICY_DENIED, or `enforced: false` in
    // mode audit; a `deny` with another code (429 over the caller's share, 408 body timeout) is a
    // request the policy allowed and the sidecar refused afterwards.
    const wasAllowed =
      e.decision === 'allow' || (e.reason !== 'ERR_SIDECAR_POLICY_DENIED' && e.enforced !== false);
    if (d.allow === wasAllowed) {
      if (d.rule === e.rule) unchanged++;
      else ruleChanged++;
      continue;
    }
    const change: ReplayChange = wasAllowed ? 'allowed→denied' : 'denied→allowed';
    if (wasAllowed) allowedToDenied++;
    else deniedToAllowed++;
    const key = `${change}\n${e.subject}\n${method}\n${path}\n${e.rule}\n${d.rule}`;
    let g = groups.get(key);
    if (!g) {
      g = {
        change,
        caller: e.subject,
        method,
        path,
        recordedRule: e.rule,
        proposedRule: d.rule,
        count: 0,
        examples: [],
      };
      groups.set(key, g);
    }
    g.count++;
    if (g.examples.length < keep)
      g.examples.push({
        seq: record.seq,
        time: record.time,
        target,
        ...(e.traceId ? { traceId: e.traceId } : {}),
      });
  }
  return {
    service,
    policyFile: policy.file,
    policyHash: policy.hash,
    ...(options.since !== undefined ? { since: options.since } : {}),
    considered,
    replayed,
    unchanged,
    ruleChanged,
    allowedToDenied,
    deniedToAllowed,
    groups: [...groups.values()].sort(
      (a, b) => b.count - a.count || a.change.localeCompare(b.change) || a.path.localeCompare(b.path),
    ),
    skipped,
    recordedPolicies,
  };
}

/** The report as text; at most `maxGroups` groups are listed (the JSON form has them all). */
export function formatReplayReport(r: ReplayReport, maxGroups = 50): string {
  const lines = [
    `replayed ${r.replayed} of ${r.considered} recorded decisions of ${r.service}${r.since ? ` since ${r.since}` : ''} against ${r.policyFile} (${r.policyHash})`,
    `  allowed→denied: ${r.allowedToDenied}   denied→allowed: ${r.deniedToAllowed}   unchanged: ${r.unchanged}   same decision, other rule: ${r.ruleChanged}`,
  ];
  for (const [why, n] of Object.entries(r.skipped)) lines.push(`  not replayed: ${n} ${why}`);
  const hashes = Object.entries(r.recordedPolicies).sort((a, b) => b[1] - a[1]);
  if (hashes.length)
    lines.push(
      `  recorded under: ${hashes
        .slice(0, 3)
        .map(([h, n]) => `${h} (${n})`)
        .join(', ')}${hashes.length > 3 ? `, and ${hashes.length - 3} more policy versions` : ''}`,
    );
  if (r.groups.length === 0) lines.push('no decision would change');
  for (const g of r.groups.slice(0, maxGroups)) {
    lines.push(
      `${g.change.padEnd(14)} ${String(g.count).padStart(7)}  ${g.caller} ${g.method} ${g.path}  rule ${g.recordedRule} → ${g.proposedRule}`,
    );
    for (const x of g.examples)
      lines.push(
        `${' '.repeat(24)}e.g. seq ${x.seq} at ${x.time}: ${g.method} ${x.target}${x.traceId ? ` trace ${x.traceId}` : ''}`,
      );
  }
  if (r.groups.length > maxGroups)
    lines.push(`… and ${r.groups.length - maxGroups} more groups (use --json for all)`);
  return lines.join('\n');
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/i;

/**
 * `--since` as an RFC 3339 instant: a duration back from `nowMs` (`24h`, `7d`, `90m`) or an RFC
 * 3339 time. Undefined for anything else (the caller says what is accepted).
 */
export function resolveSince(input: string, nowMs: number): string | undefined {
  if (RFC3339.test(input)) {
    const t = Date.parse(input);
    return Number.isNaN(t) ? undefined : new Date(t).toISOString();
  }
  try {
    return new Date(nowMs - parseDuration(input)).toISOString();
  } catch (err) {
    if (err instanceof DurationError) return undefined;
    throw err;
  }
}
