import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { sendEvents } from '../lib/send-events.ts';
import {
  createLogger,
  parseAuditEvent,
  readConfiguredFile,
  startTelemetry,
  withoutCredentials,
} from '../../core/index.ts';
import {
  createCollectorApi,
  fetchCheckpoint,
  formatRecordTable,
  loadAuditConfig,
  openStore,
  startCollector,
  fetchInclusionBundle,
  verifyInclusionBundle,
  verifyLog,
  FILTER_FIELDS,
  INTERVALS,
  nextCursor,
  pageFilter,
} from '../../audit/index.ts';
import type {
  AggregateGroup,
  AggregateInterval,
  AggregateQuery,
  AuditRecord,
  CollectorApi,
  CollectorSources,
  FilterField,
  InclusionBundle,
  RecordFilter,
} from '../../audit/index.ts';
import { resolveSince } from '../../sidecar/index.ts';
import type { CliCommand } from '../lib/command.ts';
import { closeWithin, untilShutdownSignal } from '../lib/signals.ts';
import { UsageError, parseFlags, required } from '../lib/command.ts';
import { findContext, fromContext } from '../lib/context.ts';
import { writeFileAtomic } from '../../ca/index.ts';
import type { Context } from '../lib/context.ts';

/** Group summary shown by `portcullis --help`. */
export const summary = 'tamper-evident audit log: serve the collector, verify, query, checkpoint, prove';

const REMOTE_FLAGS = `collector connection (mTLS; each flag not given comes from the context):
  --context DIR          the deployment's context (default: $PORTCULLIS_CONTEXT, else ./.portcullis
                         when \`portcullis up\` wrote one there)
  --url URL              collector base URL, e.g. https://127.0.0.1:8444
  --cert FILE            your certificate chain (PEM) (default: the context's auditReader)
  --key FILE             your private key (PEM)
  --trust FILE           trust bundle (PEM)
  --collector-id ID      SPIFFE ID the collector must present`;

const remoteOptions = {
  url: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  trust: { type: 'string' },
  'collector-id': { type: 'string' },
} as const;

/** The collector connection of query, checkpoint and prove: the remote flags and `--context`. */
const connectionOptions = { ...remoteOptions, context: { type: 'string' } } as const;

type RemoteFlags = {
  url?: string;
  cert?: string;
  key?: string;
  trust?: string;
  'collector-id'?: string;
  context?: string;
};

/** The collector API from the flags, each flag not given taken from the context. */
function collectorApi(flags: RemoteFlags, command: string, ctx = findContext(flags.context)): CollectorApi {
  const from = <T>(value: T | undefined, flag: string, pick: (c: Context) => T | undefined) =>
    fromContext(value, flag, command, ctx, pick);
  return createCollectorApi({
    url: from(flags.url, 'url', (c) => c.collector.url),
    tls: {
      cert: from(flags.cert, 'cert', (c) => c.operators.auditReader?.cert),
      key: from(flags.key, 'key', (c) => c.operators.auditReader?.key),
      trustBundle: from(flags.trust, 'trust', (c) => c.trustBundle),
    },
    collectorId: from(flags['collector-id'], 'collector-id', (c) => c.collector.spiffeId),
  });
}

/** `--public-key` takes the verifier key itself (`name+id+key`) or a file holding it. */
function publicKey(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  return /^[^\s+]+\+[0-9a-f]{8}\+/.test(value) ? value : readConfiguredFile(value, '--public-key').trim();
}

function nonNegative(value: string | undefined, flag: string, command: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^(0|[1-9][0-9]{0,15})$/.test(value))
    throw new UsageError(
      `${command}: --${flag} must be a non-negative integer (see: portcullis ${command} --help)`,
    );
  return Number(value);
}

