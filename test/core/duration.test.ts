import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatDuration, parseDuration } from '../../core/index.ts';

test('durations parse into milliseconds and format back', () => {
  const cases: [string, number][] = [
    ['250ms', 250],
    ['30s', 30_000],
    ['5m', 300_000],
    ['1h30m', 5_400_000],
    ['24h', 86_400_000],
    ['7d', 604_800_000],
  ];
  for (const [text, ms] of cases) {
    assert.equal(parseDuration(text), ms, text);
    assert.equal(parseDuration(formatDuration(ms)), ms, text);
  }
});

test('malformed, zero and unit-less durations are refused with ERR_DURATION_INVALID', () => {
  for (const bad of ['', '5', 'm', '5 m', '-5m', '1.5h', '0s', '5y', '5M', ' 5m', '99999999999999999999d']) {
    assert.throws(() => parseDuration(bad), { code: 'ERR_DURATION_INVALID' }, JSON.stringify(bad));
  }
});
