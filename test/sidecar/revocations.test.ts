import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createRevocationList, parseRevocations } from '../../sidecar/revocations.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { quiet, startFakeSts } from './fixtures.ts';

describe('revocation list', () => {
  let pki: TestPki;
  let fake: Awaited<ReturnType<typeof startFakeSts>>;
  before(async () => {
    pki = await makeTestPki();
    fake = await startFakeSts(pki);
  });
  after(async () => {
    await fake.close();
    pki.cleanup();
  });

  it('polls with If-None-Match, keeps the list on 304 and on failures, and honours entry expiry', async () => {
    const now = { t: Date.parse('2030-01-01T00:00:00Z') };
    fake.state.revocations = {
      status: 200,
      etag: '"e1"',
      body: JSON.stringify({
        jtis: [{ jti: 'j1', expiresAt: '2030-01-01T01:00:00Z' }],
        serials: [{ serial: 'ABCD', expiresAt: '2030-01-01T01:00:00Z' }],
      }),
    };
    const list = createRevocationList({
      fetchRevocations: (e) => fake.client.fetchRevocations(e),
      clock: () => now.t,
      logger: quiet(),
      intervalMs: 3_600_000,
    });
    await list.start();
    assert.equal(list.isJtiRevoked('j1'), true);
    assert.equal(list.isJtiRevoked('j2'), false);
    assert.equal(list.isSerialRevoked('abcd'), true);
    assert.equal(await list.refresh(), true);
    assert.equal(fake.state.lastIfNoneMatch, '"e1"');
    assert.equal(list.isJtiRevoked('j1'), true, 'kept on 304');
    fake.state.revocations = { status: 200, etag: '"e2"', body: '{"jtis": 3}' };
    assert.equal(await list.refresh(), false, 'malformed body refused');
    assert.equal(list.isJtiRevoked('j1'), true, 'kept on a malformed answer');
    now.t = Date.parse('2030-01-01T01:00:01Z');
    assert.equal(list.isJtiRevoked('j1'), false, 'entry expired');
    list.close();
  });

  const bad: [string, unknown][] = [
    ['not an object', []],
    ['jtis not an array', { jtis: {}, serials: [] }],
    ['an entry without expiry', { jtis: [{ jti: 'a' }], serials: [] }],
    ['an entry with an empty value', { jtis: [{ jti: '', expiresAt: '2030-01-01T00:00:00Z' }], serials: [] }],
  ];
  for (const [name, body] of bad) {
    it(`refuses a body with ${name} (ERR_SIDECAR_REVOCATIONS_INVALID)`, () => {
      assert.throws(() => parseRevocations(body), { code: 'ERR_SIDECAR_REVOCATIONS_INVALID' });
    });
  }
});