const serve: CliCommand = {
  name: 'audit serve',
  summary: 'run the audit collector (mTLS) until SIGINT/SIGTERM',
  usage: `usage: portcullis audit serve --config FILE

Runs the audit collector: POST /v1/events from registered workloads, GET /v1/events for
role audit-reader, signed checkpoints and Merkle proofs, /healthz, and /metrics (mTLS).
See config/audit.yaml.

flags:
  --config FILE   collector config (required)`,
  async run(argv) {
    const flags = parseFlags(argv, { config: { type: 'string' } }, 'audit serve');
    const config = loadAuditConfig(required(flags.config, 'config', 'audit serve'));
    const logger = createLogger({ name: 'audit' });
    // Traces go out over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set; otherwise this is a no-op.
    const telemetry = await startTelemetry({ serviceName: 'portcullis-audit' });
    const running = await startCollector(config, { logger });
    logger.info(
      {
        url: running.url,
        ...(running.opsUrl ? { opsUrl: running.opsUrl } : {}),
        store: withoutCredentials(config.store),
        verifierKey: running.verifierKey,
        size: running.log.size,
      },
      'audit collector listening',
    );
    await untilShutdownSignal();
    logger.info('audit collector stopping');
    // Drains for at most connections.drainTimeout; the last checkpoint and store close get 10 s more.
    await closeWithin('audit serve', config.connections.drainTimeout + 10_000, () => running.close());
    await telemetry.shutdown();
    return 0;
  },
};

/** Exit statuses of `audit verify` (documented in its usage and docs/audit.md). */
export const VERIFY_EXIT = { intact: 0, broken: 1, usage: 2, uncovered: 3, torn: 4 } as const;

