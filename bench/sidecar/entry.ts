// Which `portcullis` entry a benchmark runs: the build (dist/, `npm run build`) or the sources.
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';

const root = new URL('../../', import.meta.url).pathname;

/**
 * V8 flags the benchmarks give the sidecar process on its command line (docs/sidecar.md; decisions
 * 0035, 0092 and 0097; `--liftoff-only` is refused in NODE_OPTIONS, the image's ENTRYPOINT has it).
 */
export const SIDECAR_NODE_OPTIONS = '--max-semi-space-size=8 --max-old-space-size=80 --liftoff-only';

/**
 * The CLI entry file of `mode`: `built` (dist/; refuses with the command to make it when missing),
 * `sources`, or the path of another entry file (to compare build variants).
 */
export function sidecarEntry(mode: string): string {
  if (mode.startsWith('/')) return mode;
  if (mode === 'sources') return `${root}cli/portcullis.ts`;
  const file = `${root}dist/cli/portcullis.js`;
  if (!existsSync(file)) throw new Error(`${file} is missing: run npm run build first`);
  return file;
}

/**
 * Bundles the benchmark's sidecar harness (sidecar-proc.ts) with the options of `npm run build`
 * (`node scripts/build.ts --harness DIR`) and returns the path of the file to run: a loader that,
 * as dist/cli/portcullis.js does for a command, turns on V8's compile cache in DIR/.compile-cache
 * (unless PORTCULLIS_COMPILE_CACHE is `off`) and then imports the bundle (decision 0107). The
 * measured process thus runs the sidecar code exactly as the build ships it, with no type
 * stripping; its first start fills the cache.
 */
export function buildHarness(outDir: string): string {
  execFileSync(process.execPath, [`${root}scripts/build.ts`, '--harness', outDir], { stdio: 'inherit' });
  const loader = `${outDir}/start.mjs`;
  writeFileSync(
    loader,
    [
      "import { enableCompileCache } from 'node:module';",
      "import { fileURLToPath } from 'node:url';",
      "if (process.env.PORTCULLIS_COMPILE_CACHE?.trim().toLowerCase() !== 'off')",
      "  enableCompileCache(fileURLToPath(new URL('./.compile-cache', import.meta.url)));",
      "await import('./sidecar-proc.js');",
      '',
    ].join('\n'),
  );
  return loader;
}
