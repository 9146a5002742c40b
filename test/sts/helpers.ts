/* eslint-disable @typescript-eslint/no-explicit-any -- test helpers hand back parsed JSON for assertions */
// Shared helpers of the STS tests: a real STS on port 0 over a real test PKI, and an mTLS client.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Agent, request } from 'undici';
import { MemoryAuditSink } from '../../core/index.ts';
import { createLogger } from '../../core/index.ts';
import { parseStsConfig, startSts } from '../../sts/index.ts';
import type { RunningSts, StartStsOverrides, StsConfig } from '../../sts/index.ts';
import type { TestPki } from '../helpers/pki.ts';

export const WEB = 'spiffe://example.org/ns/shop/sa/web';
export const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';
export const MASTER_KEY = randomBytes(32).toString('base64');

/** A silent logger for tests. */
export const quietLogger = () => createLogger({ name: 'sts-test', level: 'silent' });

/** Builds an STS config over the test PKI with a keystore dir of its own. */
export function testConfig(
  pki: TestPki,
  extra: Record<string, unknown> = {},
  keystoreDir?: string,
): StsConfig {
  return parseStsConfig(
    {
      listen: { host: '127.0.0.1', port: 0 },
      tls: {
        cert: join(pki.certsDir, 'sts.pem'),
        key: join(pki.certsDir, 'sts-key.pem'),
        trustBundle: pki.rootFile,
      },
      identities: pki.identitiesDir,
      issuer: 'https://sts.portcullis.internal',
      ...('keystore' in extra
        ? {}
        : { keystore: { type: 'file', dir: keystoreDir ?? mkdtempSync(join(tmpdir(), 'sts-keys-')) } }),
      audit: { sink: 'memory' },
      ...extra,
    },
    'test config',
  );
}

/** A running test STS with its memory audit sink. */
export interface TestSts extends RunningSts {
  readonly events: MemoryAuditSink['events'];
  readonly config: StsConfig;
}

/** Starts an STS for a test; `close()` stops it and removes its keystore dir. */
export async function startTestSts(
  pki: TestPki,
  extra: Record<string, unknown> = {},
  overrides: StartStsOverrides = {},
  keystoreDir?: string,
): Promise<TestSts> {
  const config = testConfig(pki, extra, keystoreDir);
  const audit = new MemoryAuditSink();
  const removeOwnKeystore = () => {
    if (!keystoreDir && config.keystore.type === 'file')
      rmSync(config.keystore.dir, { recursive: true, force: true });
  };
  let sts: RunningSts;
  try {
    sts = await startSts(config, { masterKey: MASTER_KEY, audit, logger: quietLogger(), ...overrides });
  } catch (err) {
    removeOwnKeystore();
    throw err;
  }
  return {
    ...sts,
    events: audit.events,
    config,
    async close() {
      await sts.close();
      if (!keystoreDir && config.keystore.type === 'file')
        rmSync(config.keystore.dir, { recursive: true, force: true });
    },
  };
}

/** Client credentials for one mTLS client (PEM text); without cert/key it connects anonymously. */
export interface ClientCreds {
  readonly cert?: string;
  readonly key?: string;
  readonly ca: string;
}

/** An undici agent presenting `creds`; close it after use. */
export function mtlsAgent(creds: ClientCreds, extra: Record<string, unknown> = {}): Agent {
  return new Agent({
    connect: {
      ca: creds.ca,
      ...(creds.cert ? { cert: creds.cert, key: creds.key } : {}),
      servername: 'localhost',
      ...extra,
    },
  });
}

/** One HTTP call; returns status, headers and parsed JSON (or text). */
export async function call(
  agent: Agent,
  url: string,
  options: { method?: string; body?: string; headers?: Record<string, string> } = {},
): Promise<{
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: any;
  text: string;
}> {
  const res = await request(url, {
    method: (options.method ?? 'GET') as 'GET',
    dispatcher: agent,
    ...(options.body !== undefined ? { body: options.body } : {}),
    headers: options.headers ?? {},
  });
  const text = await res.body.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.statusCode, headers: res.headers, json, text };
}

/** POSTs a form-encoded token request. */
export function requestToken(agent: Agent, baseUrl: string, form: Record<string, string | string[]>) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(form)) for (const one of [v].flat()) params.append(k, one);
  return call(agent, `${baseUrl}/oauth2/token`, {
    method: 'POST',
    body: params.toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
}

/** Decodes a JWT's header and payload without verifying. */
export function decodeJwt(token: string): { header: any; payload: any } {
  const [h, p] = token.split('.');
  return {
    header: JSON.parse(Buffer.from(h!, 'base64url').toString()),
    payload: JSON.parse(Buffer.from(p!, 'base64url').toString()),
  };
}
