// Issue #5's end-to-end point: traffic through two sidecars while the audit collector is away.
// The parts spool, the collector comes back on the same address, and afterwards every event is
// in the log, in order, the chain verifies, and there is one authz.decision per request made.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAuditClient, openFileStore, verifyStore } from '../../audit/index.ts';
import type { AuditClient, AuditRecord, RunningCollector } from '../../audit/index.ts';
import type { TestPki } from '../helpers/pki.ts';
import { collectorConfig, quiet } from '../audit/collector-harness.ts';
import { startCollector } from '../../audit/index.ts';
import { startMesh, viaProxy } from './mesh.ts';

const COLLECTOR_ID = 'spiffe://example.org/ns/portcullis/sa/audit';

test(
  'a collector outage during traffic through two sidecars loses nothing and keeps order',
  { timeout: 120_000 },
  async () => {
    let collector: RunningCollector | undefined;
    let collectorDir = '';
    let port = 0;
    const clients: Record<string, AuditClient> = {};
    const client = (pki: TestPki, dir: string, name: 'sts' | 'web' | 'orders') =>
      (clients[name] = createAuditClient({
        url: `https://127.0.0.1:${port}`,
        collectorId: COLLECTOR_ID,
        tls: { cert: pki.leaf(name).certFile, key: pki.leaf(name).keyFile, trustBundle: pki.rootFile },
        spoolDir: join(dir, 'spool', name),
        spoolMaxBytes: 10_000_000,
        failMode: 'closed',
        retryMinMs: 50,
        retryMaxMs: 200,
        logger: quiet,
      }));
    let pkiRef: TestPki | undefined;
    const mesh = await startMesh({
      async audit(pki, dir) {
        pkiRef = pki;
        collectorDir = mkdtempSync(join(tmpdir(), 'portcullis-outage-'));
        collector = await startCollector(collectorConfig(pki, collectorDir), { logger: quiet });
        port = collector.port;
        return {
          sts: client(pki, dir, 'sts'),
          web: client(pki, dir, 'web'),
          orders: client(pki, dir, 'orders'),
        };
      },
    });
    const made: string[] = [];
    const send = async (i: number) => {
      const method = i % 5 === 4 ? 'POST' : 'GET';
      const res = await viaProxy(mesh.web.outbound!.port, method, `http://orders.shop.internal/orders/${i}`);
      assert.equal(res.status, method === 'GET' ? 200 : 403, res.body);
      made.push(`${method} /orders/${i}`);
    };
    try {
      for (let i = 0; i < 60; i++) await send(i);
      await collector!.close();
      collector = undefined;
      for (let i = 60; i < 180; i++) await send(i);
      // With the collector away the decisions wait in the orders sidecar's spool, not in memory.
      await clients.orders!.flush();
      assert.ok(clients.orders!.metrics().spoolDepth > 0, JSON.stringify(clients.orders!.metrics()));
      assert.equal(clients.orders!.accepting(), true);

      collector = await startCollector(
        collectorConfig(pkiRef!, collectorDir, { listen: { host: '127.0.0.1', port } }),
        { logger: quiet },
      );
      for (let i = 180; i < 240; i++) await send(i);
      const end = Date.now() + 30_000;
      while (Object.values(clients).some((c) => c.metrics().spoolDepth > 0 || c.metrics().queueDepth > 0)) {
        if (Date.now() > end)
          throw new Error(`spools not drained: ${JSON.stringify(clients.orders!.metrics())}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      for (const c of Object.values(clients)) await c.flush();
      for (const c of Object.values(clients)) assert.equal(c.metrics().lost, 0);
      await mesh.close();
      await collector.close();
      collector = undefined;

      const store = await openFileStore({ dir: join(collectorDir, 'log'), readOnly: true });
      const records: AuditRecord[] = [];
      for await (const r of store.read(0)) records.push(r);
      const verdict = await verifyStore(store);
      await store.close();
      assert.ok(verdict.ok, JSON.stringify(verdict));
      const decisions = records.filter((r) => r.event.type === 'authz.decision');
      assert.equal(decisions.length, made.length);
      assert.deepEqual(
        decisions.map((r) => r.event.action),
        made,
      );
      assert.ok(decisions.every((r) => r.event.source === 'spiffe://example.org/ns/shop/sa/orders'));
      assert.ok(
        records.some(
          (r) =>
            r.event.type === 'token.issued' && r.event.source === 'spiffe://example.org/ns/portcullis/sa/sts',
        ),
      );
    } finally {
      await mesh.close().catch(() => {});
      await collector?.close().catch(() => {});
      if (collectorDir) rmSync(collectorDir, { recursive: true, force: true });
    }
  },
);
