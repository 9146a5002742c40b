// Issue 15, "nothing acted on is lost": the STS and the orders sidecar run as real processes with
// `failMode: closed` and a collector that is away. Tokens are issued and requests reach the app;
// then both processes are SIGKILLed mid-stream. Restarted on the same spools once the collector
// is back, they replay what they kept: every token that left the STS has its token.issued event,
// and every request the app saw has its authz.decision event, in a log whose chain verifies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { openFileStore, startCollector, verifyStore } from '../../audit/index.ts';
import type { AuditRecord, RunningCollector } from '../../audit/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { collectorConfig, quiet } from '../audit/collector-harness.ts';
import { mtlsAgent, requestToken } from '../sts/helpers.ts';
import { ISSUER, ORDERS, STS_ID, direct, identitiesYaml, startEchoApp } from './mesh.ts';

const COLLECTOR_ID = 'spiffe://example.org/ns/portcullis/sa/audit';
const MASTER_KEY = randomBytes(32).toString('base64');

/** Spawns `portcullis <part> --config <file>` and resolves with the process and its https URL once it listens. */
async function startPart(
  part: 'sts' | 'sidecar',
  config: string,
): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ['cli/portcullis.ts', part, '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PORTCULLIS_MASTER_KEY: MASTER_KEY },
  });
  let out = '';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${part} did not start: ${out}`)), 20_000);
    const look = (c: Buffer) => {
      out += c.toString();
      const m =
        part === 'sts'
          ? /listening on (https:\/\/127\.0\.0\.1:\d+)/.exec(out)
          : /"inbound":"(https:\/\/127\.0\.0\.1:\d+)"/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout!.on('data', look);
    child.stderr!.on('data', look);
    child.on('exit', (code) => reject(new Error(`${part} exited ${code}: ${out}`)));
  });
  return { child, url };
}

function kill(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

async function readLog(dir: string): Promise<AuditRecord[]> {
  const store = await openFileStore({ dir: join(dir, 'log'), readOnly: true });
  const out: AuditRecord[] = [];
  for await (const r of store.read(0)) out.push(r);
  const verdict = await verifyStore(store);
  await store.close();
  assert.ok(verdict.ok, JSON.stringify(verdict));
  return out;
}

test(
  'failMode closed: the STS and a sidecar SIGKILLed during a collector outage lose no event of a token sent or a request answered',
  { timeout: 120_000 },
  async () => {
    const pki: TestPki = await makeTestPki({ identitiesYaml: identitiesYaml('5m') });
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-audit-crash-'));
    const children: ChildProcess[] = [];
    let collector: RunningCollector | undefined = await startCollector(collectorConfig(pki, dir), {
      logger: quiet,
    });
    const port = collector.port;
    const app = await startEchoApp('orders');
    try {
      const audit = (name: string) => ({
        sink: 'collector',
        collector: `https://127.0.0.1:${port}`,
        collectorId: COLLECTOR_ID,
        spoolDir: join(dir, 'spool', name),
        failMode: 'closed',
      });
      const stsConfig = join(dir, 'sts.json');
      writeFileSync(
        stsConfig,
        JSON.stringify({
          listen: { host: '127.0.0.1', port: 0 },
          tls: pki.tlsConfig('sts'),
          identities: pki.identitiesDir,
          issuer: ISSUER,
          keystore: { type: 'file', dir: join(dir, 'keys') },
          audit: audit('sts'),
        }),
      );
      let sts = await startPart('sts', stsConfig);
      children.push(sts.child);
      const sidecarConfig = (stsUrl: string) => {
        const file = join(dir, 'orders.json');
        writeFileSync(
          file,
          JSON.stringify({
            service: ORDERS,
            trustDomain: 'example.org',
            tls: pki.tlsConfig('orders'),
            sts: { url: stsUrl, spiffeId: STS_ID, issuer: ISSUER, timeout: '2s' },
            inbound: {
              listen: { host: '127.0.0.1', port: 0 },
              app: app.url,
              policy: join(process.cwd(), 'policies/orders.yaml'),
            },
            audit: audit('orders'),
          }),
        );
        return file;
      };
      let orders = await startPart('sidecar', sidecarConfig(sts.url));
      children.push(orders.child);

      // The collector goes away; both parts keep working from their spools.
      await collector.close();
      collector = undefined;

      const web = pki.leaf('web');
      const agent = mtlsAgent({ cert: web.certPem, key: web.keyPem, ca: pki.rootPem });
      const tokensSent: string[] = [];
      const answered: string[] = [];
      const ordersPort = Number(new URL(orders.url).port);
      let stop = false;
      // Four concurrent streams of token requests and requests with them, until the SIGKILL.
      const stream = async (s: number) => {
        for (let i = 0; !stop; i++) {
          let token: string;
          try {
            const res = await requestToken(agent, sts.url, {
              grant_type: 'client_credentials',
              audience: ORDERS,
            });
            if (res.status !== 200) continue;
            token = (res.json as { access_token: string }).access_token;
          } catch {
            return; // the STS is gone
          }
          const jti = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).jti as string;
          tokensSent.push(jti);
          try {
            const res = await direct(
              ordersPort,
              { cert: web.certPem, key: web.keyPem },
              'GET',
              `/orders/${s}-${i}`,
              ['Authorization', `Bearer ${token}`],
            );
            if (res.status === 200) answered.push(`GET /orders/${s}-${i}`);
          } catch {
            return; // the sidecar is gone
          }
        }
      };
      const streams = [0, 1, 2, 3].map(stream);
      const deadline = Date.now() + 20_000;
      while (answered.length < 150 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.ok(answered.length >= 20, `only ${answered.length} requests answered before the kill`);
      await Promise.all([kill(sts.child), kill(orders.child)]);
      stop = true;
      await Promise.all(streams);
      await agent.close();
      const appSaw = app.seen.map((r: { method: string; url: string }) => `${r.method} ${r.url}`);
      assert.ok(appSaw.length >= answered.length);

      // The collector comes back on its address; the parts restart on their spools and replay them.
      collector = await startCollector(collectorConfig(pki, dir, { listen: { host: '127.0.0.1', port } }), {
        logger: quiet,
      });
      sts = await startPart('sts', stsConfig);
      children.push(sts.child);
      orders = await startPart('sidecar', sidecarConfig(sts.url));
      children.push(orders.child);
      const wanted = () => {
        const issued = new Set<string>();
        const decided = new Set<string>();
        return { issued, decided };
      };
      let seen = wanted();
      const end = Date.now() + 30_000;
      for (;;) {
        seen = wanted();
        const store = await openFileStore({ dir: join(dir, 'log'), readOnly: true });
        for await (const r of store.read(0)) {
          if (r.event.type === 'token.issued' && r.event.jti) seen.issued.add(r.event.jti);
          if (r.event.type === 'authz.decision' && r.event.decision === 'allow')
            seen.decided.add(r.event.action!);
        }
        await store.close();
        const done = tokensSent.every((j) => seen.issued.has(j)) && appSaw.every((a) => seen.decided.has(a));
        if (done || Date.now() > end) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.deepEqual(
        tokensSent.filter((j) => !seen.issued.has(j)),
        [],
        `tokens sent without a token.issued event (of ${tokensSent.length})`,
      );
      assert.deepEqual(
        appSaw.filter((a) => !seen.decided.has(a)),
        [],
        `requests the app saw without an authz.decision event (of ${appSaw.length})`,
      );
      await Promise.all(
        children.map(
          (c) =>
            new Promise<void>((r) => {
              if (c.exitCode !== null || c.signalCode !== null) return r();
              c.once('exit', () => r());
              c.kill('SIGTERM');
            }),
        ),
      );
      await collector.close();
      collector = undefined;
      await readLog(dir);
    } finally {
      await Promise.all(children.map(kill));
      await collector?.close();
      await new Promise((r) => app.server.close(r));
      rmSync(dir, { recursive: true, force: true });
      pki.cleanup();
    }
  },
);
