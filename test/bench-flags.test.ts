// The bench scripts refuse a bad flag with its message and exit 2 (bench/flags.ts), before they
// start anything: no stack trace, whichever script and whichever kind of mistake.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';

const root = new URL('../', import.meta.url).pathname;

for (const [script, args, message] of [
  ['bench/sidecar/run.ts', ['--slice', 'abc'], /^--slice: "abc" is not a duration/],
  ['bench/sidecar/run.ts', ['--cpu-slices', '-1'], /^Option '--cpu-slices' argument is ambiguous/],
  ['bench/sidecar/run.ts', ['--bogus'], /^Unknown option '--bogus'/],
  ['bench/sidecar/run.ts', ['--body-bytes', '5'], /^--body-bytes must be 0 or an integer from 11/],
  ['bench/sidecar/startup.ts', ['--idle', '3x'], /^--idle: "3x" is not a duration/],
  ['bench/sidecar/floor.ts', ['--duration', ''], /^--duration: "" is not a duration/],
  ['bench/grpc/run.ts', ['--duration', 'soon'], /^--duration: "soon" is not a duration/],
  ['bench/ca/run.ts', ['--nope'], /^Unknown option '--nope'/],
  ['bench/telemetry/run.ts', ['--rate-duration', '5 s'], /^--rate-duration: "5 s" is not a duration/],
] as const) {
  test(`${script} ${args.join(' ')} exits 2 with the message, no stack trace`, () => {
    const r = spawnSync(process.execPath, [`${root}${script}`, ...args], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /^\s+at |node:internal|Node\.js v/m, `no stack trace: ${r.stderr}`);
    assert.ok(r.stderr.trim().split('\n').length <= 3, `the message only: ${r.stderr}`);
    assert.equal(r.stdout, '');
  });
}
