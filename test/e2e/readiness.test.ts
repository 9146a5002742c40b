// /readyz of every part, started as the CLI starts it (issue 19): a probe polling from the moment
// the process is spawned sees no answer until the port listens, then 503 for as long as a
// certificate, key, policy or store is missing, then 200 with every check "ok" — never a 200
// before. The collector and the STS load their keys and store before they listen, so their first
// answer is already 200; the sidecar listens first and is 503 until it holds the STS's keys. A
// collector that cannot save its checkpoint turns 503 again, naming why.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Agent, request } from 'undici';
import { makeTestPki } from '../helpers/pki.ts';
import { decision } from '../audit/helpers.ts';

const CLI = new URL('../../cli/portcullis.ts', import.meta.url).pathname;
const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';

/** A port the OS just handed out (free now; the part binds it a moment later). */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

interface Answer {
  readonly status: number;
  readonly body: { status: string; checks: Record<string, string> };
}

/** One GET of `url`; undefined while nothing listens there. */
async function probe(url: string, dispatcher: Agent): Promise<Answer | undefined> {
  try {
    const res = await request(url, { dispatcher, headersTimeout: 5_000, bodyTimeout: 5_000 });
    return { status: res.statusCode, body: (await res.body.json()) as Answer['body'] };
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'UND_ERR_SOCKET') return undefined;
    throw err;
  }
}

/**
 * Polls `url` every 20 ms from now until it answers 200 (or `ms` pass) and returns every answer
 * seen, in order. `meanwhile` runs once the first answer came (to make the part ready).
 */
