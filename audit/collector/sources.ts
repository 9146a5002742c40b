// The sources the collector has heard from since it started (decision 0096): per source (the
// verified peer's SPIFFE ID, never a name the client chose), when its last batch and its last
// spool report arrived, and that report. In memory, bounded: past `max` sources the one heard
// from least recently is forgotten. Served by `GET /v1/sources`.
import type { SpoolReport } from '../spool-report.ts';

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
  /** The backlog of the latest report is above the one of the report before. */
  readonly backlogGrowing: boolean;
  /** Nothing arrived for {@link STALE_AFTER_INTERVALS} of the source's interval (or of the default one). */
  readonly stale: boolean;
}

interface Entry {
  readonly source: string;
  readonly firstSeen: number;
  lastSeen: number;
  lastBatch: number | undefined;
  batches: number;
  events: number;
  report: SpoolReport | undefined;
  reportAt: number;
  previousPending: number | undefined;
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
      const interval = e.report?.intervalMs ?? this.#o.defaultIntervalMs;
      return {
        source: e.source,
        firstSeen: iso(e.firstSeen),
        lastSeen: iso(e.lastSeen),
        lastBatch: e.lastBatch === undefined ? null : iso(e.lastBatch),
        batches: e.batches,
        events: e.events,
        report: e.report ? { ...e.report, receivedAt: iso(e.reportAt) } : null,
        backlogGrowing:
          e.report !== undefined && e.previousPending !== undefined && e.report.pending > e.previousPending,
        stale: now - e.lastSeen > STALE_AFTER_INTERVALS * interval,
      };
    });
  }

  #keep(e: Entry, report: SpoolReport): void {
    e.previousPending = e.report?.pending;
    e.report = report;
    e.reportAt = e.lastSeen;
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
        previousPending: undefined,
      };
    }
    e.lastSeen = now;
    this.#entries.set(source, e);
    return e;
  }
}
