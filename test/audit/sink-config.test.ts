import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import {
  LogAuditSink,
  MemoryAuditSink,
  createLogger,
  parseConfigText,
  strictObject,
} from '../../core/index.ts';
import { auditSinkConfigSchema, createAuditSink, resolveAuditSinkConfig } from '../../audit/index.ts';

const schema = strictObject({ audit: auditSinkConfigSchema, other: z.number().optional() });
const parse = (text: string) => parseConfigText(text, 'part.yaml', schema).audit;
const logger = createLogger({ name: 't', level: 'silent' });
const tls = { cert: '/nonexistent', key: '/nonexistent', trustBundle: '/nonexistent' };

test('without an audit section events go to the log; memory and log sinks build as named', () => {
  assert.equal(parse('other: 1\n').sink, 'log');
  assert.ok(createAuditSink(parse('other: 1\n'), { tls, logger }) instanceof LogAuditSink);
  assert.ok(createAuditSink(parse('audit: {sink: memory}\n'), { tls, logger }) instanceof MemoryAuditSink);
});

test('a collector sink needs the collector URL, its SPIFFE ID and a spool directory', () => {
  const cases: [string, RegExp][] = [
    [
      'audit: {sink: collector, collectorId: "spiffe://example.org/audit", spoolDir: s}\n',
      /part\.yaml: audit\.collector: is required when sink is "collector"/,
    ],
    [
      'audit: {sink: collector, collector: "https://127.0.0.1:1", spoolDir: s}\n',
      /part\.yaml: audit\.collectorId: is required/,
    ],
    [
      'audit: {sink: collector, collector: "https://127.0.0.1:1", collectorId: "spiffe://example.org/audit"}\n',
      /audit\.spoolDir: is required/,
    ],
    [
      'audit: {sink: collector, collector: "http://127.0.0.1:1", collectorId: "spiffe://example.org/audit", spoolDir: s}\n',
      /audit\.collector: must be an https URL/,
    ],
    ['audit: {sink: kafka}\n', /audit\.sink: must be one of "collector", "log", "memory"/],
    ['audit: {sink: log, failmode: closed}\n', /audit\.failmode: unknown key \(did you mean "failMode"\?\)/],
  ];
  for (const [text, expected] of cases)
    assert.throws(() => parse(text), { code: 'ERR_CONFIG_INVALID', message: expected }, text);
});

test('the spool directory resolves against the config file directory', () => {
  const c = parse(
    'audit: {sink: collector, collector: "https://127.0.0.1:1", collectorId: "spiffe://example.org/audit", spoolDir: spool}\n',
  );
  assert.equal(resolveAuditSinkConfig(c, '/etc/portcullis').spoolDir, '/etc/portcullis/spool');
  assert.equal(resolveAuditSinkConfig({ ...c, spoolDir: '/abs' }, '/etc').spoolDir, '/abs');
});

test('the loss window defaults to 1,000 events and 200 ms, and a bad one is a config error naming the key', () => {
  assert.deepEqual(parse('other: 1\n').lossWindow, { events: 1000, ms: 200 });
  assert.deepEqual(parse('audit: {sink: log, lossWindow: {events: 50}}\n').lossWindow, {
    events: 50,
    ms: 200,
  });
  const cases: [string, RegExp][] = [
    ['audit: {lossWindow: {events: 0}}\n', /part\.yaml: audit\.lossWindow\.events: /],
    ['audit: {lossWindow: {ms: -1}}\n', /part\.yaml: audit\.lossWindow\.ms: /],
    ['audit: {lossWindow: {ms: 1.5}}\n', /part\.yaml: audit\.lossWindow\.ms: /],
    ['audit: {lossWindow: {count: 5}}\n', /part\.yaml: audit\.lossWindow\.count: unknown key/],
  ];
  for (const [text, message] of cases) assert.throws(() => parse(text), message, text);
});

test('the spool report interval defaults to 30 s, is a duration of at least 1 s and at most a timer’s reach', () => {
  assert.equal(parse('other: 1\n').reportInterval, 30_000);
  assert.equal(parse('audit: {sink: log, reportInterval: 5s}\n').reportInterval, 5_000);
  const cases: [string, RegExp][] = [
    ['audit: {reportInterval: 500ms}\n', /part\.yaml: audit\.reportInterval: must be at least 1s/],
    ['audit: {reportInterval: 30d}\n', /part\.yaml: audit\.reportInterval: must be at most 24d/],
    ['audit: {reportInterval: often}\n', /part\.yaml: audit\.reportInterval: /],
  ];
  for (const [text, message] of cases) assert.throws(() => parse(text), message, text);
});