async function pollUntilReady(
  url: string,
  dispatcher: Agent,
  child: ChildProcess,
  ms: number,
  meanwhile?: () => Promise<void>,
): Promise<Answer[]> {
  const answers: Answer[] = [];
  const end = performance.now() + ms;
  let started = false;
  while (performance.now() < end) {
    if (child.exitCode !== null) throw new Error(`${url}: the part exited ${child.exitCode}`);
    const a = await probe(url, dispatcher);
    if (a) {
      answers.push(a);
      if (a.status === 200) return answers;
      if (!started && meanwhile) {
        started = true;
        await meanwhile();
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`${url} not ready within ${ms} ms: ${JSON.stringify(answers.at(-1))}`);
}

/** Every answer before the last is a 503 naming a failing check; the last is 200, every check ok. */
function assertNotReadyThenReady(name: string, answers: Answer[], checks: string[]): void {
  const last = answers.at(-1)!;
  assert.deepEqual(
    last,
    { status: 200, body: { status: 'ready', checks: Object.fromEntries(checks.map((c) => [c, 'ok'])) } },
    name,
  );
  for (const a of answers.slice(0, -1)) {
    assert.equal(a.status, 503, `${name}: ${JSON.stringify(a)}`);
    assert.equal(a.body.status, 'not ready', name);
    assert.ok(
      Object.values(a.body.checks).some((v) => v !== 'ok'),
      `${name}: a 503 names a failing check: ${JSON.stringify(a.body)}`,
    );
  }
}

function spawnPart(
  args: string[],
  env: Record<string, string> = {},
): { child: ChildProcess; out: () => string } {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, PORTCULLIS_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  return { child, out: () => out };
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

test(
  'each part answers /readyz 503 until its keys, policy, certificate and store are loaded, then 200',
  { timeout: 90_000 },
  async () => {
    const pki = await makeTestPki();
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-readiness-'));
    const c = pki.certsDir;
    const anonymous = new Agent({ connect: { ca: pki.rootPem, servername: 'localhost' } });
    const web = pki.leaf('web');
    const asWeb = new Agent({
      connect: { ca: pki.rootPem, cert: web.certPem, key: web.keyPem, servername: 'localhost' },
    });
    const parts: ChildProcess[] = [];
    try {
      // 1. The collector: store, signing key, checkpoint directory and certificate, then listens.
      const collectorPort = await freePort();
      const dataDir = join(dir, 'audit-data');
      writeFileSync(
        join(dir, 'audit.yaml'),
        `listen: { host: 127.0.0.1, port: ${collectorPort} }
origin: example.org/audit
identities: ${pki.identitiesDir}
tls: { cert: ${c}/audit.pem, key: ${c}/audit-key.pem, trustBundle: ${pki.rootFile} }
dataDir: ${dataDir}
store: file:${dir}/audit-log
checkpoint: { everyRecords: 1, interval: 1h }
`,
      );
      const collector = spawnPart(['audit', 'serve', '--config', join(dir, 'audit.yaml')]);
      parts.push(collector.child);
      const collectorUrl = `https://127.0.0.1:${collectorPort}`;
      assertNotReadyThenReady(
        'collector',
        await pollUntilReady(`${collectorUrl}/readyz`, anonymous, collector.child, 30_000),
        ['certificate', 'store', 'signingKey', 'checkpoint'],
      );

      // A checkpoint that cannot be saved (its file's path is taken by a directory) makes the
      // collector not ready, naming why; the next one that is saved makes it ready again.
      const latest = join(dataDir, 'checkpoint.latest');
      rmSync(latest, { force: true });
      mkdirSync(join(latest, 'blocker'), { recursive: true });
      const post = (i: number) =>
        request(`${collectorUrl}/v1/events`, {
          method: 'POST',
          dispatcher: asWeb,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ events: [decision(i)] }),
        }).then((r) => (r.body.dump(), r.statusCode));
      assert.equal(await post(1), 200);
      let broken: Answer | undefined;
      for (let i = 0; i < 100 && broken?.status !== 503; i++) {
        await new Promise((r) => setTimeout(r, 50));
        broken = await probe(`${collectorUrl}/readyz`, anonymous);
      }
      assert.equal(broken?.status, 503, JSON.stringify(broken));
      assert.match(broken!.body.checks.checkpoint!, /^the last checkpoint failed: /);
      assert.deepEqual(
        { ...broken!.body.checks, checkpoint: 'x' },
        { certificate: 'ok', store: 'ok', signingKey: 'ok', checkpoint: 'x' },
      );
      rmSync(latest, { recursive: true });
      assert.equal(await post(2), 200);
      assertNotReadyThenReady(
        'collector after the checkpoint is saved again',
        await pollUntilReady(`${collectorUrl}/readyz`, anonymous, collector.child, 10_000),
        ['certificate', 'store', 'signingKey', 'checkpoint'],
      );

      // 2. The sidecar, before the STS is up: its ops listener answers at once, 503 without the
      // STS's signing keys, and 200 once the STS (started after its first answer) serves them.
      const stsPort = await freePort();
      const metricsPort = await freePort();
      writeFileSync(
        join(dir, 'policy.yaml'),
        `service: ${ORDERS}
mode: enforce
roles: { shop: [spiffe://example.org/ns/shop/sa/web] }
rules:
  - { id: shop-reads, role: shop, methods: [GET], paths: [/orders] }
`,
      );
      writeFileSync(
        join(dir, 'sidecar.yaml'),
        `service: ${ORDERS}
trustDomain: example.org
tls: { cert: ${c}/orders.pem, key: ${c}/orders-key.pem, trustBundle: ${pki.rootFile} }
sts: { url: "https://127.0.0.1:${stsPort}", spiffeId: spiffe://example.org/ns/portcullis/sa/sts, issuer: https://sts.portcullis.internal, timeout: 300ms, jwksRefresh: 1s }
inbound: { listen: { host: 127.0.0.1, port: 0 }, app: "http://127.0.0.1:9", policy: ${dir}/policy.yaml }
metrics: { listen: { host: 127.0.0.1, port: ${metricsPort} } }
audit: { sink: collector, collector: "${collectorUrl}", collectorId: spiffe://example.org/ns/portcullis/sa/audit, spoolDir: ${dir}/spool-sidecar }
`,
      );
      writeFileSync(
        join(dir, 'sts.yaml'),
        `listen: { host: 127.0.0.1, port: ${stsPort} }
tls: { cert: ${c}/sts.pem, key: ${c}/sts-key.pem, trustBundle: ${pki.rootFile} }
identities: ${pki.identitiesDir}
issuer: https://sts.portcullis.internal
keystore: { type: file, dir: ${dir}/sts-keys }
audit: { sink: collector, collector: "${collectorUrl}", collectorId: spiffe://example.org/ns/portcullis/sa/audit, spoolDir: ${dir}/spool-sts }
`,
      );
      const sidecar = spawnPart(['sidecar', '--config', join(dir, 'sidecar.yaml')]);
      parts.push(sidecar.child);
      let sts: ReturnType<typeof spawnPart> | undefined;
      let stsAnswers: Answer[] = [];
      const sidecarAnswers = await pollUntilReady(
        `http://127.0.0.1:${metricsPort}/readyz`,
        anonymous,
        sidecar.child,
        45_000,
        async () => {
          // 3. The STS: keys unsealed and certificate loaded before it listens.
          sts = spawnPart(['sts', '--config', join(dir, 'sts.yaml')], {
            PORTCULLIS_MASTER_KEY: randomBytes(32).toString('base64'),
          });
          parts.push(sts.child);
          stsAnswers = await pollUntilReady(
            `https://127.0.0.1:${stsPort}/readyz`,
            anonymous,
            sts.child,
            30_000,
          );
        },
      );
      assertNotReadyThenReady('sts', stsAnswers, ['certificate', 'keys', 'audit']);
      assertNotReadyThenReady('sidecar', sidecarAnswers, ['certificate', 'jwks', 'policy', 'audit']);
      assert.ok(sidecarAnswers.length >= 2, 'the sidecar answered before the STS was up');
      assert.equal(
        sidecarAnswers[0]!.body.checks.jwks,
        'no signing keys from the STS yet',
        JSON.stringify(sidecarAnswers[0]),
      );
    } finally {
      for (const p of parts.reverse()) await stop(p);
      await anonymous.close();
      await asWeb.close();
      pki.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
