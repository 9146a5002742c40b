// The sidecar as `npm run build` ships it: the end-to-end tests of test/e2e/sidecar.test.ts
// (requests through both sidecars and the refusal matrix at orders' inbound) run again with the
// mesh's sidecars from dist/sidecar/index.js, and the built CLI answers as the sources' does.
// `npm test` builds first; run alone, this file needs `npm run build`.
import './use-build.ts';
import './sidecar.test.ts';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { SIDECAR_FROM_BUILD } from './mesh.ts';

const cli = new URL('../../dist/cli/portcullis.js', import.meta.url).pathname;
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

describe('the build', () => {
  it('is what the mesh of this file runs', () => {
    assert.equal(SIDECAR_FROM_BUILD, true);
  });

  it('the built CLI prints its version, exits 2 on a usage error and 1 naming the code on a missing config', () => {
    const version = run('--version');
    assert.equal(version.status, 0, version.stderr);
    assert.match(version.stdout, /^portcullis \d+\.\d+\.\d+ \(node v24\./);
    const usage = run('sidecar', '--bogus');
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /^portcullis: sidecar: Unknown option '--bogus'/);
    const missing = run('sidecar', '--config', '/nonexistent/sidecar.yaml');
    assert.equal(missing.status, 1);
    assert.equal(
      missing.stderr,
      'portcullis: /nonexistent/sidecar.yaml: no such file [ERR_CONFIG_NOT_FOUND]\n',
    );
    assert.doesNotMatch(missing.stderr, /\n\s+at /);
  });
});
