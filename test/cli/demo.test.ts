// The demo apps' command line, black-box: bad flags get a usage line and exit 2, not a stack trace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

const APP = new URL('../../demo/app.ts', import.meta.url).pathname;

for (const [args, why] of [
  [['orders', '--port', 'abc'], /--port: "abc" is not a port/],
  [['orders', '--port', '70000'], /--port: "70000" is not a port/],
  [['web', '--proxy', 'nope'], /--proxy: "nope" is not a URL/],
  [['orders', '--bogus'], /Unknown option '--bogus'/],
  [['payments'], /the first argument is orders or web/],
] as const) {
  test(`node demo/app.ts ${args.join(' ')} exits 2 with a usage line`, () => {
    const r = spawnSync(process.execPath, [APP, ...args], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, why);
    assert.match(r.stderr, /^usage: node demo\/app\.ts orders\|web/m);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });
}
