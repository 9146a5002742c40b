import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DELIVERY_FAILING, createAuditClient } from '../../audit/index.ts';
import { createLogger } from '../../core/index.ts';
import type { AuditEvent } from '../../core/index.ts';

/**
 * Posts `events` to a collector over mTLS (the collector stamps `source` with the caller's
 * SPIFFE ID) and waits until every one is delivered, or throws saying how many were not within
 * `timeoutMs`. The spool is a temporary directory: what is not delivered stays in the caller's file.
 */
export async function sendEvents(
  events: readonly AuditEvent[],
  remote: {
    url: string;
    cert: string;
    key: string;
    trustBundle: string;
    collectorId: string;
    timeoutMs?: number;
  },
): Promise<number> {
  const spoolDir = mkdtempSync(join(tmpdir(), 'portcullis-send-'));
  let lastFailure: string | undefined;
  const client = createAuditClient({
    url: remote.url,
    tls: { cert: remote.cert, key: remote.key, trustBundle: remote.trustBundle },
    collectorId: remote.collectorId,
    spoolDir,
    spoolMaxBytes: 64 * 1024 * 1024,
    failMode: 'closed',
    retryMaxMs: 1000,
    // Not printed: the last delivery failure (the collector's refusal, or why it is unreachable)
    // is kept for the error message.
    logger: createLogger({
      name: 'cli',
      level: 'warn',
      destination: {
        write(line: string) {
          // pino writes one JSON object per line. The delivery failure names the reason; another
          // warning only stands in until one comes.
          const { msg } = JSON.parse(line) as { msg?: string };
          if (msg && (!lastFailure || msg.startsWith(DELIVERY_FAILING))) lastFailure = msg;
        },
      },
    }),
  });
  try {
    for (const e of events) client.emit(e);
    const done = client.flush();
    const timeout = new Promise<'timeout'>((r) =>
      setTimeout(() => r('timeout'), remote.timeoutMs ?? 15_000).unref(),
    );
    await Promise.race([done, timeout]);
    const delivered = client.metrics().delivered;
    if (delivered < events.length)
      throw new Error(
        `${remote.url}: ${events.length - delivered} of ${events.length} audit events not delivered (${lastFailure ?? 'collector unreachable or refusing'})`,
      );
    return delivered;
  } finally {
    await Promise.race([client.close(), new Promise((r) => setTimeout(r, 2000).unref())]);
    rmSync(spoolDir, { recursive: true, force: true });
  }
}
