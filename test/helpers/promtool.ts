// Prometheus' own linter as an independent check of every /metrics page.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

/** `promtool check metrics` on one exposition: its complaints, or '' when it passes. */
export function promtoolProblems(text: string): string {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 10_000 });
  assert.equal(
    r.error,
    undefined,
    `promtool could not run (.ci/run installs Debian's prometheus): ${r.error?.message}`,
  );
  return r.status === 0 ? '' : `${r.stdout}${r.stderr}`.trim();
}
