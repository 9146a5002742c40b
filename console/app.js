// The console's page script: plain ES modules, no build step. Every number shown comes from the
// collector's query API, relayed by the console server under /api/ (docs/console.md). Record
// content is attacker-influenced (paths, subjects): it is only ever set as text, never as HTML.
import uPlot from '/vendor/uPlot.esm.js';
import cytoscape from '/vendor/cytoscape.esm.min.mjs';

const $ = (sel) => document.querySelector(sel);
const PAGE_SIZE = 50;
const RANGES = { '15m': 15 * 60e3, '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3 };

/** An RFC 3339 instant `range` ago, or undefined for "all". */
function sinceOf(range) {
  return RANGES[range] ? new Date(Date.now() - RANGES[range]).toISOString() : undefined;
}

/** Aggregate bucket width for a range: at most a few hundred points per chart. */
function intervalOf(range) {
  const ms = RANGES[range] ?? RANGES['7d'];
  return ms <= 3600e3 ? '1m' : ms <= 86400e3 ? '1h' : '1d';
}

/** `spiffe://example.org/ns/shop/sa/orders` → `orders`. */
function shortId(id) {
  if (typeof id !== 'string') return '';
  const m = /\/sa\/([^/]+)$/.exec(id);
  return m ? m[1] : id.replace(/^spiffe:\/\//, '');
}

function showError(message) {
  const el = $('#error');
  el.textContent = message;
  el.hidden = !message;
}

/** GET/POST a console API route; a non-2xx answer becomes an Error with the server's message. */
async function api(path, options = {}) {
  const res = await fetch(path, {
    ...options,
    headers: options.body ? { 'content-type': 'application/json' } : {},
    credentials: 'same-origin',
  });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = { message: text };
  }
  if (!res.ok) throw new Error(`${body.message ?? res.statusText}${body.error ? ` [${body.error}]` : ''}`);
  return body;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
  return q.toString();
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text ?? '';
  if (className) td.className = className;
  return td;
}

// ---------------------------------------------------------------------------------------------
// Audit log

const audit = { next: null, tail: null, lastSeq: null, shown: 0 };

function auditFilters() {
  const f = new FormData($('#filters'));
  // From/To (local time in the browser) win over the preset range.
  const instant = (v) => (v ? new Date(v).toISOString() : undefined);
  return {
    since: instant(f.get('from')) ?? sinceOf(f.get('range')),
    until: instant(f.get('to')),
    type: f.get('type').trim(),
    source: f.get('source').trim(),
    subject: f.get('subject').trim(),
    decision: f.get('decision'),
    rule: f.get('rule').trim(),
  };
}

function recordRow(record, prepend) {
  const body = $('#events tbody');
  const row = prepend ? body.insertRow(0) : body.insertRow();
  const e = record.event;
  row.dataset.seq = String(record.seq);
  row.dataset.decision = e.decision ?? '';
  cell(row, String(record.seq), 'num');
  cell(row, record.time);
  cell(row, e.type);
  cell(row, shortId(e.source)).title = e.source ?? '';
  cell(row, shortId(e.subject)).title = e.subject ?? '';
  cell(row, e.action);
  cell(row, e.decision, e.decision === 'deny' ? 'deny' : e.decision === 'allow' ? 'allow' : '');
  cell(row, e.rule);
  cell(row, e.reason);
  row.addEventListener('click', () => showDetail(record));
  audit.shown++;
  return row;
}

function showCount() {
  const n = audit.shown;
  $('#events-count').textContent =
    `${n} record${n === 1 ? '' : 's'} shown${audit.next ? ' (older ones below)' : ''}`;
}

async function loadEvents(more) {
  showError('');
  if (!more) {
    $('#events tbody').replaceChildren();
    audit.shown = 0;
    audit.next = null;
  }
  const params = {
    ...auditFilters(),
    order: 'desc',
    limit: PAGE_SIZE,
    cursor: more ? audit.next : undefined,
  };
  try {
    const page = await api(`/api/events?${query(params)}`);
    for (const r of page.records) recordRow(r, false);
    if (!more && page.records.length) audit.lastSeq = page.records[0].seq;
    audit.next = page.next ?? null;
    $('#older').hidden = audit.next === null;
    showCount();
    document.body.dataset.eventsLoaded = String(Date.now());
  } catch (err) {
    showError(`audit log: ${err.message}`);
  }
}

function stopTail() {
  if (audit.tail) audit.tail.close();
  audit.tail = null;
  $('#tail-state').textContent = '';
}

function startTail() {
  stopTail();
  const filters = auditFilters();
  // A tail starts at the end of the log: a time range does not apply to it.
  delete filters.since;
  delete filters.until;
  const es = new EventSource(`/api/events/stream?${query(filters)}`);
  audit.tail = es;
  $('#tail-state').textContent = 'connecting…';
  es.addEventListener('open', () => ($('#tail-state').textContent = 'live'));
  es.addEventListener('record', (msg) => {
    const record = JSON.parse(msg.data);
    // The first page may already hold it (the stream starts at the tail of the log).
    if (audit.lastSeq !== null && record.seq <= audit.lastSeq) return;
    audit.lastSeq = record.seq;
    recordRow(record, true).classList.add('live');
    showCount();
  });
  es.addEventListener('error', () => {
    // EventSource reconnects by itself, sending Last-Event-ID; closed means it gave up.
    $('#tail-state').textContent = es.readyState === EventSource.CLOSED ? 'stopped' : 'reconnecting…';
  });
}

async function showDetail(record) {
  $('#detail').hidden = false;
  $('#detail-seq').textContent = String(record.seq);
  $('#detail-json').textContent = JSON.stringify(record, null, 2);
  const result = $('#proof-result');
  result.className = '';
  result.textContent = 'checking the inclusion proof…';
  try {
    const p = await api(`/api/proof?seq=${record.seq}`);
    if (p.verified) {
      result.className = 'ok';
      result.textContent = `Included: the inclusion proof (${p.proofLength} hashes) of record ${p.seq} leads to the root of the latest checkpoint (${p.checkpoint.origin}, size ${p.checkpoint.size}), whose signature checks with the collector's key. Verified in the console process.`;
    } else {
      result.className = p.pending ? 'muted' : 'bad';
      result.textContent = p.pending ? p.message : `NOT verified: ${p.message}`;
    }
  } catch (err) {
    result.className = 'bad';
    result.textContent = `proof: ${err.message}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Integrity

function fact(list, name, value, className) {
  const dt = document.createElement('dt');
  dt.textContent = name;
  const dd = document.createElement('dd');
  dd.textContent = value;
  if (className) dd.className = className;
  list.append(dt, dd);
}

function flatten(prefix, value, out) {
  if (value !== null && typeof value === 'object' && !Array.isArray(value))
    for (const [k, v] of Object.entries(value)) flatten(prefix ? `${prefix}.${k}` : k, v, out);
  else out.push([prefix, Array.isArray(value) ? JSON.stringify(value) : String(value)]);
  return out;
}

/** A duration in ms as the largest whole unit: 850 ms, 12 s, 4 min, 3 h, 2 d. */
function age(ms) {
  if (ms < 1000) return `${ms} ms`;
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['min', 60_000],
  ])
    if (ms >= size) return `${Math.floor(ms / size)} ${unit}`;
  return `${Math.floor(ms / 1000)} s`;
}

/** The audit clients' spools, as the collector's GET /v1/sources has them (decision 0096). */
async function loadSources() {
  const body = $('#sources tbody');
  const note = $('#sources-note');
  try {
    const r = await api('/api/sources');
    body.replaceChildren();
    for (const s of r.sources) {
      const row = body.insertRow();
      row.dataset.source = s.source;
      const problems = s.attention;
      if (problems.length) row.className = 'attention';
      cell(row, shortId(s.source)).title = s.source;
      cell(
        row,
        `${new Date(s.lastSeen).toLocaleTimeString()} (${age(Math.max(0, Date.now() - Date.parse(s.lastSeen)))} ago)`,
      ).title = s.lastSeen;
      const rep = s.report;
      cell(row, rep ? String(rep.pending) : '–', `num${s.backlogGrowing ? ' bad' : ''}`);
      cell(row, rep && rep.pending > 0 ? age(rep.oldestPendingMs) : '–', 'num');
      cell(row, rep ? String(rep.missing) : '–', `num${rep?.missing > 0 ? ' bad' : ''}`);
      cell(row, rep ? String(rep.lost) : '–', `num${rep?.lost > 0 ? ' bad' : ''}`);
      cell(row, rep ? rep.state : 'no reports (older client)', rep ? '' : 'muted');
      cell(row, problems.length ? problems.join(', ') : 'ok', problems.length ? 'bad' : 'ok');
    }
    const stale = r.sources.filter((s) => s.stale).length;
    note.textContent = r.sources.length
      ? `${r.sources.length} source(s) heard from since the collector started${stale ? `, ${stale} stale` : ''}; stale after ${r.staleAfterIntervals} report intervals without a word${r.dropped ? `; ${r.dropped} forgotten past the collector's limit` : ''}.`
      : 'No audit client has reported since the collector started.';
    return stale;
  } catch (err) {
    body.replaceChildren();
    note.textContent = `spools: ${err.message}`;
    return 0;
  }
}

async function loadIntegrity() {
  showError('');
  const list = $('#integrity');
  const sources = loadSources();
  try {
    const r = await api('/api/integrity');
    list.replaceChildren();
    const c = r.checkpoint;
    fact(list, 'latest checkpoint', `${c.origin}, size ${c.size}, signature verified`, 'ok');
    fact(list, 'root hash', c.rootHash);
    fact(list, 'chain head', c.chainHead);
    const k = r.consistency;
    if (!k.checked) fact(list, 'consistency', k.message, 'muted');
    else
      fact(
        list,
        'consistency',
        k.ok
          ? `the latest checkpoint extends the previous one (size ${k.previous.size}): proof of ${k.proofLength} hashes checked`
          : `INCONSISTENT with the previous checkpoint (size ${k.previous.size}): ${k.message}`,
        k.ok ? 'ok' : 'bad',
      );
    for (const [name, value] of flatten('', r.status, [])) {
      const bad = (name.endsWith('.ok') || name.endsWith('ready')) && value === 'false';
      fact(list, name, value, bad ? 'bad' : '');
    }
    const stale = await sources;
    $('#health').textContent =
      r.status?.chain?.ok === false
        ? 'chain BROKEN'
        : `log size ${c.size}${stale ? `, ${stale} audit source(s) stale` : ''}`;
  } catch (err) {
    showError(`integrity: ${err.message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Charts (uPlot)

const charts = new Map();
const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];

const INTERVAL_MS = { '1m': 60e3, '5m': 300e3, '1h': 3600e3, '1d': 86400e3 };

/**
 * One line per group (the top 8 by count) over the aggregate's time buckets, from `agg.since` to
 * `agg.until`; buckets the collector returned no group for are drawn as 0.
 */
function drawChart(id, agg, interval, label) {
  const el = $(id);
  charts.get(id)?.destroy();
  el.replaceChildren();
  const groups = agg.groups;
  if (!groups.length) {
    el.textContent = 'no records in this range';
    return;
  }
  const step = INTERVAL_MS[interval];
  const times = new Set(groups.map((g) => Date.parse(g.bucket)));
  const from = Date.parse(agg.since ?? groups[0].bucket);
  const to = Date.parse(agg.until ?? new Date().toISOString());
  if (Number.isFinite(from) && Number.isFinite(to) && (to - from) / step <= 2000)
    for (let t = Math.floor(from / step) * step; t < to; t += step) times.add(t);
  const buckets = [...times].sort((a, b) => a - b);
  const totals = new Map();
  for (const g of groups) totals.set(label(g.key), (totals.get(label(g.key)) ?? 0) + g.count);
  const names = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a)).slice(0, PALETTE.length);
  const index = new Map(buckets.map((b, i) => [b, i]));
  const series = names.map(() => buckets.map(() => 0));
  for (const g of groups) {
    const n = names.indexOf(label(g.key));
    if (n >= 0) series[n][index.get(Date.parse(g.bucket))] += g.count;
  }
  const chart = new uPlot(
    {
      width: Math.max(320, el.clientWidth || 800),
      height: 220,
      scales: { y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
      series: [
        {},
        ...names.map((n, i) => ({
          label: n,
          stroke: PALETTE[i],
          width: 2,
          paths: uPlot.paths.stepped({ align: 1 }),
        })),
      ],
      axes: [{}, { label: `per ${interval}` }],
    },
    [buckets.map((t) => t / 1000), ...series],
    el,
  );
  charts.set(id, chart);
}

async function aggregates(params) {
  return api(`/api/aggregates?${query(params)}`);
}

async function loadDecisions() {
  showError('');
  const range = new FormData($('#decisions-form')).get('range');
  const base = { type: 'authz.decision', since: sinceOf(range), interval: intervalOf(range) };
  try {
    const [bySource, byRule, byReason, totals] = await Promise.all([
      aggregates({ ...base, groupBy: 'source,decision' }),
      aggregates({ ...base, groupBy: 'rule' }),
      aggregates({ ...base, groupBy: 'reason' }),
      aggregates({ type: 'authz.decision', since: base.since, groupBy: 'source,rule,reason,decision' }),
    ]);
    drawChart('#chart-source', bySource, base.interval, (k) =>
      `${shortId(k.source)} ${k.decision ?? ''}`.trim(),
    );
    drawChart('#chart-rule', byRule, base.interval, (k) => k.rule ?? '(before the policy)');
    drawChart('#chart-reason', byReason, base.interval, (k) => k.reason ?? '(none)');
    const body = $('#decision-totals tbody');
    body.replaceChildren();
    for (const g of [...totals.groups].sort((a, b) => b.count - a.count)) {
      const row = body.insertRow();
      cell(row, shortId(g.key.source)).title = g.key.source ?? '';
      cell(row, g.key.rule);
      cell(row, g.key.reason);
      cell(row, g.key.decision, g.key.decision);
      cell(row, String(g.count), 'num');
    }
  } catch (err) {
    showError(`decisions: ${err.message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Service graph (cytoscape)

let cy = null;

/** Edges caller → deciding service, from `authz.decision` counts grouped by subject, source, decision. */
export function graphEdges(groups) {
  const edges = new Map();
  for (const g of groups) {
    const { subject, source, decision } = g.key;
    if (!subject || !source) continue;
    const id = `${subject} -> ${source}`;
    const e = edges.get(id) ?? { id, caller: subject, service: source, calls: 0, denied: 0 };
    e.calls += g.count;
    if (decision === 'deny') e.denied += g.count;
    edges.set(id, e);
  }
  return [...edges.values()].sort((a, b) => b.calls - a.calls);
}

async function loadGraph() {
  showError('');
  const range = new FormData($('#graph-form')).get('range');
  let edges;
  try {
    const agg = await aggregates({
      type: 'authz.decision',
      since: sinceOf(range),
      groupBy: 'subject,source,decision',
    });
    edges = graphEdges(agg.groups);
  } catch (err) {
    showError(`service graph: ${err.message}`);
    return;
  }
  const body = $('#edges tbody');
  body.replaceChildren();
  for (const e of edges) {
    const row = body.insertRow();
    row.dataset.caller = shortId(e.caller);
    row.dataset.service = shortId(e.service);
    cell(row, shortId(e.caller)).title = e.caller;
    cell(row, shortId(e.service)).title = e.service;
    cell(row, String(e.calls), 'num');
    cell(row, String(e.denied), 'num');
    cell(row, `${((100 * e.denied) / e.calls).toFixed(1)} %`, e.denied ? 'deny num' : 'num');
  }
  const nodes = new Set(edges.flatMap((e) => [e.caller, e.service]));
  const max = Math.max(1, ...edges.map((e) => e.calls));
  cy?.destroy();
  cy = cytoscape({
    container: $('#graph'),
    elements: [
      ...[...nodes].map((id) => ({ data: { id, label: shortId(id) } })),
      ...edges.map((e) => ({
        data: {
          id: e.id,
          source: e.caller,
          target: e.service,
          label: `${e.calls} calls, ${((100 * e.denied) / e.calls).toFixed(0)}% denied`,
          width: 1 + (7 * e.calls) / max,
          color: `rgb(${Math.round(80 + 175 * (e.denied / e.calls))}, ${Math.round(120 * (1 - e.denied / e.calls))}, 90)`,
        },
      })),
    ],
    style: [
      {
        selector: 'node',
        style: {
          label: 'data(label)',
          'background-color': '#1e3a8a',
          color: '#111',
          'text-valign': 'bottom',
        },
      },
      {
        selector: 'edge',
        style: {
          width: 'data(width)',
          'line-color': 'data(color)',
          'target-arrow-color': 'data(color)',
          'target-arrow-shape': 'triangle',
          'curve-style': 'bezier',
          label: 'data(label)',
          'font-size': 10,
          'text-rotation': 'autorotate',
        },
      },
    ],
    layout: { name: 'breadthfirst', directed: true, padding: 30, spacingFactor: 1.4 },
  });
  $('#graph').dataset.edges = edges.map((e) => `${shortId(e.caller)}->${shortId(e.service)}`).join(' ');
}

// ---------------------------------------------------------------------------------------------
// Certificates and keys

async function loadIdentity() {
  showError('');
  const since = sinceOf('7d');
  const fill = (sel, records, cols) => {
    const body = $(`${sel} tbody`);
    body.replaceChildren();
    for (const r of records) {
      const row = body.insertRow();
      cell(row, String(r.seq), 'num');
      cell(row, r.time);
      for (const c of cols) cell(row, c(r.event));
    }
  };
  const attrs = (e) =>
    Object.entries(e.attributes ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .join(' ');
  try {
    // A signing key's life in the log: created (pending publication), rotated (it signs from
    // then on), removed. The STS writes key.rotated when a published key becomes current.
    const keyTypes = ['admin.key_created', 'key.rotated', 'admin.key_removed'];
    const [certs, certBuckets, typeBuckets, ...keyPages] = await Promise.all([
      api(`/api/events?${query({ type: 'cert.issued', order: 'desc', limit: 100 })}`),
      aggregates({ type: 'cert.issued', since, interval: '1h', groupBy: 'subject' }),
      aggregates({ since, interval: '1h', groupBy: 'type' }),
      ...keyTypes.map((type) => api(`/api/events?${query({ type, order: 'desc', limit: 100 })}`)),
    ]);
    const keys = keyPages
      .flatMap((p) => p.records)
      .sort((a, b) => b.seq - a.seq)
      .slice(0, 100);
    fill('#certs', certs.records, [(e) => shortId(e.source), (e) => e.subject, (e) => e.target, attrs]);
    fill('#keys', keys, [(e) => e.type, (e) => shortId(e.source), (e) => e.target, attrs]);
    drawChart('#chart-certs', certBuckets, '1h', (k) => shortId(k.subject) || '(unknown)');
    const keyBuckets = {
      ...typeBuckets,
      groups: typeBuckets.groups.filter((g) => keyTypes.includes(g.key.type)),
    };
    drawChart('#chart-keys', keyBuckets, '1h', (k) => k.type);
  } catch (err) {
    showError(`certificates and keys: ${err.message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Policy replay

async function loadReplayServices() {
  const select = $('#replay-form select[name=service]');
  if (select.options.length) return;
  try {
    const agg = await aggregates({ type: 'authz.decision', since: sinceOf('7d'), groupBy: 'source' });
    for (const g of agg.groups) {
      if (!g.key.source) continue;
      const o = document.createElement('option');
      o.value = g.key.source;
      o.textContent = `${shortId(g.key.source)} (${g.count} decisions)`;
      select.append(o);
    }
  } catch (err) {
    showError(`services: ${err.message}`);
  }
}

function renderReplay(r) {
  const out = $('#replay-result');
  out.replaceChildren();
  const p = (text, className) => {
    const el = document.createElement('p');
    el.textContent = text;
    if (className) el.className = className;
    out.append(el);
  };
  p(
    `Replayed ${r.replayed} of ${r.considered} recorded decisions of ${r.service} against the proposed policy (${r.policyHash}).`,
  );
  p(
    `allowed→denied: ${r.allowedToDenied}   denied→allowed: ${r.deniedToAllowed}   unchanged: ${r.unchanged}   same decision, other rule: ${r.ruleChanged}`,
    r.groups.length ? 'bad' : 'ok',
  );
  for (const [why, n] of Object.entries(r.skipped)) p(`not replayed: ${n} ${why}`, 'muted');
  if (!r.groups.length) return p('No decision would change.', 'ok');
  const table = document.createElement('table');
  table.id = 'replay-groups';
  table.className = 'records';
  const head = table.createTHead().insertRow();
  for (const h of ['change', 'count', 'caller', 'method', 'path', 'rule (recorded → proposed)', 'examples'])
    head.append(Object.assign(document.createElement('th'), { textContent: h }));
  const body = table.createTBody();
  for (const g of r.groups) {
    const row = body.insertRow();
    cell(row, g.change, g.change === 'allowed→denied' ? 'deny' : 'allow');
    cell(row, String(g.count), 'num');
    cell(row, shortId(g.caller)).title = g.caller;
    cell(row, g.method);
    cell(row, g.path);
    cell(row, `${g.recordedRule} → ${g.proposedRule}`);
    cell(row, g.examples.map((x) => `seq ${x.seq} ${x.target}`).join('; '));
  }
  out.append(table);
}

async function runReplay(ev) {
  ev.preventDefault();
  showError('');
  const f = new FormData($('#replay-form'));
  $('#replay-result').textContent = 'replaying…';
  try {
    const report = await api('/api/replay', {
      method: 'POST',
      body: JSON.stringify({
        service: f.get('service'),
        policy: f.get('policy'),
        since: f.get('since') || undefined,
      }),
    });
    renderReplay(report);
  } catch (err) {
    $('#replay-result').textContent = '';
    showError(`replay: ${err.message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Navigation

const LOADERS = {
  audit: () => loadEvents(false),
  integrity: loadIntegrity,
  decisions: loadDecisions,
  graph: loadGraph,
  identity: loadIdentity,
  replay: loadReplayServices,
};

function route() {
  const name = location.hash.slice(1) in LOADERS ? location.hash.slice(1) : 'audit';
  for (const s of document.querySelectorAll('.page')) s.hidden = s.id !== `page-${name}`;
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.page === name);
  document.body.dataset.page = name;
  LOADERS[name]();
}

$('#filters').addEventListener('submit', (ev) => {
  ev.preventDefault();
  loadEvents(false).then(() => ($('#tail').checked ? startTail() : undefined));
});
$('#older').addEventListener('click', () => loadEvents(true));
$('#tail').addEventListener('change', (ev) => (ev.target.checked ? startTail() : stopTail()));
$('#integrity-refresh').addEventListener('click', loadIntegrity);
$('#decisions-form').addEventListener('change', loadDecisions);
$('#graph-form').addEventListener('change', loadGraph);
$('#replay-form').addEventListener('submit', runReplay);
$('#policy-file').addEventListener('change', async (ev) => {
  const file = ev.target.files[0];
  if (file) $('#replay-form textarea').value = await file.text();
});
window.addEventListener('hashchange', route);
route();