const verify: CliCommand = {
  name: 'audit verify',
  summary: 'verify a stored log (and that it agrees with a saved checkpoint)',
  usage: `usage: portcullis audit verify [--store file:DIR|postgres:URL] [--public-key KEY]... [--checkpoint FILE] [--root] [--deep] [--json]

Reads every record as stored and checks sequence, hash links, record hashes and the Merkle
root. With --public-key (the collector's verifier key; once per collector sharing the store),
also checks the seals the collector signs with every group commit and names the records no
seal by those keys covers (written by someone without the key, or never acknowledged). With
--checkpoint, the log must also agree with that checkpoint (same chain head and root at its
size): a truncated or rewritten log is reported inconsistent. Without either, records cut from
the end of the log leave a valid chain behind, and the output says so.

exit status:
  0  intact (and, with --public-key, every record covered by a seal)
  1  tampered: the first bad seq and why, or inconsistent with the checkpoint or a seal
  2  usage error
  3  the chain is intact but records from seq N on are covered by no seal of the given keys
  4  the chain is intact but a segment ends in bytes that are no whole record (torn or junk tail)

With a context (after \`portcullis up\`, or --context DIR) and none of --store, --public-key and
--checkpoint, the command verifies the context's store with its collector's verifier key, and
against the checkpoint \`audit checkpoint\` saved there when there is one.

flags:
  --store SPEC        file:DIR or postgres://user@host:port/db (required without a context)
  --public-key KEY    collector verifier key, or a file holding it (checkpoint.vkey); repeatable
  --checkpoint FILE   a checkpoint saved earlier (portcullis audit checkpoint --out); its signature is checked with --public-key
  --context DIR       the deployment's context (default: $PORTCULLIS_CONTEXT, else ./.portcullis)
  --root              also compute and print the Merkle root of the whole log
  --deep              also parse every event and check it is canonical and schema-valid
  --json              print the result as one JSON line`,
  async run(argv) {
    const flags = parseFlags(
      argv,
      {
        store: { type: 'string' },
        checkpoint: { type: 'string' },
        'public-key': { type: 'string', multiple: true },
        deep: { type: 'boolean' },
        root: { type: 'boolean' },
        json: { type: 'boolean' },
        context: { type: 'string' },
      },
      'audit verify',
    );
    // The context fills in only when none of the three is given: a --store of another log must
    // not be checked against this deployment's key or checkpoint.
    const explicit =
      flags.store !== undefined || flags['public-key'] !== undefined || flags.checkpoint !== undefined;
    const ctx = explicit && flags.context === undefined ? undefined : findContext(flags.context);
    const spec = fromContext(flags.store, 'store', 'audit verify', ctx, (c) => c.collector.store);
    const keys =
      flags['public-key'] ?? (!explicit && ctx?.collector.verifierKey ? [ctx.collector.verifierKey] : []);
    const saved = !explicit ? ctx?.collector.checkpoint : undefined;
    const checkpointFile = flags.checkpoint ?? (saved && existsSync(saved) ? saved : undefined);
    const started = performance.now();
    const result = await verifyLog(spec, {
      checkpointNote: checkpointFile ? readConfiguredFile(checkpointFile, '--checkpoint') : undefined,
      publicKeys: keys.map((k) => publicKey(k)!),
      deep: flags.deep,
      root: flags.root ?? false,
    });
    const seconds = (performance.now() - started) / 1000;
    const v = result.verdict;
    const uncovered = v.ok && result.coverageChecked && (v.covered ?? 0) < v.size;
    const torn = v.ok ? (v.torn ?? []) : [];
    const status = !v.ok
      ? VERIFY_EXIT.broken
      : uncovered
        ? VERIFY_EXIT.uncovered
        : torn.length
          ? VERIFY_EXIT.torn
          : VERIFY_EXIT.intact;
    if (flags.json) {
      console.log(
        JSON.stringify(
          v.ok
            ? {
                ok: status === VERIFY_EXIT.intact,
                size: v.size,
                head: v.head,
                root: flags.root ? v.root?.toString('base64') : undefined,
                // false: nothing to compare the end of the log with, so a cut tail would pass.
                checkpoint: result.checkpoint !== undefined,
                covered: result.coverageChecked ? v.covered : undefined,
                uncovered: uncovered ? { from: v.covered, to: v.size - 1 } : undefined,
                torn: torn.length ? torn : undefined,
                seconds,
              }
            : { ok: false, code: v.code, seq: v.seq, reason: v.reason },
        ),
      );
    } else if (v.ok) {
      const against = result.checkpoint
        ? `; agrees with the checkpoint at size ${result.checkpoint.size}${result.signatureChecked ? '' : ' (signature not checked: no --public-key)'}`
        : result.coverageChecked
          ? ''
          : '; no --checkpoint: records cut from the end would not show (save checkpoints with portcullis audit checkpoint, or give --public-key to check the seals)';
      const root = flags.root && v.root ? `, root ${v.root.toString('base64')}` : '';
      if (uncovered)
        console.error(
          `not covered: records ${v.covered}..${v.size - 1} are covered by no seal of the given keys (written without a collector's key, or never acknowledged); the ${v.covered} records before verify`,
        );
      for (const t of torn)
        console.error(`torn tail: ${t.where} ends in ${t.bytes} bytes that are no whole record`);
      const covered =
        result.coverageChecked && !uncovered
          ? `, all covered by seals (${v.coveredBy ?? 'none needed'})`
          : '';
      console.log(
        `${status === VERIFY_EXIT.intact ? 'intact' : 'chain intact'}: ${v.size} records, head ${v.head}${root}${covered}${against}`,
      );
    } else if (v.code === 'ERR_AUDIT_CHECKPOINT_INCONSISTENT') {
      console.error(`inconsistent with the checkpoint: ${v.reason} [${v.code}]`);
    } else {
      console.error(`tampered: first bad record seq ${v.seq}: ${v.reason} [${v.code}]`);
    }
    return status;
  },
};

const filterOptions = {
  since: { type: 'string' },
  until: { type: 'string' },
  type: { type: 'string' },
  source: { type: 'string' },
  subject: { type: 'string' },
  decision: { type: 'string' },
  rule: { type: 'string' },
  reason: { type: 'string' },
  json: { type: 'boolean' },
  store: { type: 'string' },
} as const;

const FILTER_HELP = `filters:
  --since 24h|TIME    records appended in the last duration (90m, 24h, 7d) or since an RFC 3339 time
  --until 1h|TIME     records appended before that (a duration back from now, or a time)
  --type TYPE         e.g. authz.decision, token.issued
  --source ID         emitting workload's SPIFFE ID (for authz.decision: the deciding sidecar's service)
  --subject ID        acting workload's SPIFFE ID (for authz.decision: the caller)
  --decision D        allow or deny
  --rule ID           the policy rule that decided
  --reason CODE       the reason code, e.g. ERR_SIDECAR_POLICY_DENIED`;

