// `node bench/audit/client.ts [open|closed] [requests]`: the audit client alone (decision 0028)
// against a real collector in its own process. 64 concurrent "requests", each recording one event
// (`record`, which waits for the spool fsync in failMode closed) and emitting a second (as the
// sidecar does in closed mode); prints one `BENCH_AUDIT_CLIENT {json}` line: events/s, client
// CPU µs per event (this process: spool writes, batching, TLS posts), spool writes, losses.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { examplePki } from '../pki.ts';
import { COLLECTOR_ID, startBenchCollector } from '../collector.ts';
import { createAuditClient } from '../../audit/index.ts';
import { createLogger } from '../../core/index.ts';
import type { AuditEvent } from '../../core/index.ts';

const failMode = (process.argv[2] ?? 'open') as 'open' | 'closed';
if (failMode !== 'open' && failMode !== 'closed')
  throw new Error('usage: client.ts [open|closed] [requests]');
const N = Number(process.argv[3] ?? 30_000);
const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-client-'));
try {
  const { ids, certs } = await examplePki(dir);
  const collector = await startBenchCollector(join(dir, 'collector'), ids, certs);
  const client = createAuditClient({
    url: collector.url,
    collectorId: COLLECTOR_ID,
    tls: {
      cert: join(certs, 'orders.pem'),
      key: join(certs, 'orders-key.pem'),
      trustBundle: join(certs, 'root.pem'),
    },
    spoolDir: join(dir, 'spool'),
    spoolMaxBytes: 500_000_000,
    failMode,
    logger: createLogger({ name: 'bench-audit-client', level: 'warn' }),
  });
  // A sidecar's allowed-request event, as big as the real ones.
  const event = (i: number): AuditEvent => ({
    type: 'authz.decision',
    time: new Date().toISOString(),
    source: 'spiffe://example.org/ns/shop/sa/orders',
    target: 'spiffe://example.org/ns/shop/sa/orders',
    action: `GET /orders/${i}`,
    decision: 'allow',
    enforced: true,
    reason: 'allowed',
    status: 200,
    latencyMs: 1.2,
    traceId: '0123456789abcdef0123456789abcdef',
    subject: 'spiffe://example.org/ns/shop/sa/web',
    rule: 'storefront-reads-orders',
    policyHash: 'abcdef0123456789',
    jti: '1b2c3d4e-aaaa-bbbb-cccc-1234567890ab',
  });
  await client.flush();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (next < N) {
        const i = next++;
        await client.record(event(i));
        client.emit(event(i));
        // Like a server between requests: let I/O run (record does not wait in failMode open).
        if (failMode === 'open') await new Promise((r) => setImmediate(r));
      }
    }),
  );
  await client.flush();
  // Until the collector has acknowledged every event (flush may resolve once they are spooled).
  for (
    const end = Date.now() + 120_000;
    client.metrics().delivered + client.metrics().lost < 2 * N && Date.now() < end;
  )
    await new Promise((r) => setTimeout(r, 5));
  const cpu = process.cpuUsage(cpu0);
  const ms = performance.now() - t0;
  const m = client.metrics();
  await client.close();
  await collector.stop();
  console.log(
    `BENCH_AUDIT_CLIENT ${JSON.stringify({
      date: new Date().toISOString(),
      failMode,
      requests: N,
      events: 2 * N,
      ms: Math.round(ms),
      eventsPerSec: Math.round((2 * N) / (ms / 1000)),
      cpuUsPerEvent: +((cpu.user + cpu.system) / (2 * N)).toFixed(2),
      spoolWrites: m.spoolWrites,
      delivered: m.delivered,
      lost: m.lost,
    })}`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
