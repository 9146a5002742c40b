// The audit client's spool report (decision 0096): its header form and its checks, and the
// collector's registry of sources (bounded, stale after 3 intervals, backlog trend).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  SourceRegistry,
  SpoolReportError,
  checkSpoolReport,
  formatSpoolReport,
  parseSpoolReport,
} from '../../audit/index.ts';
import type { SpoolReport } from '../../audit/index.ts';

const report: SpoolReport = {
  pending: 12,
  pendingBytes: 3456,
  oldestPendingMs: 5000,
  missing: 1,
  lost: 2,
  state: 'retrying',
  intervalMs: 30_000,
};

test('spool report: the header round-trips and reads as an RFC 8941 dictionary of integers and tokens', () => {
  const header = formatSpoolReport(report);
  assert.equal(
    header,
    'pending=12, bytes=3456, oldest=5000, missing=1, lost=2, state=retrying, interval=30000',
  );
  assert.deepEqual(parseSpoolReport(header), report);
  // Spaces are optional; a member this version does not know is skipped (a newer client).
  assert.deepEqual(parseSpoolReport(`${header.replaceAll(', ', ',')},colour=red,x-y=7`), report);
});

test('spool report: a bad header is refused with a message naming the problem', () => {
  const header = formatSpoolReport(report);
  for (const [value, why] of [
    [undefined, /no portcullis-spool header/],
    [[header, header], /given once/],
    [`${header}, pad=${'x'.repeat(600)}`, /longer than 512/],
    [header.replace('pending=12', 'pending=-1'), /not name=value/],
    [header.replace('pending=12', 'pending=1.5'), /not name=value/],
    [header.replace('pending=12', 'pending=abc'), /pending must be an integer/],
    [header.replace('pending=12', 'pending=9999999999999999'), /not name=value/],
    [`${header}, pending=3`, /pending is repeated/],
    [header.replace(', missing=1', ''), /missing is required/],
    [header.replace('state=retrying', 'state=sleepy'), /state must be one of/],
    [header.replace('state=retrying', 'state=7'), /state must be a word/],
    [header.replace('interval=30000', 'interval=10'), /intervalMs must be an integer from 1000/],
    ['pending', /not name=value/],
    ['', /not name=value/],
  ] as const)
    assert.throws(
      () => parseSpoolReport(value as string | string[] | undefined),
      (err: Error) => err instanceof SpoolReportError && why.test(err.message),
      String(value).slice(0, 80),
    );
});

test('spool report: the object form takes exactly the fields, as numbers', () => {
  assert.deepEqual(checkSpoolReport({ ...report }), report);
  for (const [raw, why] of [
    [null, /must be an object/],
    [[report], /must be an object/],
    [{ ...report, pending: '12' }, /pending must be a non-negative integer/],
    [{ ...report, lost: -1 }, /lost must be a non-negative integer/],
    [{ ...report, pendingBytes: 2 ** 53 }, /pendingBytes must be a non-negative integer/],
    [{ ...report, oldestPendingMs: undefined }, /oldestPendingMs is required/],
    [{ ...report, state: undefined }, /state is required/],
    [{ ...report, intervalMs: 2 ** 31 }, /intervalMs must be an integer/],
  ] as const)
    assert.throws(() => checkSpoolReport(raw), why);
});

function registry(max: number) {
  let now = Date.parse('2026-12-06T12:00:00Z');
  const sources = new SourceRegistry({ max, defaultIntervalMs: 30_000, clock: () => new Date(now) });
  return { sources, advance: (ms: number) => (now += ms) };
}

