// parseAuditEvent checks the common event with an Ajv validator compiled from the zod schema and
// falls back to zod for the rest (decision 0037). These tests hold it to zod's verdict and output
// on every field's edges and on generated events: the fast check must never accept what zod refuses.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { auditEventSchema, parseAuditEvent } from '../../core/index.ts';
import { prng } from '../helpers/prng.ts';

const BASE: Record<string, unknown> = {
  type: 'authz.decision',
  time: '2026-12-06T01:02:03.456Z',
  source: 'spiffe://example.org/ns/shop/sa/orders',
  subject: 'spiffe://example.org/ns/shop/sa/web',
  target: 'spiffe://example.org/ns/shop/sa/orders',
  action: 'GET /orders/1',
  decision: 'allow',
  enforced: true,
  reason: 'allowed',
  rule: 'orders-read',
  policyHash: `sha256:${'a'.repeat(64)}`,
  status: 200,
  latencyMs: 0.123,
  jti: 'abc',
  traceId: '0af7651916cd43dd8448eb211c80319c',
  attributes: { kid: 'k1', n: 3, ok: false },
};

const ASTRAL = '\u{1F600}'; // two UTF-16 code units, one code point
const LIMITS: Record<string, number> = {
  source: 2048,
  subject: 2048,
  target: 2048,
  action: 4096,
  reason: 256,
  rule: 256,
  policyHash: 128,
  jti: 256,
};

/** Values each field may be replaced with: valid, invalid and on the edge. */
function candidates(field: string): unknown[] {
  const common: unknown[] = [undefined, null, 0, 1.5, true, '', [], {}, 'x', Number.NaN, Infinity];
  const max = LIMITS[field];
  const text =
    max === undefined
      ? []
      : [
          'a'.repeat(max),
          'a'.repeat(max + 1),
          ASTRAL.repeat(max / 2),
          ASTRAL.repeat(max / 2) + 'a',
          ASTRAL.repeat(max / 2 + 1),
          'lone \uD800 surrogate',
          'lone \uDC00',
          `${'a'.repeat(max - 1)}\uD800`,
          'é ✓ ' + ASTRAL,
        ];
  const specific: Record<string, unknown[]> = {
    type: [
      'token.issued',
      'admin.rotate-key',
      'admin.',
      'Admin.x',
      'authz.decision ',
      `admin.${'a'.repeat(64)}`,
      `admin.${'a'.repeat(65)}`,
    ],
    time: [
      '2026-12-06T01:02:03Z',
      '2026-12-06T01:02:03+01:00',
      '2026-12-06T01:02:03.1234567-05:30',
      '2026-02-30T01:02:03Z',
      '2024-02-29T00:00:00Z',
      '2023-02-29T00:00:00Z',
      '2026-12-06 01:02:03Z',
      '2026-12-06T01:02:03',
      '2026-12-06T24:00:00Z',
      '2026-12-06T01:02:03.Z',
      '2026-12-06T01:02:03Z\n',
    ],
    decision: ['deny', 'Allow', 'maybe'],
    enforced: [false, 'true', 1],
    status: [0, 999, 1000, -1, 200.5, -0, '200', 2 ** 53],
    latencyMs: [0, -0, 86_400_000, 86_400_001, -0.001, 1e-9, '1'],
    traceId: ['0'.repeat(32), 'A'.repeat(32), 'a'.repeat(31), 'a'.repeat(33), 'g'.repeat(32)],
    attributes: [
      {},
      { a: 'x'.repeat(1024) },
      { a: 'x'.repeat(1025) },
      { a: ASTRAL.repeat(512) },
      { a: ASTRAL.repeat(513) },
      { a: 'lone \uD800' },
      { 'bad name': 1 },
      { _a: 1 },
      { [`a${'b'.repeat(63)}`]: 1 },
      { [`a${'b'.repeat(64)}`]: 1 },
      { a: null },
      { a: [1] },
      { a: { b: 1 } },
      { a: Number.NaN },
      { a: Infinity },
      Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`k${i}`, i])),
      Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, i])),
      ['k1'],
    ],
  };
  return [...common, ...text, ...(specific[field] ?? [])];
}

/** parseAuditEvent agrees with zod: same verdict, and for an accepted value the same event. */
function agree(value: unknown, label: string): boolean {
  const zod = auditEventSchema.safeParse(value);
  let ours: unknown;
  let threw = false;
  try {
    ours = parseAuditEvent(value);
  } catch {
    threw = true;
  }
  assert.equal(
    !threw,
    zod.success,
    `${label}: parseAuditEvent ${threw ? 'refused' : 'accepted'}, zod did not`,
  );
  if (zod.success) assert.deepEqual(ours, zod.data, `${label}: same event as zod`);
  return zod.success;
}

describe('parseAuditEvent (fast check with zod as the authority)', () => {
  it('agrees with zod on every edge of every field', () => {
    let accepted = 0;
    let refused = 0;
    for (const field of Object.keys(BASE))
      for (const v of candidates(field)) {
        const ok = agree({ ...BASE, [field]: v }, `${field} = ${JSON.stringify(v)?.slice(0, 60)}`);
        if (ok) accepted++;
        else refused++;
      }
    // The table is worth something only if it holds both outcomes in numbers.
    assert.ok(accepted > 60 && refused > 100, `accepted ${accepted}, refused ${refused}`);
  });

  it('agrees with zod on the shape: extra keys, missing required fields, non-plain objects', () => {
    const { type: _t, ...noType } = BASE;
    const { time: _time, ...noTime } = BASE;
    const shapes: [string, unknown][] = [
      ['extra key', { ...BASE, extra: 1 }],
      [
        '__proto__ key',
        JSON.parse(`{"type":"authz.decision","time":"2026-12-06T01:02:03Z","__proto__":{"x":1}}`),
      ],
      ['no type', noType],
      ['no time', noTime],
      ['minimal', { type: 'key.rotated', time: '2026-12-06T01:02:03Z' }],
      ['null', null],
      ['array', [BASE]],
      ['string', 'event'],
      ['number', 3],
      ['null prototype', Object.assign(Object.create(null) as object, BASE)],
      ['class instance', Object.assign(new (class Event {})(), BASE)],
      ['a Map', new Map(Object.entries(BASE))],
    ];
    for (const [label, value] of shapes) agree(value, label);
  });

  it('agrees with zod on generated events mixing several edge values at once', () => {
    const random = prng(20261206);
    const fields = Object.keys(BASE);
    const pools = Object.fromEntries(fields.map((f) => [f, candidates(f)]));
    let accepted = 0;
    for (let i = 0; i < 3000; i++) {
      const event: Record<string, unknown> = {};
      for (const f of fields) {
        const r = random();
        if (r < 0.05) continue; // absent
        if (r < 0.85) event[f] = BASE[f];
        else event[f] = pools[f]![Math.floor(random() * pools[f]!.length)];
      }
      if (agree(event, `generated #${i} ${JSON.stringify(event).slice(0, 120)}`)) accepted++;
    }
    assert.ok(accepted > 200 && accepted < 2800, `${accepted} of 3000 generated events were valid`);
  });

  it('returns a copy: changing the event after emit does not change what was parsed', () => {
    const input = structuredClone(BASE) as Record<string, Record<string, unknown>>;
    const parsed = parseAuditEvent(input);
    input.attributes!.kid = 'changed';
    (input as Record<string, unknown>).reason = 'changed';
    assert.equal(parsed.attributes?.kid, 'k1');
    assert.equal(parsed.reason, 'allowed');
  });
});
