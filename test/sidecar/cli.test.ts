import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadSidecarConfig } from '../../sidecar/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';

const cli = (...args: string[]) =>
  spawnSync(process.execPath, ['cli/portcullis.ts', ...args], { encoding: 'utf8', timeout: 20_000 });

describe('portcullis sidecar', () => {
  let dir: string;
  let pki: TestPki;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sidecar-cli-'));
    pki = await makeTestPki();
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
    pki.cleanup();
  });

  it('prints its usage with --help and exits 0', () => {
    const r = cli('sidecar', '--help');
    assert.equal(r.status, 0);
    assert.match(r.stdout, /usage: portcullis sidecar --config FILE/);
  });

  it('exits 2 with one line on an unknown flag or a missing --config', () => {
    for (const args of [['--cofnig', 'x'], []]) {
      const r = cli('sidecar', ...args);
      assert.equal(r.status, 2, r.stderr);
      assert.equal(r.stderr.trim().split('\n').length, 1);
    }
  });

  const bad: [string, string, RegExp][] = [
    ['a misspelled key', 'servce: x\n', /bad\.yaml: servce: unknown key \(did you mean "service"\?\)/],
    [
      'an outbound listener off loopback',
      'OUT0',
      /bad\.yaml: outbound\.listen\.host: must be a loopback address/,
    ],
    ['a bad duration', 'DUR', /bad\.yaml: sts\.timeout: "soon" is not a duration/],
  ];
  for (const [name, text, message] of bad) {
    it(`exits 1 with one line naming file, key and problem for ${name}`, () => {
      const base = loadableText(pki);
      const body =
        text === 'OUT0'
          ? `${base}outbound:\n  listen: { host: 0.0.0.0, port: 0 }\n`
          : text === 'DUR'
            ? base.replace('timeout: 1s', 'timeout: soon')
            : text;
      const file = join(dir, 'bad.yaml');
      writeFileSync(file, body);
      const r = cli('sidecar', '--config', file);
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split('\n').length, 1);
    });
  }

  it('exits 1 naming the file when the config does not exist', () => {
    const r = cli('sidecar', '--config', join(dir, 'nope.yaml'));
    assert.equal(r.status, 1);
    assert.match(r.stderr, /nope\.yaml: no such file/);
  });

  it('the example configs for web and orders parse', () => {
    assert.equal(loadSidecarConfig('config/sidecar-web.yaml').outbound!.routes[0]!.name, 'orders');
    assert.match(loadSidecarConfig('config/sidecar-orders.yaml').inbound.policy, /policies\/orders\.yaml$/);
  });

  it('starts, reports where it listens, and drains on SIGTERM with exit 0 (STS unreachable is not fatal)', async () => {
    const file = join(dir, 'ok.yaml');
    writeFileSync(file, loadableText(pki));
    const child = spawn(process.execPath, ['cli/portcullis.ts', 'sidecar', '--config', file], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c));
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      let sent = false;
      child.stdout.on('data', () => {
        if (!sent && out.includes('sidecar listening')) {
          sent = true;
          child.kill('SIGTERM');
        }
      });
      child.on('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    assert.equal(code, 0, out);
    assert.match(out, /"inbound":"https:\/\/127\.0\.0\.1:\d+"/);
  });
});

function loadableText(pki: TestPki): string {
  return `service: spiffe://example.org/ns/shop/sa/orders
trustDomain: example.org
tls: { cert: ${pki.certsDir}/orders.pem, key: ${pki.certsDir}/orders-key.pem, trustBundle: ${pki.rootFile} }
sts: { url: "https://127.0.0.1:1", spiffeId: spiffe://example.org/ns/portcullis/sa/sts, issuer: "https://sts.test", timeout: 1s }
inbound: { listen: { host: 127.0.0.1, port: 0 }, app: "http://127.0.0.1:9", policy: ${process.cwd()}/policies/orders.yaml }
`;
}
