// Where a process's resident memory is, from Linux /proc: the total, and by mapping.
import { readFileSync } from 'node:fs';

const mb = (kb: number) => Math.round(kb / 102.4) / 10;

/** Resident set size in MB (VmRSS), 0 when the process is gone. */
export function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? mb(Number(m[1])) : 0;
  } catch {
    return 0;
  }
}

/** The figures of /proc/PID/smaps_rollup, in MB: Rss, Pss, Pss_Anon, Pss_File, Private_Dirty, … */
export function smapsRollup(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').split('\n')) {
    const m = /^(\w+):\s+(\d+) kB/.exec(line);
    if (m) out[m[1]!] = mb(Number(m[2]));
  }
  return out;
}

/**
 * Resident MB by mapping, from /proc/PID/smaps: file-backed mappings by file name (`node` is the
 * binary's own pages), `[heap]` (malloc), `[stack]`, and anonymous mappings as `[anon]` (the V8
 * heap, the wasm of undici's HTTP parser, thread stacks). Largest first.
 */
export function rssByMapping(pid: number): Record<string, number> {
  const kb: Record<string, number> = {};
  let current = '[anon]';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const name = head[1] || '[anon]';
      current = name.startsWith('/') ? name.slice(name.lastIndexOf('/') + 1) : name;
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) kb[current] = (kb[current] ?? 0) + Number(rss[1]);
  }
  return Object.fromEntries(
    Object.entries(kb)
      .filter(([, v]) => v >= 256)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => [k, mb(v)]),
  );
}