test('source registry: the latest report per source, last batch time, counts, most recent first', () => {
  const { sources, advance } = registry(10);
  sources.sawBatch('spiffe://t/a', 5, report);
  advance(1000);
  sources.sawReport('spiffe://t/b', { ...report, pending: 0, state: 'idle' });
  advance(1000);
  sources.sawBatch('spiffe://t/a', 3);
  const [a, b] = sources.list();
  assert.equal(a!.source, 'spiffe://t/a');
  assert.deepEqual(
    { batches: a!.batches, events: a!.events, lastBatch: a!.lastBatch, lastSeen: a!.lastSeen },
    { batches: 2, events: 8, lastBatch: '2026-12-06T12:00:02.000Z', lastSeen: '2026-12-06T12:00:02.000Z' },
  );
  // A batch without a report keeps the report before it, with when that one arrived.
  assert.deepEqual(a!.report, { ...report, receivedAt: '2026-12-06T12:00:00.000Z' });
  assert.equal(b!.source, 'spiffe://t/b');
  assert.equal(b!.lastBatch, null);
  assert.equal(b!.report!.state, 'idle');
});

test('source registry: stale after 3 of the source’s own intervals (the default one without reports)', () => {
  const { sources, advance } = registry(10);
  sources.sawReport('spiffe://t/fast', { ...report, intervalMs: 1000 });
  sources.sawBatch('spiffe://t/old-client', 1);
  advance(3000);
  assert.deepEqual(
    sources.list().map((s) => [s.source, s.stale]),
    [
      ['spiffe://t/old-client', false],
      ['spiffe://t/fast', false],
    ],
  );
  advance(1);
  assert.equal(sources.list().find((s) => s.source === 'spiffe://t/fast')!.stale, true);
  advance(87_000);
  assert.equal(sources.list().find((s) => s.source === 'spiffe://t/old-client')!.stale, true);
  // Heard from again: not stale.
  sources.sawReport('spiffe://t/fast', { ...report, intervalMs: 1000 });
  assert.equal(sources.list().find((s) => s.source === 'spiffe://t/fast')!.stale, false);
});

test('source registry: a growing backlog is flagged; past max sources the least recently heard from is dropped', () => {
  const { sources, advance } = registry(2);
  const at = (pending: number, oldestPendingMs: number): SpoolReport => ({
    ...report,
    missing: 0,
    lost: 0,
    state: 'delivering',
    intervalMs: 1000,
    pending,
    oldestPendingMs,
  });
  const a = () => sources.list().find((s) => s.source === 'spiffe://t/a')!;
  // Steady traffic: each batch leaves a few events behind, up and down within an interval.
  for (const pending of [0, 3, 0, 2, 4, 1]) {
    sources.sawBatch('spiffe://t/a', 1, at(pending, 50));
    advance(150);
    assert.equal(a().backlogGrowing, false, `pending ${pending}`);
    assert.deepEqual(a().attention, []);
  }
  // A backlog above the one of an interval before, its oldest event waiting longer than an interval.
  advance(100); // one interval after the first batch
  sources.sawBatch('spiffe://t/a', 1, at(40, 1500));
  assert.equal(a().backlogGrowing, true);
  assert.deepEqual(a().attention, ['backlog growing']);
  advance(1000);
  sources.sawBatch('spiffe://t/a', 1, at(5, 400));
  assert.equal(a().backlogGrowing, false);
  sources.sawReport('spiffe://t/a', { ...at(0, 0), missing: 2, state: 'retrying' });
  assert.deepEqual(a().attention, ['2 missing', 'spool retrying']);
  advance(1);
  sources.sawBatch('spiffe://t/b', 1);
  advance(1);
  sources.sawBatch('spiffe://t/a', 1); // a is now the most recent: b goes first
  advance(1);
  sources.sawReport('spiffe://t/c', report);
  assert.deepEqual(
    sources.list().map((s) => s.source),
    ['spiffe://t/c', 'spiffe://t/a'],
  );
  assert.equal(sources.size, 2);
  assert.equal(sources.dropped, 1);
  assert.throws(
    () => new SourceRegistry({ max: 0, defaultIntervalMs: 1000, clock: () => new Date() }),
    /max/,
  );
});
