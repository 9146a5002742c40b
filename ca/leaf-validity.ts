import { X509Certificate } from 'node:crypto';

/** Parsed validity of the chains seen last (several parts may share a process, as under `up`). */
const seen = new Map<string, { notBefore: number; notAfter: number }>();
const SEEN_MAX = 16;

/**
 * Readiness check of a part's own certificate: `undefined` while the leaf (the first certificate
 * of `chainPem`) is within its validity at `nowMs`, else why not. Parses are cached per chain, so
 * a probe every few seconds costs a map lookup.
 */
export function leafValidityProblem(chainPem: string, nowMs: number): string | undefined {
  let v = seen.get(chainPem);
  if (!v) {
    const leaf = new X509Certificate(chainPem);
    v = { notBefore: Date.parse(leaf.validFrom), notAfter: Date.parse(leaf.validTo) };
    if (seen.size >= SEEN_MAX) seen.delete(seen.keys().next().value!);
    seen.set(chainPem, v);
  }
  if (nowMs < v.notBefore) return `not valid before ${new Date(v.notBefore).toISOString()}`;
  if (nowMs >= v.notAfter) return `expired at ${new Date(v.notAfter).toISOString()}`;
  return undefined;
}
