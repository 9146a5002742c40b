import { setFlagsFromString } from 'node:v8';

let tuned = false;

/**
 * How far V8 lets the old generation grow past what the last full collection left before the next
 * one: 200 % more, a factor of 3 (decision 0102).
 */
export const HEAP_GROWING_PERCENT = 200;

/**
 * Sets the sidecar's start-up garbage-collector flag for this process, once: allocation-site
 * pretenuring off (decision 0035). Under proxy load the objects of in-flight requests (sockets'
 * parsers, headers, promises) survive the first scavenges; V8 then marks their allocation sites
 * long-lived and allocates them straight into old space, which fills with garbage and is
 * mark-compacted every ~200 ms instead of every ~1 s. Which way a run goes is decided early and by
 * chance: measured, the same sidecar ran at either ~50 or ~80 µs of CPU per request. With
 * pretenuring off no measured run fell into the slow mode. NODE_OPTIONS does not accept the flag,
 * hence this call; V8 reads it at GC time, so setting it before the first request is enough.
 */
export function tuneSidecarHeap(): void {
  if (tuned) return;
  tuned = true;
  setFlagsFromString('--no-allocation-site-pretenuring');
}

/** The growing percent this process set ({@link http2InUse}), if it set one. */
let growingPercent: number | undefined;
let grown = false;

/** What {@link http2InUse} set `--heap-growing-percent` to, or undefined (not yet, or the operator's own is kept). */
export function heapGrowingPercentSet(): number | undefined {
  return growingPercent;
}

/**
 * Called when the process has opened or accepted its first HTTP/2 session: from then on the old
 * generation grows by a factor of 3 between full collections (`--heap-growing-percent=200`,
 * decision 0102). node:http2's streams outlive the scavenges of their call and die in old space;
 * under the recommended `--max-old-space-size=80` V8 picks its small-heap factor (at most 1.3) and
 * so collects each time the old generation grows by a third: ~15–20 % more CPU per gRPC call.
 * HTTP/1.1 requests die young and gain nothing from it (measured: ~10 MB more RSS after
 * saturation, no CPU), so a process whose connections are all HTTP/1.1 keeps V8's factor. Any
 * HTTP/2 session sets it: a client that negotiates `h2` with the inbound listener, an h2c call to
 * the outbound side, an h2c app, a peer sidecar reached over HTTP/2. The heap's maximum still
 * binds. An operator's own `--heap-growing-percent` on Node's command line is kept (`=0` leaves
 * V8's own behaviour); NODE_OPTIONS refuses the flag.
 */
export function http2InUse(): void {
  if (grown) return;
  grown = true;
  if (process.execArgv.some((a) => /^--?heap[-_]growing[-_]percent(=|$)/.test(a))) return;
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  growingPercent = HEAP_GROWING_PERCENT;
}
