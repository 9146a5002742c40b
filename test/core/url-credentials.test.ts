import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withoutCredentials } from '../../core/index.ts';

test('withoutCredentials removes user and password, also from a URL that does not parse', () => {
  const cases: [string, string][] = [
    ['postgres://u:secret@db:5432/audit', 'postgres://db:5432/audit'],
    ['postgres://u:se/cret@db/audit', 'postgres://db/audit'],
    ['postgres://u:se?cr#et@db/audit', 'postgres://db/audit'],
    ['postgres://u:p@ss@db/audit', 'postgres://db/audit'],
    ['postgres://db:5432/audit', 'postgres://db:5432/audit'],
    ['file:/var/lib/audit', 'file:/var/lib/audit'],
    // Typos that keep the password but lose a slash or both.
    ['postgres:/u:secret@db/audit', 'postgres:/db/audit'],
    ['postgresql:u:secret@db/audit', 'postgresql:db/audit'],
    ['u:secret@db/audit', 'u:db/audit'],
  ];
  for (const [url, shown] of cases) assert.equal(withoutCredentials(url), shown, url);
});
