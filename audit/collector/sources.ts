// The sources the collector has heard from since it started (decision 0096): per source (the
// verified peer's SPIFFE ID, never a name the client chose), when its last batch and its last
// spool report arrived, and that report. In memory, bounded: past `max` sources the one heard
// from least recently is forgotten. Served by `GET /v1/sources`.
import type { SpoolReport, SpoolState } from '../spool-report.ts';

/** A source is stale when nothing arrived from it for this many of its reporting intervals. */
export const STALE_AFTER_INTERVALS = 3;

/** One source as `GET /v1/sources` shows it. */
export interface SourceView {
  readonly source: string;
  /** RFC 3339: when the collector first heard from it since it started. */
  readonly firstSeen: string;
  /** RFC 3339: the last batch or report. */
  readonly lastSeen: string;
  /** RFC 3339: the last batch of events, or null (only reports so far). */
  readonly lastBatch: string | null;
  /** Batches and events received since the collector started (replays included). */
  readonly batches: number;
  readonly events: number;
  /** The latest spool report, with when it arrived; null from a client that sends none. */
  readonly report: (SpoolReport & { readonly receivedAt: string }) | null;
  /**
   * The backlog is above what it was at least one reporting interval before, and its oldest event
   * has waited longer than an interval (a batch in flight under steady traffic is no growth).
   */
  readonly backlogGrowing: boolean;
  /** Nothing arrived for {@link STALE_AFTER_INTERVALS} of the source's interval (or of the default one). */
  readonly stale: boolean;
  /**
   * Why the source needs a look, empty when it does not: `stale`, `N missing`, `N lost`,
   * `backlog growing`, `spool retrying|full|unwritable`. What the console and
   * `portcullis audit sources` show and `--check` tests.
   */
  readonly attention: readonly string[];
}

/** Spool states that need a look. */
const TROUBLED_STATES: readonly SpoolState[] = ['retrying', 'full', 'unwritable'];

interface Entry {
  readonly source: string;
  readonly firstSeen: number;
  lastSeen: number;
  lastBatch: number | undefined;
  batches: number;
  events: number;
  report: SpoolReport | undefined;
  reportAt: number;
  /** A report at least one interval older than the latest, to judge growth against. */
  baseline: { readonly pending: number; readonly at: number } | undefined;
  growing: boolean;
}

export interface SourceRegistryOptions {
  /** Most sources kept (the least recently heard from is dropped past it). */
  readonly max: number;
  /** Interval assumed for a source that sends no reports (ms). */
  readonly defaultIntervalMs: number;
  readonly clock: () => Date;
}

export class SourceRegistry {
  readonly #o: SourceRegistryOptions;
  /** In order of last contact, oldest first (an entry is moved to the end when heard from). */
  readonly #entries = new Map<string, Entry>();
  #dropped = 0;

  constructor(options: SourceRegistryOptions) {
    if (!Number.isSafeInteger(options.max) || options.max < 1)
      throw new TypeError('"max" must be a positive integer');
    this.#o = options;
  }

  /** The interval assumed for a source that sends no reports (ms). */
  get defaultIntervalMs(): number {
    return this.#o.defaultIntervalMs;
  }

  /** Sources forgotten because there were more than `max`. */
  get dropped(): number {
    return this.#dropped;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** A batch of `events` arrived from `source`, with its report if it carried a valid one. */
  sawBatch(source: string, events: number, report?: SpoolReport): void {
    const e = this.#touch(source);
    e.lastBatch = e.lastSeen;
    e.batches++;
    e.events += events;
    if (report) this.#keep(e, report);
  }

  /** A report arrived from `source` on its own. */
  sawReport(source: string, report: SpoolReport): void {
    this.#keep(this.#touch(source), report);
  }

  /** Every source kept, most recently heard from first. */
  list(): SourceView[] {
    const now = this.#o.clock().getTime();
    const iso = (ms: number) => new Date(ms).toISOString();
    return [...this.#entries.values()].reverse().map((e) => {
      const r = e.report;
      const interval = r?.intervalMs ?? this.#o.defaultIntervalMs;
      const stale = now - e.lastSeen > STALE_AFTER_INTERVALS * interval;
      const backlogGrowing =
        r !== undefined && e.growing && r.pending > 0 && r.oldestPendingMs > r.intervalMs;
      const attention: string[] = [];
      if (stale) attention.push('stale');
      if (r && r.missing > 0) attention.push(`${r.missing} missing`);
      if (r && r.lost > 0) attention.push(`${r.lost} lost`);
      if (backlogGrowing) attention.push('backlog growing');
      if (r && TROUBLED_STATES.includes(r.state)) attention.push(`spool ${r.state}`);
      return {
        source: e.source,
        firstSeen: iso(e.firstSeen),
        lastSeen: iso(e.lastSeen),
        lastBatch: e.lastBatch === undefined ? null : iso(e.lastBatch),
        batches: e.batches,
        events: e.events,
        report: r ? { ...r, receivedAt: iso(e.reportAt) } : null,
        backlogGrowing,
        stale,
        attention,
      };
    });
  }

  #keep(e: Entry, report: SpoolReport): void {
    e.report = report;
    e.reportAt = e.lastSeen;
    // Growth is judged against the backlog of one interval before, not of the last batch: under
    // steady traffic every batch's `pending` goes up and down.
    if (!e.baseline) e.baseline = { pending: report.pending, at: e.lastSeen };
    else if (e.lastSeen - e.baseline.at >= report.intervalMs) {
      e.growing = report.pending > e.baseline.pending;
      e.baseline = { pending: report.pending, at: e.lastSeen };
    }
  }

  #touch(source: string): Entry {
    const now = this.#o.clock().getTime();
    let e = this.#entries.get(source);
    if (e) this.#entries.delete(source);
    else {
      while (this.#entries.size >= this.#o.max) {
        this.#entries.delete(this.#entries.keys().next().value!);
        this.#dropped++;
      }
      e = {
        source,
        firstSeen: now,
        lastSeen: now,
        lastBatch: undefined,
        batches: 0,
        events: 0,
        report: undefined,
        reportAt: 0,
        baseline: undefined,
        growing: false,
      };
    }
    e.lastSeen = now;
    this.#entries.set(source, e);
    return e;
  }
}
