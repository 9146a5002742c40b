// The alert rules and the Grafana dashboard (deploy/observability): promtool checks the rules and runs
// their unit tests; every series and label the rules and the dashboard's PromQL name is one the code
// exports, read from the parts' real metric registries (not from a list kept by hand); the
// thresholds agree with the configs they watch over.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parser } from '@prometheus-io/lezer-promql';
import type { SyntaxNode } from '@lezer/common';
import { Registry } from 'prom-client';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { createAuditClient } from '../../audit/index.ts';
import { createCollectorMetrics } from '../../audit/collector/metrics.ts';
import { loadSidecarConfig } from '../../sidecar/index.ts';
import { createSidecarMetrics } from '../../sidecar/metrics.ts';
import { createStsMetrics, loadStsConfig } from '../../sts/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';

const ROOT = process.cwd();
const DIR = join(ROOT, 'deploy', 'observability');
const RULES = join(DIR, 'prometheus-rules.yaml');
const RULE_TESTS = join(DIR, 'prometheus-rules.test.yaml');
const DASHBOARD = join(DIR, 'grafana-dashboard.json');

/** Labels Prometheus adds to every series it scrapes (static and Kubernetes service discovery). */
const TARGET_LABELS = ['job', 'instance', 'namespace', 'pod', 'container', 'service', 'endpoint'];

