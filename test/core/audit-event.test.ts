import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LogAuditSink, MemoryAuditSink, createLogger, parseAuditEvent } from '../../core/index.ts';

const base = { type: 'authz.decision', time: '2026-11-22T08:00:00.000Z' };

test('events of every type parse; admin.<verb> is open-ended', () => {
  for (const type of [
    'authz.decision',
    'token.issued',
    'token.denied',
    'key.rotated',
    'cert.issued',
    'cert.revoked',
    'admin.keys.rotate',
  ]) {
    assert.equal(parseAuditEvent({ ...base, type }).type, type);
  }
  const full = parseAuditEvent({
    ...base,
    source: 'spiffe://example.org/orders',
    subject: 'spiffe://example.org/web',
    decision: 'deny',
    enforced: false,
    rule: 'nobody-touches-admin',
    status: 403,
    latencyMs: 0.4,
    traceId: '0af7651916cd43dd8448eb211c80319c',
    attributes: { kid: 'k1' },
  });
  assert.equal(full.enforced, false);
});

test('malformed events are refused with ERR_AUDIT_EVENT_INVALID', () => {
  const cases: unknown[] = [
    {},
    { ...base, type: 'authz.whatever' },
    { ...base, time: 'yesterday' },
    { ...base, decision: 'maybe' },
    { ...base, extra: 1 },
    { ...base, traceId: 'XYZ' },
    { ...base, status: 1.5 },
    { ...base, reason: 'x'.repeat(300) },
    { ...base, attributes: { 'bad key': 1 } },
    null,
  ];
  for (const ev of cases)
    assert.throws(() => parseAuditEvent(ev), { code: 'ERR_AUDIT_EVENT_INVALID' }, JSON.stringify(ev));
});

test('the memory sink keeps events in order and always accepts', async () => {
  const sink = new MemoryAuditSink();
  sink.emit(parseAuditEvent(base));
  sink.emit(parseAuditEvent({ ...base, type: 'token.issued' }));
  await sink.flush();
  assert.deepEqual(
    sink.events.map((e) => e.type),
    ['authz.decision', 'token.issued'],
  );
  assert.equal(sink.accepting(), true);
});

test('the log audit sink writes one JSON line per event and never refuses', async () => {
  const lines: string[] = [];
  const logger = createLogger({
    name: 't',
    level: 'info',
    destination: { write: (l: string) => void lines.push(l) },
  });
  const sink = new LogAuditSink(logger);
  sink.emit({ type: 'token.issued', time: new Date(0).toISOString(), jti: 'j' });
  await sink.flush();
  assert.equal(sink.accepting(), true);
  assert.equal(JSON.parse(lines[0]!).audit.jti, 'j');
});