type FilterFlags = {
  [K in 'since' | 'until' | 'type' | 'source' | 'subject' | 'decision' | 'rule' | 'reason']?: string;
};

/** The filter fields of the flags; `--since`/`--until` take a duration back from now or a time. */
function filterFields(flags: FilterFlags, command: string): Omit<RecordFilter, 'limit'> {
  if (flags.decision !== undefined && flags.decision !== 'allow' && flags.decision !== 'deny')
    throw new UsageError(`${command}: --decision must be allow or deny (see: portcullis ${command} --help)`);
  const now = Date.now();
  const time = (k: 'since' | 'until') => {
    if (flags[k] === undefined) return undefined;
    const t = resolveSince(flags[k]!, now);
    if (t === undefined)
      throw new UsageError(
        `${command}: --${k} must be a duration (24h, 7d) or an RFC 3339 time, not "${flags[k]!.slice(0, 64)}" (see: portcullis ${command} --help)`,
      );
    return t;
  };
  const since = time('since');
  const until = time('until');
  if (since !== undefined && until !== undefined && since >= until)
    throw new UsageError(`${command}: --since must be before --until`);
  return {
    since,
    until,
    type: flags.type,
    source: flags.source,
    subject: flags.subject,
    decision: flags.decision as 'allow' | 'deny' | undefined,
    rule: flags.rule,
    reason: flags.reason,
  };
}

/**
 * The command line of the next page: these arguments without any --cursor, plus the new one;
 * a relative --since/--until (24h) is written as the instant it meant, so that every page reads
 * the same window.
 */
