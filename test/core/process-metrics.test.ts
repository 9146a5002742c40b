import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Registry } from 'prom-client';
import { collectProcessMetrics } from '../../core/index.ts';
import { promtoolProblems } from '../helpers/promtool.ts';

test('process metrics carry the part prefix and pass promtool check metrics', async () => {
  const registry = new Registry();
  collectProcessMetrics(registry, 'portcullis_test_');
  const text = await registry.metrics();
  assert.match(text, /^portcullis_test_process_cpu_seconds_total /m);
  assert.match(text, /^portcullis_test_nodejs_heap_size_used_bytes /m);
  assert.doesNotMatch(text, /^(process|nodejs)_/m, 'no unprefixed series');
  assert.doesNotMatch(text, /^# TYPE \S+_total gauge$/m, 'no gauge named like a counter');
  assert.equal(promtoolProblems(text), '');
});

test('promtool does flag a gauge named like a counter (the check can fail)', () => {
  const bad = '# HELP x_total a gauge\n# TYPE x_total gauge\nx_total 1\n';
  assert.match(promtoolProblems(bad), /non-counter metrics should not have "_total" suffix/);
});

test('a prefix that is not snake_case ending in "_" is a caller mistake', () => {
  for (const prefix of ['', 'portcullis', 'Portcullis_', 'portcullis-sts_'])
    assert.throws(() => collectProcessMetrics(new Registry(), prefix), TypeError, prefix);
});
