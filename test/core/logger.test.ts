import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import type { ConfigError } from '../../core/index.ts';
import { LOG_LEVELS, createLogger, logLevelFromEnv } from '../../core/index.ts';

test('tokens, keys, passphrases and Authorization headers never reach a log line', () => {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  const log = createLogger({ name: 'test', level: 'info', destination: destination as never });
  log.info(
    {
      req: { headers: { authorization: 'Bearer SECRET1' } },
      access_token: 'SECRET2',
      key: { privateKey: 'SECRET3', d: 'SECRET4' },
      masterKey: 'SECRET5',
    },
    'hello',
  );
  log.info({ body: { subject_token: 'SECRET6', passphrase: 'SECRET7' } }, 'again');
  const out = lines.join('');
  for (let i = 1; i <= 7; i++) assert.ok(!out.includes(`SECRET${i}`), `SECRET${i} leaked: ${out}`);
  assert.match(out, /\[redacted\]/);
  assert.match(out, /"msg":"hello"/);
});

test('PORTCULLIS_LOG_LEVEL takes the pino levels; anything else names the variable', () => {
  assert.equal(logLevelFromEnv({}), undefined);
  assert.equal(logLevelFromEnv({ PORTCULLIS_LOG_LEVEL: '' }), undefined);
  for (const level of LOG_LEVELS) assert.equal(logLevelFromEnv({ PORTCULLIS_LOG_LEVEL: level }), level);
  for (const bad of ['loud', 'WARN', ' info', '30']) {
    assert.throws(
      () => logLevelFromEnv({ PORTCULLIS_LOG_LEVEL: bad }),
      (err: ConfigError) =>
        err.code === 'ERR_CONFIG_INVALID' &&
        /^PORTCULLIS_LOG_LEVEL: must be one of trace, debug, info, warn, error, fatal, silent; got /.test(
          err.message,
        ),
      bad,
    );
  }
});