function moreHint(
  argv: readonly string[],
  command: string,
  cursor: string,
  resolved: { since?: string; until?: string },
): string {
  const kept: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const flag = /^--(cursor|since|until)(=.*)?$/.exec(arg);
    if (flag) {
      if (flag[2] === undefined) i++;
      if (flag[1] !== 'cursor') kept.push(`--${flag[1]}`, resolved[flag[1] as 'since' | 'until']!);
      continue;
    }
    kept.push(/^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`);
  }
  return `more: portcullis ${command} ${[...kept, '--cursor', cursor].join(' ')}`;
}

const query: CliCommand = {
  name: 'audit query',
  summary:
    'list audit records, newest first, by time, type, source, subject, decision, rule, reason; or follow them',
  usage: `usage: portcullis audit query (--store SPEC | collector flags) [filters] [--limit N] [--oldest-first] [--cursor C | --follow] [--json]

Prints matching records as a table (or JSON lines with --json), newest first. When more match
than --limit, the last line (on stderr) is the command for the next page: "more: … --cursor C".
With --follow, prints the records as they are appended (the collector's live tail) until Ctrl-C,
then exits 0. Against a collector, your workload needs role audit-reader (and the query is itself
audited).

${FILTER_HELP}

  --limit N           at most N records per page (default 100)
  --oldest-first      oldest first instead
  --cursor C          the next page (from the "more:" line); same filters and order
  --from-seq N        with --oldest-first: start at this seq
  --follow            after the records, keep printing new matching ones (collector only)

  --store SPEC        read a store directly (file:DIR or postgres://…) instead of a collector
${REMOTE_FLAGS}`,
  async run(argv) {
    const flags = parseFlags(
      argv,
      {
        ...filterOptions,
        ...connectionOptions,
        limit: { type: 'string' },
        'oldest-first': { type: 'boolean' },
        cursor: { type: 'string' },
        'from-seq': { type: 'string' },
        follow: { type: 'boolean' },
      },
      'audit query',
    );
    const cmd = 'audit query';
    const fields = filterFields(flags, cmd);
    const order = flags['oldest-first'] ? 'asc' : 'desc';
    const fromSeq = nonNegative(flags['from-seq'], 'from-seq', cmd);
    if (fromSeq !== undefined && order === 'desc')
      throw new UsageError(`${cmd}: --from-seq pages oldest first: add --oldest-first (or use --cursor)`);
    if (fromSeq !== undefined && flags.cursor !== undefined)
      throw new UsageError(`${cmd}: give --cursor or --from-seq, not both`);
    if (flags.follow && flags.store)
      throw new UsageError(`${cmd}: --follow needs a collector (the live tail), not --store`);
    if (flags.follow && flags.cursor !== undefined)
      throw new UsageError(`${cmd}: --follow starts at the newest records; drop --cursor`);
    const limit = nonNegative(flags.limit, 'limit', cmd) ?? 100;
    if (limit < 1) throw new UsageError(`${cmd}: --limit must be at least 1`);
    const base: RecordFilter = { ...fields, order, limit, ...(fromSeq !== undefined ? { fromSeq } : {}) };
    let filter: RecordFilter;
    try {
      filter = pageFilter(base, flags.cursor);
    } catch (err) {
      throw new UsageError(`${cmd}: --${(err as Error).message}`);
    }
    const print = (records: readonly AuditRecord[]) => {
      if (flags.json) for (const r of records) console.log(JSON.stringify(r));
      else if (records.length) console.log(formatRecordTable(records));
    };
    if (flags.store) {
      const store = await openStore(flags.store, { readOnly: true });
      let records: AuditRecord[];
      try {
        records = await store.query(filter);
      } finally {
        await store.close();
      }
      if (flags.json || records.length) print(records);
      else console.log('no matching records');
      const next = nextCursor(filter, records);
      if (next) console.error(moreHint(argv, cmd, next, fields));
      return 0;
    }
    const api = collectorApi(flags, cmd);
    try {
      if (!flags.follow) {
        const page = await api.events({
          ...fields,
          order,
          limit,
          ...(fromSeq !== undefined ? { fromSeq } : {}),
          ...(flags.cursor !== undefined ? { cursor: flags.cursor } : {}),
        });
        if (flags.json || page.records.length) print(page.records);
        else console.log('no matching records');
        if (page.next) console.error(moreHint(argv, cmd, page.next, fields));
        return 0;
      }
      // --follow: the newest page (oldest of it first, as a tail reads), then the live tail from it.
      const page = await api.events({ ...fields, order: 'desc', limit });
      const recent = [...page.records].reverse();
      if (!flags.json && recent.length) console.log(formatRecordTable(recent));
      else if (flags.json) print(recent);
      const control = new AbortController();
      void untilShutdownSignal().then(() => control.abort());
      const lastEventId = recent.at(-1)?.seq ?? (await api.status()).store.records - 1;
      for await (const r of api.stream(fields, { lastEventId, signal: control.signal })) {
        if (flags.json) console.log(JSON.stringify(r));
        else console.log(formatRecordTable([r]).split('\n')[1]);
      }
      if (!control.signal.aborted) {
        console.error(`${cmd}: the collector ended the live tail (it is shutting down)`);
        return 1;
      }
      return 0;
    } finally {
      await api.close();
    }
  },
};

const stats: CliCommand = {
  name: 'audit stats',
  summary:
    'count audit records grouped by source, subject, type, decision, rule or reason, over a time range',
  usage: `usage: portcullis audit stats (--store SPEC | collector flags) [--group-by F,F…] [--interval 1m|5m|1h|1d] [filters] [--json]

Counts the matching records appended in the range (default: the last 24 hours), grouped by the
given fields (and time buckets with --interval): a table with one line per group, largest first,
and the total. --group-by subject,source,decision with --type authz.decision is the service graph:
who (subject, the caller) called whom (source, the deciding sidecar's service), allowed or denied.

  --group-by F,F…     among type, source, subject, decision, rule, reason (default: none, the total)
  --interval I        also by time bucket: 1m, 5m, 1h or 1d (UTC)
${FILTER_HELP}

  --store SPEC        read a store directly (file:DIR or postgres://…) instead of a collector
${REMOTE_FLAGS}`,
  async run(argv) {
    const cmd = 'audit stats';
    const flags = parseFlags(
      argv,
      {
        ...filterOptions,
        ...connectionOptions,
        'group-by': { type: 'string' },
        interval: { type: 'string' },
      },
      cmd,
    );
    const fields = filterFields(flags, cmd);
    const groupBy = (flags['group-by'] ?? '').split(',').filter((f) => f !== '');
    for (const f of groupBy)
      if (!(FILTER_FIELDS as readonly string[]).includes(f))
        throw new UsageError(
          `${cmd}: --group-by: "${f.slice(0, 64)}" is not one of ${FILTER_FIELDS.join(', ')}`,
        );
    if (new Set(groupBy).size !== groupBy.length)
      throw new UsageError(`${cmd}: --group-by names a field twice`);
    const interval = flags.interval as AggregateInterval | undefined;
    if (interval !== undefined && !(interval in INTERVALS))
      throw new UsageError(`${cmd}: --interval must be one of ${Object.keys(INTERVALS).join(', ')}`);
    const until = fields.until ?? new Date().toISOString();
    const since = fields.since ?? new Date(Date.parse(until) - 86_400_000).toISOString();
    const q: AggregateQuery = {
      filter: { ...fields, since, until },
      groupBy: groupBy as FilterField[],
      ...(interval ? { interval } : {}),
    };
    let groups: AggregateGroup[];
    if (flags.store) {
      const store = await openStore(flags.store, { readOnly: true });
      try {
        groups = await store.aggregate(q);
      } finally {
        await store.close();
      }
    } else {
      const api = collectorApi(flags, cmd);
      try {
        groups = (await api.aggregates(q)).groups;
      } finally {
        await api.close();
      }
    }
    if (flags.json) {
      console.log(JSON.stringify({ since, until, groups }));
      return 0;
    }
    const header = [...(interval ? ['BUCKET'] : []), ...groupBy.map((f) => f.toUpperCase()), 'COUNT'];
    const rows = groups.map((g) => [
      ...(interval ? [g.bucket ?? '-'] : []),
      ...groupBy.map((f) => g.key[f as FilterField] ?? '-'),
      String(g.count),
    ]);
    const total = groups.reduce((n, g) => n + g.count, 0);
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const line = (cells: string[]) =>
      cells
        .map((c, i) => (i === cells.length - 1 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
        .join('  ');
    console.log(`records appended ${since} .. ${until}`);
    if (groupBy.length || interval) for (const l of [header, ...rows]) console.log(line(l));
    console.log(`total ${total}${groupBy.length || interval ? ` in ${groups.length} groups` : ''}`);
    return 0;
  },
};

/** A duration in ms as its largest whole unit: 850ms, 12s, 4m, 3h, 2d. */
function shortAge(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
  ] as const)
    if (ms >= size) return `${Math.floor(ms / size)}${unit}`;
  return `${Math.floor(ms / 1000)}s`;
}

const sources: CliCommand = {
  name: 'audit sources',
  summary: "the audit clients the collector heard from: their spools' backlog, missing events, stale or ok",
  usage: `usage: portcullis audit sources (collector flags) [--json] [--check]

Lists every source (STS, sidecar) the collector has heard from since it started, from its query
API (GET /v1/sources, role audit-reader), as the console's integrity page shows them: when it was
last heard from, the events waiting in its audit client's spool and the age of the oldest, events
counted missing from a damaged spool or lost, the spool's state, and whether it is stale (nothing
for 3 of its report intervals) or needs a look.

  --json              the collector's answer as it is
  --check             exit 1 when any source is stale, has missing or lost events, a growing
                      backlog or a spool that is retrying, full or unwritable
${REMOTE_FLAGS}`,
  async run(argv) {
    const cmd = 'audit sources';
    const flags = parseFlags(
      argv,
      { ...connectionOptions, json: { type: 'boolean' }, check: { type: 'boolean' } },
      cmd,
    );
    const api = collectorApi(flags, cmd);
    let answer: CollectorSources;
    try {
      answer = await api.sources();
    } finally {
      await api.close();
    }
    const troubled = answer.sources.filter((s) => s.attention.length > 0).length;
    if (flags.json) console.log(JSON.stringify(answer));
    else if (!answer.sources.length) console.log('no source heard from since the collector started');
    else {
      const now = Date.now();
      const header = ['SOURCE', 'LAST SEEN', 'PENDING', 'OLDEST', 'MISSING', 'LOST', 'SPOOL', 'HEALTH'];
      const rows = answer.sources.map((s) => {
        const r = s.report;
        const problems = s.attention;
        return [
          s.source,
          `${shortAge(Math.max(0, now - Date.parse(s.lastSeen)))} ago`,
          r ? String(r.pending) : '-',
          r && r.pending > 0 ? shortAge(r.oldestPendingMs) : '-',
          r ? String(r.missing) : '-',
          r ? String(r.lost) : '-',
          r ? r.state : 'no reports',
          problems.length ? problems.join(', ') : 'ok',
        ];
      });
      const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
      const numeric = new Set([2, 3, 4, 5]);
      for (const l of [header, ...rows])
        console.log(
          l
            .map((c, i) => (numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
            .join('  ')
            .trimEnd(),
        );
      console.log(
        `${answer.sources.length} sources, ${troubled} need a look${answer.dropped ? `; ${answer.dropped} forgotten past the collector's limit` : ''}`,
      );
    }
    return flags.check && troubled > 0 ? 1 : 0;
  },
};

const checkpoint: CliCommand = {
  name: 'audit checkpoint',
  summary: 'fetch, verify and save the latest signed checkpoint',
  usage: `usage: portcullis audit checkpoint [--out FILE] [--public-key KEY] (collector flags)

Fetches the collector's latest checkpoint and checks its signature. If FILE already holds a
checkpoint, the new one must extend it (consistency proof) or nothing is written and the
command exits 1: the log was rewritten since you last looked.

flags:
  --out FILE          where to save the checkpoint (default: the context's, e.g. .portcullis/checkpoints/latest.checkpoint)
  --public-key KEY    collector verifier key, or a file holding it (default: the context's checkpoint.vkey)
${REMOTE_FLAGS}`,
  async run(argv) {
    const flags = parseFlags(
      argv,
      { out: { type: 'string' }, 'public-key': { type: 'string' }, ...connectionOptions },
      'audit checkpoint',
    );
    const cmd = 'audit checkpoint';
    const ctx = findContext(flags.context);
    const out = fromContext(flags.out, 'out', cmd, ctx, (c) => c.collector.checkpoint);
    const key = publicKey(
      fromContext(flags['public-key'], 'public-key', cmd, ctx, (c) => c.collector.verifierKey),
    )!;
    const previous = existsSync(out) ? readConfiguredFile(out, '--out') : undefined;
    const api = collectorApi(flags, cmd, ctx);
    try {
      const fetched = await fetchCheckpoint(api, key, previous);
      // Whole or not at all: a reader (or a second run) never sees half a checkpoint.
      mkdirSync(dirname(out), { recursive: true });
      writeFileAtomic(out, fetched.note, 0o644);
      const extended = fetched.previous
        ? ` (extends the saved checkpoint at size ${fetched.previous.size})`
        : '';
      console.log(
        `saved checkpoint of ${fetched.body.origin} at size ${fetched.body.size} to ${out}${extended}`,
      );
      return 0;
    } finally {
      await api.close();
    }
  },
};

const prove: CliCommand = {
  name: 'audit prove',
  summary: 'prove that a record is in the log a saved checkpoint commits to',
  usage: `usage: portcullis audit prove --seq N [--checkpoint FILE] [--public-key KEY] (collector flags [--save FILE] | --bundle FILE)

Gets the inclusion proof of record N for the checkpoint's size (from the collector, or from a
bundle saved earlier with --save) and checks it offline with only the collector's public key:
the checkpoint signature, the record's hash, and the Merkle path to the signed root.

flags:
  --seq N             record to prove (required with a collector)
  --checkpoint FILE   a saved checkpoint (default: the one \`audit checkpoint\` saved in the context)
  --public-key KEY    collector verifier key, or a file holding it (default: the context's)
  --save FILE         also save the proof bundle (record + proof) as JSON
  --bundle FILE       verify a saved bundle instead of asking a collector
${REMOTE_FLAGS}`,
  async run(argv) {
    const flags = parseFlags(
      argv,
      {
        seq: { type: 'string' },
        checkpoint: { type: 'string' },
        'public-key': { type: 'string' },
        save: { type: 'string' },
        bundle: { type: 'string' },
        ...connectionOptions,
      },
      'audit prove',
    );
    const cmd = 'audit prove';
    const ctx = findContext(flags.context);
    const note = readConfiguredFile(
      fromContext(flags.checkpoint, 'checkpoint', cmd, ctx, (c) => c.collector.checkpoint),
      '--checkpoint',
    );
    const key = publicKey(
      fromContext(flags['public-key'], 'public-key', cmd, ctx, (c) => c.collector.verifierKey),
    )!;
    let bundle: InclusionBundle;
    if (flags.bundle) {
      try {
        bundle = JSON.parse(readConfiguredFile(flags.bundle, '--bundle')) as InclusionBundle;
      } catch (err) {
        if (err instanceof SyntaxError) throw new Error(`--bundle ${flags.bundle}: not JSON`, { cause: err });
        throw err;
      }
    } else {
      const seq = nonNegative(required(flags.seq, 'seq', 'audit prove'), 'seq', 'audit prove')!;
      const api = collectorApi(flags, cmd, ctx);
      try {
        bundle = await fetchInclusionBundle(api, note, key, seq);
      } finally {
        await api.close();
      }
      if (flags.save) writeFileSync(flags.save, `${JSON.stringify(bundle, null, 2)}\n`);
    }
    const record = verifyInclusionBundle(bundle, note, key);
    console.log(
      `included: record ${record.seq} (${record.event.type}, hash ${record.hash}) is in the checkpoint of size ${bundle.size}`,
    );
    console.log(JSON.stringify(record));
    return 0;
  },
};

const importEvents: CliCommand = {
  name: 'audit import',
  summary: 'send audit events kept in a JSON-lines file (e.g. certs issue --audit-file) to the collector',
  usage: `usage: portcullis audit import --file FILE (collector flags)

Reads one audit event per line (as 'certs issue' appends them to OUT/issued.jsonl), checks every
line against the event schema before sending any (a bad line is named by its number), posts them
to the collector over mTLS and, once all are delivered, renames FILE to FILE.imported so that a
second run does not record them twice. The collector stamps source with your SPIFFE ID.

  --file FILE            the events (required)
${REMOTE_FLAGS}`,
  async run(argv) {
    const flags = parseFlags(argv, { file: { type: 'string' }, ...remoteOptions }, 'audit import');
    const file = required(flags.file, 'file', 'audit import');
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new UsageError(`audit import: ${file}: ${(err as Error).message}`);
    }
    const events = text
      .split('\n')
      .map((line, i) => [line, i + 1] as const)
      .filter(([line]) => line.trim() !== '')
      .map(([line, n]) => {
        try {
          return parseAuditEvent(JSON.parse(line));
        } catch (err) {
          throw new UsageError(
            `audit import: ${file}:${n}: not an audit event (${(err as Error).message.split('\n')[0]})`,
          );
        }
      });
    if (events.length === 0) {
      console.log(`${file}: no events to import`);
      return 0;
    }
    const sent = await sendEvents(events, {
      url: required(flags.url, 'url', 'audit import'),
      cert: required(flags.cert, 'cert', 'audit import'),
      key: required(flags.key, 'key', 'audit import'),
      trustBundle: required(flags.trust, 'trust', 'audit import'),
      collectorId: required(flags['collector-id'], 'collector-id', 'audit import'),
    });
    renameSync(file, `${file}.imported`);
    console.log(`${sent} events imported from ${file} (renamed ${file}.imported)`);
    return 0;
  },
};

/** `portcullis audit serve|verify|query|stats|sources|checkpoint|prove|import`. */
export const commands: readonly CliCommand[] = [
  serve,
  verify,
  query,
  stats,
  sources,
  checkpoint,
  prove,
  importEvents,
];
