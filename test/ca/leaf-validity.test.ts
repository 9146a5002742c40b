import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, test } from 'node:test';
import { leafValidityProblem } from '../../ca/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';

let pki: TestPki;
before(async () => {
  pki = await makeTestPki();
});
after(() => pki.cleanup());

test("a part's own leaf is ready within its validity and says why not outside it", () => {
  const chain = pki.leaf('web').certPem;
  const leaf = new X509Certificate(chain);
  const from = Date.parse(leaf.validFrom);
  const to = Date.parse(leaf.validTo);
  assert.equal(leafValidityProblem(chain, from + 1000), undefined);
  assert.equal(leafValidityProblem(chain, from - 1000), `not valid before ${new Date(from).toISOString()}`);
  assert.equal(leafValidityProblem(chain, to), `expired at ${new Date(to).toISOString()}`);
  assert.throws(
    () => leafValidityProblem('not a certificate', from),
    'a chain that is no certificate throws',
  );
});
