// Starts real collectors over real mTLS with the test PKI, and talks to them as a workload would.
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { createLogger } from '../../core/index.ts';
import type { AuditConfigInput, RunningCollector } from '../../audit/index.ts';
import { parseAuditConfig, startCollector } from '../../audit/index.ts';
import type { TestPki } from '../helpers/pki.ts';

/** A silent logger for servers under test. */
export const quiet = createLogger({ name: 'test', level: 'silent' });

/** Collector config for the test PKI, storing under `dir`. */
export function collectorConfig(pki: TestPki, dir: string, extra: Partial<AuditConfigInput> = {}) {
  return parseAuditConfig({
    listen: { host: '127.0.0.1', port: 0 },
    tls: { cert: pki.leaf('audit').certFile, key: pki.leaf('audit').keyFile, trustBundle: pki.rootFile },
    identities: pki.identitiesDir,
    origin: 'example.org/audit',
    dataDir: join(dir, 'data'),
    store: `file:${join(dir, 'log')}`,
    checkpoint: { everyRecords: 1000, interval: '1h' },
    ...extra,
  });
}

/** Starts a collector for the test PKI. */
export function startTestCollector(
  pki: TestPki,
  dir: string,
  extra: Partial<AuditConfigInput> = {},
): Promise<RunningCollector> {
  return startCollector(collectorConfig(pki, dir, extra), { logger: quiet });
}

/** An mTLS HTTP client presenting `certPem`/`keyPem` (or no certificate at all). */
export function workloadAgent(pki: TestPki, creds?: { certPem: string; keyPem: string }): Agent {
  return new Agent({
    connect: {
      ca: pki.rootPem,
      ...(creds ? { cert: creds.certPem, key: creds.keyPem } : {}),
      servername: 'localhost',
      checkServerIdentity: () => undefined,
    },
  });
}

/** Performs a request and returns status, headers and body (JSON when it parses). */
export async function call(
  agent: Agent,
  url: string,
  options: { method?: 'GET' | 'POST'; body?: unknown; rawBody?: string } = {},
): Promise<{ status: number; body: unknown; text: string }> {
  const res = await request(url, {
    method: options.method ?? 'GET',
    dispatcher: agent,
    headers:
      options.body !== undefined || options.rawBody !== undefined
        ? { 'content-type': 'application/json' }
        : {},
    body: options.rawBody ?? (options.body === undefined ? undefined : JSON.stringify(options.body)),
  });
  const text = await res.body.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // text/plain
  }
  return { status: res.statusCode, body, text };
}
