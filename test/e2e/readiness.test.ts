// /readyz of every part, started as the CLI starts it (issue 19): a probe polling from the moment
// the process is spawned sees no answer until the port listens, then 503 for as long as a
// certificate, key, policy or store is missing, then 200 with every check "ok" — never a 200
// before. Each part's ops listener (`metrics.listen`, plain HTTP) opens before it loads anything,
// so it answers 503 naming what is still loading: the collector's store (a restart rebuilds the
// Merkle tree of the records already written) and the STS's keystore and keyring; the sidecar is
// 503 until it holds the STS's keys. Their mTLS listeners open once everything is loaded and
// answer the same checks. A collector that cannot save its checkpoint turns 503 again, naming why.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Agent, request } from 'undici';
import { makeTestPki } from '../helpers/pki.ts';
import { decision } from '../audit/helpers.ts';
import { startFakeVault } from '../sts/keystore/fake-vault.ts';

const CLI = new URL('../../cli/portcullis.ts', import.meta.url).pathname;
const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';
const COLLECTOR_CHECKS = ['certificate', 'store', 'signingKey', 'checkpoint'];
/** Batches of 1000 records written before the collector restarts (its catch-up is then measurable). */
const PREFILL_BATCHES = 20;

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
 * Polls `url` every `everyMs` (20 ms unless told) from now until it answers 200 (or `ms` pass)
 * and returns every answer seen, in order. `meanwhile` runs once the first answer came (to make the part ready).
 */
async function pollUntilReady(
  url: string,
  dispatcher: Agent,
  child: ChildProcess,
  ms: number,
  meanwhile?: () => Promise<void>,
  everyMs = 20,
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
    await new Promise((r) => setTimeout(r, everyMs));
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
    const closers: (() => Promise<void>)[] = [];
    try {
      // 1. The collector: store, signing key, checkpoint directory and certificate, then listens.
      const collectorPort = await freePort();
      const collectorOpsPort = await freePort();
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
metrics: { listen: { host: 127.0.0.1, port: ${collectorOpsPort} } }
`,
      );
      const collector = spawnPart(['audit', 'serve', '--config', join(dir, 'audit.yaml')]);
      parts.push(collector.child);
      const collectorUrl = `https://127.0.0.1:${collectorPort}`;
      // Its ops listener answers before anything is loaded: 503 naming what is missing, then 200.
      const collectorOps = await pollUntilReady(
        `http://127.0.0.1:${collectorOpsPort}/readyz`,
        anonymous,
        collector.child,
        30_000,
        undefined,
        2,
      );
      // (A fresh store loads in a few milliseconds, so the first answer may already be 200; the
      // restart below, over 20,000 records, always shows the 503 window.)
      assertNotReadyThenReady('collector ops listener', collectorOps, [...COLLECTOR_CHECKS, 'listener']);
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

      // A restart over a store that already holds records: the ops listener answers while the
      // Merkle tree is rebuilt from them, naming the store as the check that fails.
      const batch = (from: number) =>
        request(`${collectorUrl}/v1/events`, {
          method: 'POST',
          dispatcher: asWeb,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ events: Array.from({ length: 1000 }, (_, i) => decision(from + i)) }),
        }).then((r) => (r.body.dump(), r.statusCode));
      for (let b = 0; b < PREFILL_BATCHES; b++) assert.equal(await batch(10 + b * 1000), 200);
      await stop(collector.child);
      const restarted = spawnPart(['audit', 'serve', '--config', join(dir, 'audit.yaml')]);
      parts.push(restarted.child);
      const restartOps = await pollUntilReady(
        `http://127.0.0.1:${collectorOpsPort}/readyz`,
        anonymous,
        restarted.child,
        30_000,
        undefined,
        0,
      );
      assertNotReadyThenReady('restarted collector ops listener', restartOps, [
        ...COLLECTOR_CHECKS,
        'listener',
      ]);
      assert.ok(
        restartOps.some((a) => a.body.checks.store === 'the store is opening (rebuilding the Merkle tree)'),
        `a 503 while the store opens: ${JSON.stringify(restartOps)}`,
      );
      assertNotReadyThenReady(
        'restarted collector',
        await pollUntilReady(`${collectorUrl}/readyz`, anonymous, restarted.child, 10_000),
        COLLECTOR_CHECKS,
      );

      // 2. The sidecar, before the STS is up: its ops listener answers at once, 503 without the
      // STS's signing keys, and 200 once the STS (started after its first answer) serves them.
      // The STS's keys live in a Vault (the KV v2 fake) that answers only once the test has seen
      // the STS's ops listener say 503: the window in which the keystore is not open is certain.
      let releaseVault!: () => void;
      const vaultGate = new Promise<void>((r) => (releaseVault = r));
      const vault = await startFakeVault('secret', 'readiness-token', () => vaultGate);
      closers.push(() => (releaseVault(), vault.close()));
      const stsPort = await freePort();
      const stsOpsPort = await freePort();
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
keystore: { type: vault, address: "${vault.address}", mount: secret, path: portcullis/sts/keyring }
audit: { sink: collector, collector: "${collectorUrl}", collectorId: spiffe://example.org/ns/portcullis/sa/audit, spoolDir: ${dir}/spool-sts }
metrics: { listen: { host: 127.0.0.1, port: ${stsOpsPort} } }
`,
      );
      const sidecar = spawnPart(['sidecar', '--config', join(dir, 'sidecar.yaml')]);
      parts.push(sidecar.child);
      let sts: ReturnType<typeof spawnPart> | undefined;
      let stsAnswers: Answer[] = [];
      let stsOps: Answer[] = [];
      const sidecarAnswers = await pollUntilReady(
        `http://127.0.0.1:${metricsPort}/readyz`,
        anonymous,
        sidecar.child,
        45_000,
        async () => {
          // 3. The STS: keys unsealed and certificate loaded before it listens.
          sts = spawnPart(['sts', '--config', join(dir, 'sts.yaml')], { VAULT_TOKEN: vault.token });
          parts.push(sts.child);
          // Its ops listener: 503 while the keystore opens and the keyring loads, then 200.
          stsOps = await pollUntilReady(
            `http://127.0.0.1:${stsOpsPort}/readyz`,
            anonymous,
            sts.child,
            30_000,
            async () => releaseVault(),
          );
          stsAnswers = await pollUntilReady(
            `https://127.0.0.1:${stsPort}/readyz`,
            anonymous,
            sts.child,
            30_000,
          );
        },
      );
      assertNotReadyThenReady('sts', stsAnswers, ['certificate', 'keys', 'audit']);
      assertNotReadyThenReady('sts ops listener', stsOps, ['certificate', 'keys', 'audit', 'listener']);
      assert.equal(stsOps[0]!.body.checks.keys, 'the keystore is not open yet', JSON.stringify(stsOps[0]));
      assert.equal(stsOps[0]!.body.checks.listener, 'the mTLS listener is not open yet');
      assertNotReadyThenReady('sidecar', sidecarAnswers, ['certificate', 'jwks', 'policy', 'audit']);
      assert.ok(sidecarAnswers.length >= 2, 'the sidecar answered before the STS was up');
      assert.equal(
        sidecarAnswers[0]!.body.checks.jwks,
        'no signing keys from the STS yet',
        JSON.stringify(sidecarAnswers[0]),
      );
    } finally {
      for (const p of parts.reverse()) await stop(p);
      for (const close of closers) await close();
      await anonymous.close();
      await asWeb.close();
      pki.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
