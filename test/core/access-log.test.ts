import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { accessLogSchema, createAccessLog, createLogger } from '../../core/index.ts';
import type { AccessLine } from '../../core/index.ts';

function capture() {
  const out: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n').filter(Boolean)) out.push(JSON.parse(l));
      cb();
    },
  });
  return { out, logger: createLogger({ name: 't', level: 'info', destination }) };
}

const line = (over: Partial<AccessLine> = {}): AccessLine => ({
  side: 'inbound',
  method: 'GET',
  target: '/orders/1',
  status: 200,
  decision: 'allow',
  reason: 'allowed',
  latencyMs: 1.23456,
  ...over,
});

test('off by default: no writer at all, so the hot path pays one if', () => {
  const { logger } = capture();
  assert.equal(createAccessLog(logger, accessLogSchema.parse(undefined)), undefined);
  assert.deepEqual(accessLogSchema.parse({}), { enabled: false, sample: 1 });
});

test('sampled: successes are kept at the sample rate, refusals and 5xx always', () => {
  const { out, logger } = capture();
  let r = 0;
  const rolls = [0.05, 0.5, 0.95];
  const log = createAccessLog(logger, { enabled: true, sample: 0.1 }, () => rolls[r++ % rolls.length]!)!;
  for (let i = 0; i < 3; i++) log(line());
  log(line({ status: 403, decision: 'deny', reason: 'ERR_SIDECAR_POLICY_DENIED' }));
  log(line({ status: 502, reason: 'ERR_SIDECAR_UPSTREAM_UNAVAILABLE' }));
  log(line({ status: 429, decision: 'deny' }));
  const statuses = out.map((o) => (o.access as AccessLine).status);
  assert.deepEqual(statuses, [200, 403, 502, 429], 'one success of three (roll 0.05 < 0.1), every refusal');
  assert.equal(out[0]!.msg, 'access');
  assert.equal((out[0]!.access as AccessLine).latencyMs, 1.235);
});

test('a long target is cut at 512 characters', () => {
  const { out, logger } = capture();
  createAccessLog(logger, { enabled: true, sample: 1 })!(line({ target: `/${'a'.repeat(2000)}` }));
  assert.equal((out[0]!.access as AccessLine).target.length, 512);
});

test('the sample must be a fraction', () => {
  for (const sample of [-0.1, 1.5, '0.5'])
    assert.equal(accessLogSchema.safeParse({ enabled: true, sample }).success, false, String(sample));
});
