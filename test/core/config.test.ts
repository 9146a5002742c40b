import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import {
  ConfigError,
  durationSchema,
  loadConfigFile,
  parseConfigText,
  spiffeIdSchema,
  strictObject,
  timerDurationSchema,
} from '../../core/index.ts';

const schema = strictObject({
  listen: strictObject({ host: z.string(), port: z.number().int().min(0).max(65535) }),
  issuer: spiffeIdSchema,
  tokenTtl: durationSchema.optional(),
  mode: z.enum(['enforce', 'audit']).default('enforce'),
});

test('a valid file parses into typed values without filling defaults silently beyond the schema', () => {
  const cfg = parseConfigText(
    'listen: {host: 127.0.0.1, port: 8443}\nissuer: spiffe://example.org/sts\ntokenTtl: 5m\n',
    'sts.yaml',
    schema,
  );
  assert.equal(cfg.listen.port, 8443);
  assert.equal(cfg.issuer.trustDomain, 'example.org');
  assert.equal(cfg.tokenTtl, 300_000);
  assert.equal(cfg.mode, 'enforce');
});

test('every config error is one line naming file, key path and problem', () => {
  const cases: [string, string][] = [
    [
      'listen: {host: h, port: 1}\nissuer: spiffe://e/a\ntokenTTL: 5m\n',
      'sts.yaml: tokenTTL: unknown key (did you mean "tokenTtl"?)',
    ],
    [
      'listen: {host: h, prot: 1}\nissuer: spiffe://e/a\n',
      'sts.yaml: listen.prot: unknown key (did you mean "port"?)',
    ],
    [
      'listen: {host: h, port: "1"}\nissuer: spiffe://e/a\n',
      'sts.yaml: listen.port: must be a number, got the string "1"',
    ],
    ['listen: {host: h, port: 1}\n', 'sts.yaml: issuer: is required (string)'],
    [
      'listen: {host: h, port: 1}\nissuer: spiffe://E/a\n',
      'sts.yaml: issuer: "spiffe://E/a" is not a SPIFFE ID',
    ],
    [
      'listen: {host: h, port: 1}\nissuer: spiffe://e/a\ntokenTtl: soon\n',
      'sts.yaml: tokenTtl: "soon" is not a duration',
    ],
    [
      'listen: {host: h, port: 1}\nissuer: spiffe://e/a\nmode: enforcing\n',
      'sts.yaml: mode: must be one of "enforce", "audit", got the string "enforcing"',
    ],
    [
      'listen: {host: h, port: 1}\nlisten: {host: h, port: 2}\n',
      'sts.yaml: line 2, column 1: not valid YAML: Map keys must be unique',
    ],
    ['listen: [\n', 'sts.yaml: line'],
    ['', 'sts.yaml: file is empty'],
    ['- a\n- b\n', 'sts.yaml: must be a mapping, got a list'],
  ];
  for (const [text, expected] of cases) {
    assert.throws(
      () => parseConfigText(text, 'sts.yaml', schema),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.equal(err.code, 'ERR_CONFIG_INVALID');
        assert.ok(
          err.message.startsWith(expected),
          `${JSON.stringify(text)}:\n  got      ${err.message}\n  expected ${expected}`,
        );
        assert.ok(!err.message.includes('\n'), 'one line');
        return true;
      },
    );
  }
});

test('a missing file or a directory is ERR_CONFIG_NOT_FOUND naming the path', () => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-config-'));
  try {
    mkdirSync(join(dir, 'sub'));
    assert.throws(() => loadConfigFile(join(dir, 'nope.yaml'), schema), {
      code: 'ERR_CONFIG_NOT_FOUND',
      message: `${join(dir, 'nope.yaml')}: no such file`,
    });
    assert.throws(() => loadConfigFile(join(dir, 'sub'), schema), {
      code: 'ERR_CONFIG_NOT_FOUND',
      message: /is a directory/,
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a YAML alias bomb is refused rather than expanded', () => {
  const bomb = [
    'a: &a [x, x, x, x, x, x, x, x, x, x]',
    ...Array.from(
      { length: 8 },
      (_, i) =>
        `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}]`,
    ),
  ].join('\n');
  assert.throws(() => parseConfigText(bomb, 'bomb.yaml', schema), {
    code: 'ERR_CONFIG_INVALID',
    message: /bomb\.yaml: .*YAML/,
  });
});

test('a timer duration past what a Node timer keeps (24.8 days) is refused naming the key, not left to fire at once', () => {
  const timers = strictObject({ budgets: strictObject({ headersTimeout: timerDurationSchema }) });
  assert.equal(
    parseConfigText('budgets: {headersTimeout: 24d}\n', 'x.yaml', timers).budgets.headersTimeout,
    24 * 86_400_000,
  );
  assert.throws(
    () => parseConfigText('budgets: {headersTimeout: 30d}\n', 'x.yaml', timers),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.ok(err.message.startsWith('x.yaml: budgets.headersTimeout: must be at most 24d'), err.message);
      return true;
    },
  );
});
