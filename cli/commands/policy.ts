import { ConfigError, loadRegistry } from '../../core/index.ts';
import type { Registry } from '../../core/index.ts';
import {
  createExplainer,
  findPolicyFiles,
  formatExplanation,
  formatLintFindings,
  formatPolicyTestReport,
  formatReplayReport,
  lintPolicy,
  loadPolicyFile,
  loadPolicyTestFile,
  openDecisionSource,
  replayDecisions,
  resolveCaller,
  resolveSince,
  runPolicyTests,
} from '../../sidecar/index.ts';
import type { CliCommand } from '../lib/command.ts';
import { UsageError, parseFlags, parseFlagsAndPaths, required } from '../lib/command.ts';

/** Group summary shown by `portcullis --help`. */
export const summary =
  'policy tooling: test, explain, lint, and replay recorded decisions against a proposed policy';

const REGISTRY_FLAG = `  --registry PATH     workload registry, a directory or file (default: identities)`;
const registryOption = { registry: { type: 'string' } } as const;
const registry = (path: string | undefined): Registry => loadRegistry(path ?? 'identities');

const test: CliCommand = {
  name: 'policy test',
  summary: 'run the table tests beside each policy (<policy>.test.yaml)',
  usage: `usage: portcullis policy test [--registry PATH] [PATH...]

Runs every case of each policy test file through the sidecar's request-target checks and
compiled policy, and prints a diff (- expected, + actual) for each case that fails.
PATH is a test file or a directory of *.test.yaml files (default: policies). A test file
runs against the policy beside it (orders.test.yaml → orders.yaml) unless it names one
with "policy:". Exit 0 when every case passes; 1 when one fails or a file is bad (one line
naming the file and key); 2 on bad flags.

flags:
${REGISTRY_FLAG}`,
  async run(argv) {
    const { flags, paths } = parseFlagsAndPaths(argv, registryOption, 'policy test');
    const reg = registry(flags.registry);
    let failed = 0;
    for (const file of findPolicyFiles(paths.length ? paths : ['policies'], 'test')) {
      const tests = loadPolicyTestFile(file, reg);
      const report = runPolicyTests(tests, loadPolicyFile(tests.policyFile, undefined, `${file}: policy`));
      console.log(formatPolicyTestReport(report));
      failed += report.failed;
    }
    return failed ? 1 : 0;
  },
};

const explain: CliCommand = {
  name: 'policy explain',
  summary: 'show the decision on one request, the rule that made it and the rules that lost',
  usage: `usage: portcullis policy explain --policy FILE --caller ID --method M --path TARGET [--json]

Decides one request as the sidecar would: the request-target checks first (a target they
refuse is reported as refused), then the compiled policy (deny-override, then the first allow
in file order, else default-deny). Prints the decision, the deciding rule, and every other rule
that matched and why it lost.

flags:
  --policy FILE       the policy file (required)
  --caller ID         a workload name or SPIFFE ID from the registry (required)
  --method M          HTTP method, e.g. GET (required)
  --path TARGET       request target, e.g. /orders/1?full=1 (required)
  --json              print the explanation as one JSON line
${REGISTRY_FLAG}`,
  async run(argv) {
    const flags = parseFlags(
      argv,
      {
        policy: { type: 'string' },
        caller: { type: 'string' },
        method: { type: 'string' },
        path: { type: 'string' },
        json: { type: 'boolean' },
        ...registryOption,
      },
      'policy explain',
    );
    const policyFile = required(flags.policy, 'policy', 'policy explain');
    const caller = required(flags.caller, 'caller', 'policy explain');
    const method = required(flags.method, 'method', 'policy explain');
    const target = required(flags.path, 'path', 'policy explain');
    if (!/^[A-Z]{1,16}$/.test(method))
      throw new UsageError('policy explain: --method must be an upper-case HTTP method, e.g. GET');
    const policy = loadPolicyFile(policyFile, undefined, '--policy');
    const registryPath = flags.registry ?? 'identities';
    const subject = resolveCaller(registry(registryPath), caller);
    if (subject === undefined)
      throw new ConfigError(
        'ERR_CONFIG_INVALID',
        registryPath,
        '--caller',
        `"${caller}" is neither a workload name nor a SPIFFE ID in the registry`,
      );
    const e = createExplainer(policy).explain(subject, method, target);
    if (flags.json) {
      console.log(JSON.stringify({ caller: subject, method, target, ...e }));
    } else {
      console.log(formatExplanation(e, subject, method, policy.file));
    }
    return 0;
  },
};

