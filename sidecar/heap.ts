import { setFlagsFromString } from 'node:v8';

let tuned = false;

/**
 * Turns off V8's allocation-site pretenuring for this process (decision 0035). Under proxy load
 * the objects of in-flight requests (sockets' parsers, headers, promises) survive the first
 * scavenges; V8 then marks their allocation sites long-lived and allocates them straight into
 * old space, which fills with garbage and is mark-compacted every ~200 ms instead of every ~1 s.
 * Which way a run goes is decided early and by chance: measured, the same sidecar ran at either
 * ~50 or ~80 µs of CPU per request. With pretenuring off no measured run fell into the slow mode.
 * The flag is read at GC time, so setting it once at start-up is enough; NODE_OPTIONS does not
 * accept it, hence this call rather than a documented command-line flag.
 */
export function disableAllocationSitePretenuring(): void {
  if (tuned) return;
  tuned = true;
  setFlagsFromString('--no-allocation-site-pretenuring');
}
