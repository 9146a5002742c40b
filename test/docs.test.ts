// The docs name metrics, and operators build alerts on those names: each must exist in the code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = new URL('../', import.meta.url).pathname;

function files(dir: string, ext: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(ext))
    .map((e) => join(e.parentPath, e.name));
}

test('every portcullis_* metric the docs name is defined in the code', () => {
  const code = ['core', 'ca', 'audit', 'sts', 'sidecar']
    .flatMap((d) => files(d, '.ts'))
    .map((f) => readFileSync(f, 'utf8'))
    .join('\n');
  const docs = [...files('docs', '.md'), join(ROOT, 'README.md')];
  const missing: string[] = [];
  let checked = 0;
  for (const file of docs) {
    for (const [, name] of readFileSync(file, 'utf8').matchAll(
      /`(portcullis_[a-z0-9_]+?)(?:_bucket|_sum|_count)?(?:\{[^`]*)?`/g,
    )) {
      // Series are registered by their full name or by a part prefix plus the rest.
      checked++;
      const rest = name!.replace(/^portcullis_(sts|sidecar|audit)_/, '');
      if (
        !code.includes(name!) &&
        !code.includes(`'${rest}'`) &&
        !code.includes(`\`${rest}\``) &&
        !code.includes(`_${rest}'`)
      ) {
        missing.push(`${file.slice(ROOT.length)}: ${name}`);
      }
    }
  }
  assert.deepEqual(missing, []);
  // The docs' metrics tables name dozens of series: finding none means the pattern broke.
  assert.ok(checked > 20, `only ${checked} metric names found in the docs`);
});