const lint: CliCommand = {
  name: 'policy lint',
  summary: 'find rules that never match or are shadowed, unknown identities, refused paths',
  usage: `usage: portcullis policy lint [--registry PATH] [--json] [PATH...]

Checks each policy (PATH: a policy file or a directory of them; default: policies).
errors (exit 1):
  POLICY_IDENTITY_UNKNOWN   the service, a role member or a rule subject is not in the registry
  POLICY_RULE_UNREACHABLE   every request the rule names is refused by the request-target checks
  POLICY_RULE_SHADOWED      an allow rule that a deny overrides on every request it matches
warnings (exit 0):
  POLICY_RULE_REDUNDANT     covered by other rules of the same effect: removing it changes nothing
  POLICY_ROLE_UNUSED        a role that no rule uses
  POLICY_RULE_UNCHECKED     too many combinations in one rule to check shadowing and coverage

flags:
  --json              print findings as JSON lines
${REGISTRY_FLAG}`,
  async run(argv) {
    const { flags, paths } = parseFlagsAndPaths(
      argv,
      { json: { type: 'boolean' }, ...registryOption },
      'policy lint',
    );
    const reg = registry(flags.registry);
    let errors = 0;
    for (const file of findPolicyFiles(paths.length ? paths : ['policies'], 'policy')) {
      const findings = lintPolicy(loadPolicyFile(file, undefined, 'policy file'), reg);
      errors += findings.filter((f) => f.severity === 'error').length;
      if (flags.json) for (const f of findings) console.log(JSON.stringify(f));
      else console.log(findings.length ? formatLintFindings(findings) : `${file}: ok`);
    }
    return errors ? 1 : 0;
  },
};

const replay: CliCommand = {
  name: 'policy replay',
  summary: "re-decide a service's recorded decisions with a proposed policy and show what flips",
  usage: `usage: portcullis policy replay --policy FILE --from SOURCE [--since 24h|TIME] [--json] [collector flags]

Reads every recorded authz.decision of the policy's service and decides it again with the
proposed policy, through the sidecar's own checks. Reports allowed→denied and denied→allowed
flips grouped by caller, method, path and deciding rule (recorded → proposed), with counts and
examples. Records refused before the policy (token, binding, path) are counted, not replayed.

flags:
  --policy FILE         the proposed policy (required)
  --from SOURCE         file store directory (DIR or file:DIR), postgres://… store,
                        or https://… collector URL (required)
  --since 24h|TIME      only records appended in the last duration, or since an RFC 3339 time
  --json                print the whole report as one JSON document
  --max-groups N        groups listed in text output (default 50)
  --check               exit 1 when any decision flips (for CI)
collector flags (https:// SOURCE; your workload needs role audit-reader):
  --cert FILE           your certificate chain (PEM)
  --key FILE            your private key (PEM)
  --trust FILE          trust bundle (PEM)
  --collector-id ID     SPIFFE ID the collector must present
  --page-size N         records per GET /v1/events page, at most the collector's
                        limits.queryRecords (default 1000)`,
  async run(argv) {
    const flags = parseFlags(
      argv,
      {
        policy: { type: 'string' },
        from: { type: 'string' },
        since: { type: 'string' },
        json: { type: 'boolean' },
        'max-groups': { type: 'string' },
        check: { type: 'boolean' },
        cert: { type: 'string' },
        key: { type: 'string' },
        trust: { type: 'string' },
        'collector-id': { type: 'string' },
        'page-size': { type: 'string' },
      },
      'policy replay',
    );
    const cmd = 'policy replay';
    const policy = loadPolicyFile(required(flags.policy, 'policy', cmd), undefined, '--policy');
    const from = required(flags.from, 'from', cmd);
    let since: string | undefined;
    if (flags.since !== undefined) {
      since = resolveSince(flags.since, Date.now());
      if (since === undefined)
        throw new UsageError(
          `${cmd}: --since must be a duration (24h, 7d) or an RFC 3339 time, not "${flags.since}"`,
        );
    }
    const maxGroups = flags['max-groups'] ?? '50';
    if (!/^[1-9][0-9]{0,5}$/.test(maxGroups))
      throw new UsageError(`${cmd}: --max-groups must be a positive integer`);
    const remote = from.startsWith('https://');
    if (!remote && /^[a-z][a-z0-9+.-]*:\/\//i.test(from) && !/^postgres(ql)?:\/\//.test(from))
      throw new UsageError(`${cmd}: --from must be a store directory, file:DIR, postgres://… or https://…`);
    if (!remote)
      for (const f of ['cert', 'key', 'trust', 'collector-id', 'page-size'] as const)
        if (flags[f] !== undefined)
          throw new UsageError(`${cmd}: --${f} is only for an https:// collector --from`);
    const pageSize = flags['page-size'] ?? '1000';
    if (!/^[1-9][0-9]{0,5}$/.test(pageSize) || Number(pageSize) > 100_000)
      throw new UsageError(`${cmd}: --page-size must be an integer from 1 to 100000`);
    let source;
    try {
      source = await openDecisionSource(from, {
        service: policy.service,
        ...(since !== undefined ? { since } : {}),
        ...(remote
          ? {
              tls: {
                cert: required(flags.cert, 'cert', cmd),
                key: required(flags.key, 'key', cmd),
                trustBundle: required(flags.trust, 'trust', cmd),
              },
              collectorId: required(flags['collector-id'], 'collector-id', cmd),
              pageSize: Number(pageSize),
            }
          : {}),
      });
    } catch (err) {
      if (err instanceof TypeError) throw new UsageError(`${cmd}: --from ${err.message}`);
      throw err;
    }
    try {
      const report = await replayDecisions(policy, source.records, since !== undefined ? { since } : {});
      console.log(flags.json ? JSON.stringify(report) : formatReplayReport(report, Number(maxGroups)));
      return flags.check && report.groups.length > 0 ? 1 : 0;
    } finally {
      await source.close();
    }
  },
};

/** `portcullis policy test|explain|lint|replay`. */
export const commands: readonly CliCommand[] = [test, explain, lint, replay];
