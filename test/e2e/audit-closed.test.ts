// failMode closed at the sidecar and the STS, with the real audit client and its collector away:
// a request reaches the app only once its authz.decision event is in the spool on disk, a token
// leaves only once its token.issued event is; when the spool cannot take the event, the request
// is refused with 503 and nothing is acted on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createLogger } from '../../core/index.ts';
import { parseSidecarConfig, startSidecar } from '../../sidecar/index.ts';
import { createAuditClient } from '../../audit/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { decodeJwt, mtlsAgent, requestToken, startTestSts } from '../sts/helpers.ts';
import { ISSUER, ORDERS, STS_ID, direct, startMesh } from './mesh.ts';

test(
  'failMode closed: each forwarded request has its decision in the spool before the app sees it; past a full spool, 503 and the app sees nothing',
  { timeout: 60_000 },
  async () => {
    const mesh = await startMesh();
    const spoolDir = join(mesh.dir, 'closed-spool');
    const quiet = createLogger({ name: 'e2e', level: 'silent' });
    const orders = await startSidecar(
      parseSidecarConfig(
        {
          service: ORDERS,
          trustDomain: 'example.org',
          tls: {
            cert: mesh.pki.leaf('orders').certFile,
            key: mesh.pki.leaf('orders').keyFile,
            trustBundle: mesh.pki.rootFile,
          },
          sts: { url: mesh.sts.url, spiffeId: STS_ID, issuer: ISSUER, timeout: '1s' },
          inbound: {
            listen: { host: '127.0.0.1', port: 0 },
            app: mesh.ordersApp.url,
            policy: mesh.ordersPolicyFile,
          },
          audit: {
            sink: 'collector',
            // Nobody listens: the spool is all there is.
            collector: 'https://127.0.0.1:1',
            collectorId: 'spiffe://example.org/ns/portcullis/sa/audit',
            spoolDir,
            spoolMaxBytes: 4096,
            failMode: 'closed',
          },
        },
        'e2e closed orders',
      ),
      { logger: quiet, defaultMetrics: false },
    );
    const web = mesh.pki.leaf('web');
    const agent = mtlsAgent({ cert: web.certPem, key: web.keyPem, ca: mesh.pki.rootPem });
    try {
      const token = (
        await requestToken(agent, mesh.sts.url, { grant_type: 'client_credentials', audience: ORDERS })
      ).json.access_token as string;
      const spooled = () =>
        readdirSync(spoolDir)
          .filter((f) => f.startsWith('spool-'))
          .map((f) => readFileSync(join(spoolDir, f), 'utf8'))
          .join('')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as { type: string; action: string; status?: number });
      const answered: string[] = [];
      let refused: { status: number; error: string } | undefined;
      for (let i = 0; i < 30 && !refused; i++) {
        const seenBefore = mesh.ordersApp.seen.length;
        const res = await direct(
          orders.inbound.port,
          { cert: web.certPem, key: web.keyPem },
          'GET',
          `/orders/c${i}`,
          ['Authorization', `Bearer ${token}`],
        );
        if (res.status === 200) {
          answered.push(`GET /orders/c${i}`);
          // The app saw it, and its decision was on disk before: the decision line has no status.
          const decision = spooled().find(
            (e) => e.type === 'authz.decision' && e.action === `GET /orders/c${i}`,
          );
          assert.ok(decision, `decision of request ${i} in the spool`);
          assert.equal(decision.status, undefined);
        } else {
          refused = { status: res.status, error: res.json().error };
          assert.equal(mesh.ordersApp.seen.length, seenBefore, 'a refused request never reaches the app');
        }
      }
      assert.ok(answered.length >= 1, 'some requests went through before the spool filled');
      assert.deepEqual(refused, { status: 503, error: 'ERR_SIDECAR_AUDIT_UNAVAILABLE' });
      const appSaw = mesh.ordersApp.seen
        .map((r: { method: string; url: string }) => `${r.method} ${r.url}`)
        .filter((a: string) => a.startsWith('GET /orders/c'));
      assert.deepEqual(appSaw, answered);
      // Every answered request but perhaps the last also has its response event with the status.
      const responses = spooled().filter((e) => e.type === 'authz.response');
      assert.ok(responses.length >= answered.length - 1);
      assert.ok(responses.every((e) => e.status === 200));
    } finally {
      await agent.close();
      await orders.close();
      await mesh.close();
    }
  },
);

test(
  'failMode closed: the STS sends a token only once its token.issued event is in the spool; past a full spool, 503 temporarily_unavailable',
  { timeout: 60_000 },
  async () => {
    const pki = await makeTestPki();
    const spoolDir = join(pki.dir, 'sts-spool');
    const audit = createAuditClient({
      url: 'https://127.0.0.1:1',
      collectorId: 'spiffe://example.org/ns/portcullis/sa/audit',
      tls: { cert: pki.leaf('sts').certFile, key: pki.leaf('sts').keyFile, trustBundle: pki.rootFile },
      spoolDir,
      spoolMaxBytes: 8192,
      failMode: 'closed',
      logger: createLogger({ name: 'e2e', level: 'silent' }),
    });
    const sts = await startTestSts(pki, {}, { audit });
    const web = pki.leaf('web');
    const agent = mtlsAgent({ cert: web.certPem, key: web.keyPem, ca: pki.rootPem });
    try {
      const issued = () =>
        readdirSync(spoolDir)
          .filter((f) => f.startsWith('spool-'))
          .flatMap((f) => readFileSync(join(spoolDir, f), 'utf8').split('\n').filter(Boolean))
          .map((l) => JSON.parse(l) as { type: string; jti?: string })
          .filter((e) => e.type === 'token.issued')
          .map((e) => e.jti);
      const jtis: string[] = [];
      let refused: { status: number; error: string } | undefined;
      for (let i = 0; i < 60 && !refused; i++) {
        const res = await requestToken(agent, sts.url, {
          grant_type: 'client_credentials',
          audience: ORDERS,
        });
        if (res.status === 200) {
          const jti = decodeJwt(res.json.access_token as string).payload.jti as string;
          assert.ok(issued().includes(jti), `token ${i}: its token.issued event is on disk when it arrives`);
          jtis.push(jti);
        } else refused = { status: res.status, error: res.json.error as string };
      }
      assert.ok(jtis.length >= 1);
      assert.deepEqual(refused, { status: 503, error: 'temporarily_unavailable' });
    } finally {
      await agent.close();
      await sts.close();
      await audit.close();
      pki.cleanup();
    }
  },
);
