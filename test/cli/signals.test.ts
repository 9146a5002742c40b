// Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group (npm, a shell if
// any, node). However the CLI is started, a long-running command drains, flushes its audit events
// and exits 0 (issue 19). The STS here delivers to a real collector, which shows the flush.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Agent, request } from 'undici';
import type { RunningCollector } from '../../audit/index.ts';
import { startTestCollector } from '../audit/collector-harness.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { MASTER_KEY, ORDERS } from '../sts/helpers.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const AUDIT_ID = 'spiffe://example.org/ns/portcullis/sa/audit';

let pki: TestPki;
let dir: string;
let collector: RunningCollector;
let web: Agent;

before(async () => {
  pki = await makeTestPki();
  dir = mkdtempSync(join(tmpdir(), 'portcullis-signals-'));
  collector = await startTestCollector(pki, dir);
  web = new Agent({
    connect: {
      ca: pki.rootPem,
      cert: pki.leaf('web').certPem,
      key: pki.leaf('web').keyPem,
      checkServerIdentity: () => undefined,
    },
  });
});

after(async () => {
  await web.close();
  await collector.close();
  pki.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

/** An STS config delivering its audit events to the test collector, with a spool of its own. */
function stsConfig(name: string): string {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    [
      'listen: { host: 127.0.0.1, port: 0 }',
      `tls: { cert: ${pki.certsDir}/sts.pem, key: ${pki.certsDir}/sts-key.pem, trustBundle: ${pki.rootFile} }`,
      `identities: ${pki.identitiesDir}`,
      'issuer: https://sts.portcullis.internal',
      `keystore: { type: file, dir: ${join(dir, `${name}-keys`)} }`,
      `audit: { sink: collector, collector: '${collector.url}', collectorId: '${AUDIT_ID}', spoolDir: ${join(dir, `${name}-spool`)} }`,
    ].join('\n'),
  );
  return file;
}

/** Starts `argv` as a terminal's foreground job (a process group of its own) and waits for the STS. */
async function startJob(argv: string[]): Promise<{ child: ChildProcess; url: string; stderr: () => string }> {
  const child = spawn(argv[0]!, argv.slice(1), {
    cwd: ROOT,
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, PORTCULLIS_MASTER_KEY: MASTER_KEY, PORTCULLIS_LOG_LEVEL: 'warn' },
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line within 20 s: ${err}`)), 20_000);
    child.stderr!.on('data', () => {
      const m = /listening on https:\/\/127\.0\.0\.1:(\d+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve(`https://localhost:${m[1]}`);
      }
    });
    child.once('exit', (code) => reject(new Error(`exited ${code} before listening: ${err}`)));
  });
  return { child, url, stderr: () => err };
}

/** Ctrl-C: SIGINT to every process of the job's group; resolves with the exit code. */
function ctrlC(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('still running 15 s after SIGINT')), 15_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
    process.kill(-child.pid!, 'SIGINT');
  });
}

const launches: [string, (config: string) => string[]][] = [
  ['npm run -s portcullis -- sts', (c) => ['npm', 'run', '-s', 'portcullis', '--', 'sts', '--config', c]],
  [
    'bin/portcullis sts (the command npm link puts on the PATH)',
    (c) => [join(ROOT, 'bin/portcullis'), 'sts', '--config', c],
  ],
];

for (const [name, argv] of launches) {
  test(
    `Ctrl-C to "${name}": exit 0, the token just issued is in the audit log`,
    { timeout: 60_000 },
    async () => {
      const job = await startJob(argv(stsConfig(name.replace(/\W+/g, '-'))));
      try {
        const res = await request(`${job.url}/oauth2/token`, {
          method: 'POST',
          dispatcher: web,
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: `grant_type=client_credentials&audience=${encodeURIComponent(ORDERS)}`,
        });
        assert.equal(res.statusCode, 200);
        const { access_token: token } = (await res.body.json()) as { access_token: string };
        const jti = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).jti as string;
        assert.equal(await ctrlC(job.child), 0, job.stderr());
        assert.match(job.stderr(), /portcullis sts: stopped/);
        const issued = await collector.log.store().query({ type: 'token.issued', limit: 1000 });
        assert.ok(
          issued.some((r) => r.event.jti === jti),
          `token.issued for ${jti} was flushed before exit`,
        );
      } finally {
        if (job.child.exitCode === null) process.kill(-job.child.pid!, 'SIGKILL');
      }
    },
  );
}