function promtool(args: string[], cwd = DIR) {
  const r = spawnSync('promtool', args, { cwd, encoding: 'utf8', timeout: 30_000 });
  assert.equal(
    r.error,
    undefined,
    `promtool could not run (CI installs Debian's prometheus): ${r.error?.message}`,
  );
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}` };
}

// ───────────────────────── what the code exports ─────────────────────────

/** Series name → label names, for every series the parts export. */
type Exported = Map<string, Set<string>>;

async function addRegistry(out: Exported, registry: Registry): Promise<void> {
  const declared = new Map(
    registry.getMetricsAsArray().map((m) => {
      const names = (m as unknown as { labelNames?: unknown }).labelNames;
      return [(m as unknown as { name: string }).name, Array.isArray(names) ? (names as string[]) : []];
    }),
  );
  for (const m of await registry.getMetricsAsJSON()) {
    const type = String(m.type); // prom-client's MetricType enum holds the exposition type names
    const labels = new Set<string>(declared.get(m.name) ?? []);
    for (const v of m.values)
      for (const l of Object.keys(v.labels)) if (l !== 'le' && l !== 'quantile') labels.add(l);
    const series =
      type === 'histogram'
        ? [`${m.name}_bucket`, `${m.name}_sum`, `${m.name}_count`]
        : type === 'summary'
          ? [m.name, `${m.name}_sum`, `${m.name}_count`]
          : [m.name];
    for (const s of series) {
      const set = out.get(s) ?? new Set<string>();
      for (const l of labels) set.add(l);
      if (s.endsWith('_bucket') && type === 'histogram') set.add('le');
      if (type === 'summary' && s === m.name) set.add('quantile');
      out.set(s, set);
    }
  }
}

/** The metrics of the STS, the collector, the sidecar and the audit client, from their own code. */
async function exportedSeries(pki: TestPki, spoolDir: string): Promise<Exported> {
  const out: Exported = new Map();
  await addRegistry(out, createStsMetrics(new Registry(), true).registry);
  await addRegistry(
    out,
    createCollectorMetrics({ size: () => 0, checkpointSize: () => 0 }, new Registry(), true).registry,
  );
  const zero = () => ({ reloads: 0, failures: 0 });
  const sidecar = createSidecarMetrics({
    policy: zero,
    tls: zero,
    jwks: () => ({ fetches: 0, failures: 0, ageMs: 0 }),
    revocations: () => ({ failures: 0 }),
    tokens: () => ({ fetches: 0, failures: 0 }),
  });
  // Series with labels appear once observed: one of each, so that their labels are seen too.
  sidecar.record('deny', 'ERR_SIDECAR_POLICY_DENIED', 'default-deny');
  sidecar.upstream('inbound', 'app')(0.01);
  await addRegistry(out, sidecar.registry);
  // The audit client registers on the registry of the part that hosts it (STS, sidecar).
  const clientRegistry = new Registry();
  const leaf = pki.leaf('sts');
  const client = createAuditClient({
    url: 'https://127.0.0.1:9/',
    tls: { cert: leaf.certFile, key: leaf.keyFile, trustBundle: pki.rootFile },
    collectorId: 'spiffe://example.org/ns/portcullis/sa/audit',
    spoolDir,
    spoolMaxBytes: 1 << 20,
    failMode: 'open',
    metricsRegistry: clientRegistry,
  });
  try {
    await addRegistry(out, clientRegistry);
  } finally {
    await client.close();
  }
  // Prometheus' own series for every target.
  out.set('up', new Set());
  return out;
}

// ───────────────────────── PromQL ─────────────────────────

interface Selector {
  readonly name: string | undefined;
  readonly labels: string[];
}

const text = (expr: string, n: SyntaxNode) => expr.slice(n.from, n.to);

function selectorsUnder(expr: string, node: SyntaxNode): Selector[] {
  const out: Selector[] = [];
  const cursor = node.cursor();
  do {
    if (cursor.name === 'VectorSelector') {
      const sel = cursor.node;
      const id = sel.getChild('Identifier');
      const labels: string[] = [];
      const c2 = sel.cursor();
      do if (c2.name === 'LabelName') labels.push(text(expr, c2.node));
      while (c2.next() && c2.from < sel.to);
      out.push({ name: id ? text(expr, id) : undefined, labels });
    }
  } while (cursor.next() && cursor.from < node.to);
  return out;
}

/**
 * The problems of one PromQL expression: syntax errors, series the code does not export, selectors
 * without a metric name, and label names (in matchers and in by/without/on/ignoring) that none of
 * the series involved carries.
 */
function promqlProblems(expr: string, exported: Exported): string[] {
  const problems: string[] = [];
  const tree = parser.parse(expr);
  const top = tree.topNode;
  tree.iterate({
    enter(ref) {
      if (ref.type.isError)
        problems.push(`syntax error at ${ref.from}: "${expr.slice(ref.from, ref.from + 20)}"`);
      if (ref.name === 'VectorSelector') {
        const [sel] = selectorsUnder(expr, ref.node);
        if (!sel?.name) problems.push(`a selector without a metric name: ${text(expr, ref.node)}`);
        else if (!exported.has(sel.name)) problems.push(`${sel.name} is not a series the code exports`);
        else {
          const known = exported.get(sel.name)!;
          for (const l of sel.labels)
            if (l === '__name__') problems.push(`${sel.name}: select by metric name, not __name__`);
            else if (!known.has(l) && !TARGET_LABELS.includes(l))
              problems.push(`${sel.name} has no label "${l}"`);
        }
      }
      if (ref.name === 'GroupingLabels') {
        // The labels grouped on must exist on some series of the enclosing aggregation or operation.
        let scope: SyntaxNode | null = ref.node.parent;
        while (scope && scope.name !== 'AggregateExpr' && scope.name !== 'BinaryExpr') scope = scope.parent;
        const series = selectorsUnder(expr, scope ?? top);
        const known = new Set(series.flatMap((s) => [...(exported.get(s.name ?? '') ?? [])]));
        for (const l of ref.node.getChildren('LabelName').map((n) => text(expr, n)))
          if (!known.has(l) && !TARGET_LABELS.includes(l))
            problems.push(
              `"${l}" in ${text(expr, ref.node.parent!)} is a label of none of ${series.map((s) => s.name).join(', ')}`,
            );
      }
    },
  });
  return problems;
}

/** Grafana's variables, replaced by values Prometheus accepts, so that promtool can check the query. */
const unGrafana = (expr: string) =>
  expr.replaceAll('$__rate_interval', '5m').replaceAll('$__interval', '1m').replaceAll('$__range', '1h');

// ───────────────────────── files ─────────────────────────

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const rules = (
  parseYaml(readFileSync(RULES, 'utf8')) as { groups: { name: string; rules: Rule[] }[] }
).groups.flatMap((g) => g.rules);
const alerts = rules.filter((r) => r.alert);

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: { refId: string; expr: string; datasource?: { uid: string } }[];
  panels?: Panel[];
}
const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
  uid: string;
  title: string;
  schemaVersion: number;
  templating: { list: { name: string; type: string; query: string }[] };
  panels: Panel[];
};
const allPanels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const queries = allPanels.flatMap((p) =>
  (p.targets ?? []).map((t) => ({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr })),
);

// ───────────────────────── tests ─────────────────────────

let pki: TestPki;
let tmp: string;
let exported: Exported;

before(async () => {
  pki = await makeTestPki();
  tmp = mkdtempSync(join(tmpdir(), 'portcullis-observability-'));
  exported = await exportedSeries(pki, join(tmp, 'spool'));
});
after(() => {
  pki?.cleanup();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('deploy/observability/prometheus-rules.yaml', () => {
  it('passes promtool check rules', () => {
    const r = promtool(['check', 'rules', RULES]);
    assert.ok(r.ok, r.out);
    assert.match(r.out, new RegExp(`SUCCESS: ${rules.length} rules found`));
  });

  it('passes its unit tests (promtool test rules), which fire every alert and keep each silent on healthy series', () => {
    const r = promtool(['test', 'rules', RULE_TESTS]);
    assert.ok(r.ok, r.out);
    const cases = (
      parseYaml(readFileSync(RULE_TESTS, 'utf8')) as {
        tests: { alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[];
      }
    ).tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const a of alerts) {
      assert.ok(
        cases.some((c) => c.alertname === a.alert && c.exp_alerts.length > 0),
        `${a.alert} is never fired`,
      );
      assert.ok(
        cases.some((c) => c.alertname === a.alert && c.exp_alerts.length === 0),
        `${a.alert} is never shown silent`,
      );
    }
  });

  it('holds the alerts an operator needs, each with a severity, a summary and a description', () => {
    const names = alerts.map((a) => a.alert);
    for (const needed of [
      'PortcullisTargetDown',
      'PortcullisStsTokenRefusals',
      'PortcullisSidecarDenyRate',
      'PortcullisAuditEventsLost',
      'PortcullisAuditSpoolGrowing',
      'PortcullisAuditCheckpointLag',
      'PortcullisJwksStale',
      'PortcullisCertificateReloadFailures',
      'PortcullisStsKeyNotRotated',
      'PortcullisUpstreamLatencyHigh',
    ])
      assert.ok(names.includes(needed), needed);
    assert.equal(new Set(names).size, names.length, 'alert names are unique');
    for (const a of alerts) {
      assert.ok(['warning', 'critical'].includes(a.labels?.severity ?? ''), `${a.alert}: severity`);
      assert.ok(a.annotations?.summary && a.annotations.description, `${a.alert}: summary and description`);
    }
  });

  it('names only series and labels the code exports', () => {
    const problems = rules.flatMap((r) =>
      promqlProblems(r.expr, exported).map((p) => `${r.alert ?? r.record}: ${p}`),
    );
    assert.deepEqual(problems, []);
  });

  it("warns before the sidecars' JWKS goes stale, and only after the key rotation is overdue", () => {
    const jwks = Number(
      /portcullis_sidecar_jwks_age_seconds > (\d+)/.exec(
        alerts.find((a) => a.alert === 'PortcullisJwksStale')!.expr,
      )?.[1],
    );
    const keyAge = Number(
      /> (\d+)\s*$/.exec(alerts.find((a) => a.alert === 'PortcullisStsKeyNotRotated')!.expr.trim())?.[1],
    );
    const sidecars = [
      'deploy/kubernetes/config/sidecar-orders.yaml',
      'config/compose/sidecar-orders.yaml',
      'config/compose/sidecar-web.yaml',
    ];
    for (const f of sidecars) {
      const c = loadSidecarConfig(join(ROOT, f));
      assert.ok(jwks * 1000 < c.sts.jwksMaxStale, `${f}: JWKS alert at ${jwks}s is not before jwksMaxStale`);
      assert.ok(
        jwks * 1000 > 2 * c.sts.jwksRefresh,
        `${f}: JWKS alert at ${jwks}s fires within two refreshes`,
      );
    }
    for (const f of ['deploy/kubernetes/config/sts.yaml', 'config/compose/sts.yaml']) {
      const c = loadStsConfig(join(ROOT, f));
      assert.ok(
        keyAge * 1000 > c.keys.rotationPeriod,
        `${f}: key-age alert at ${keyAge}s is within rotationPeriod`,
      );
      assert.ok(
        keyAge * 1000 <= 1.25 * c.keys.rotationPeriod,
        `${f}: key-age alert at ${keyAge}s is far past rotationPeriod`,
      );
    }
  });
});

describe('deploy/observability/grafana-dashboard.json', () => {
  it('is a Grafana dashboard with a Prometheus data source variable, every panel on it', () => {
    assert.equal(typeof dashboard.uid, 'string');
    assert.ok(dashboard.title && Number.isInteger(dashboard.schemaVersion));
    const ds = dashboard.templating.list.find((v) => v.type === 'datasource');
    assert.equal(ds?.query, 'prometheus');
    const ids = allPanels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
    for (const p of allPanels) {
      assert.ok(p.gridPos && p.gridPos.x + p.gridPos.w <= 24, `${p.title}: gridPos within 24 columns`);
      if (p.type === 'row') continue;
      assert.equal(p.datasource?.uid, `\${${ds!.name}}`, `${p.title}: data source`);
      assert.ok(p.targets?.length, `${p.title}: no query`);
      const refIds = p.targets.map((t) => t.refId);
      assert.equal(new Set(refIds).size, refIds.length, `${p.title}: refIds unique`);
    }
    assert.ok(queries.length >= 20, `${queries.length} queries`);
  });

  it('has queries that parse (promtool) and name only series and labels the code exports', () => {
    const file = join(tmp, 'dashboard-queries.yaml');
    const asRules = queries.map((q, i) => ({ record: `dashboard:query_${i}`, expr: unGrafana(q.expr) }));
    writeFileSync(file, stringifyYaml({ groups: [{ name: 'dashboard', rules: asRules }] }));
    const r = promtool(['check', 'rules', file]);
    assert.ok(r.ok, r.out);
    const problems = queries.flatMap((q) =>
      promqlProblems(unGrafana(q.expr), exported).map((p) => `${q.where}: ${p}`),
    );
    assert.deepEqual(problems, []);
  });
});

describe('the name check', () => {
  const cases: [string, string, RegExp][] = [
    [
      'an unknown series',
      'rate(portcullis_sts_tokens_minted_total[5m])',
      /portcullis_sts_tokens_minted_total is not a series the code exports/,
    ],
    [
      "a histogram's base name",
      'portcullis_sidecar_upstream_duration_seconds > 1',
      /portcullis_sidecar_upstream_duration_seconds is not a series/,
    ],
    [
      'a label the series lacks',
      'portcullis_sts_key_age_seconds{status="current"}',
      /portcullis_sts_key_age_seconds has no label "status"/,
    ],
    [
      'grouping by a label none carries',
      'sum by (reason) (rate(portcullis_sts_key_rotations_total[5m]))',
      /"reason" in .* is a label of none of portcullis_sts_key_rotations_total/,
    ],
    ['a selector by __name__ only', '{__name__=~"portcullis_.*"}', /a selector without a metric name/],
    ['a syntax error', 'sum(rate(portcullis_sts_tokens_issued_total[5m])', /syntax error/],
  ];
  for (const [name, expr, expected] of cases)
    it(`refuses ${name}`, () => {
      const problems = promqlProblems(expr, exported);
      assert.ok(
        problems.some((p) => expected.test(p)),
        `expected ${expected}, got ${JSON.stringify(problems)}`,
      );
    });

  it('accepts the series of each part, histogram series and target labels', () => {
    for (const expr of [
      'histogram_quantile(0.99, sum by (le, route) (rate(portcullis_sidecar_upstream_duration_seconds_bucket{side="inbound"}[5m])))',
      'sum by (job, instance) (portcullis_audit_spool_depth)',
      'portcullis_audit_checkpoint_lag_records',
      'up{job="portcullis-sts"} == 0',
    ])
      assert.deepEqual(promqlProblems(expr, exported), [], expr);
  });
});
