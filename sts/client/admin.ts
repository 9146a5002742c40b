import { isIP } from 'node:net';
import { Agent, request } from 'undici';
import { StsError } from '../errors.ts';
import type { KeySummary } from '../keyring/keyring.ts';

/** Options of {@link createStsAdminClient}: the STS URL and the admin's mTLS material (PEM text). */
export interface StsAdminClientOptions {
  readonly url: string;
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
  readonly timeoutMs?: number;
}

/** Calls the STS admin API over mTLS (what `portcullis keys` uses). */
export interface StsAdminClient {
  listKeys(): Promise<{ keys: KeySummary[] }>;
  rotate(): Promise<{ rotated: boolean; currentKid: string; activatesAt?: string; keys: KeySummary[] }>;
  revoke(entry: { jti?: string; serial?: string; expiresAt?: string }): Promise<unknown>;
  /** Creates a single-use join token for one registry entry (`ttl` like `15m`). */
  createJoinToken(request: { workload: string; ttl?: string }): Promise<{
    token: string;
    workload: string;
    spiffeId: string;
    expiresAt: string;
  }>;
  close(): Promise<void>;
}

/**
 * Builds an admin client. Failures are `ERR_STS_ADMIN_CALL_FAILED` carrying the STS's RFC 6749
 * `error` and description, or the connection problem.
 */
export function createStsAdminClient(options: StsAdminClientOptions): StsAdminClient {
  const base = new URL(options.url);
  const agent = new Agent({
    connect: {
      cert: options.cert,
      key: options.key,
      ca: options.ca,
      ...(isIP(base.hostname.replace(/^\[|\]$/g, '')) ? {} : { servername: base.hostname }),
    },
    headersTimeout: options.timeoutMs ?? 10_000,
    bodyTimeout: options.timeoutMs ?? 10_000,
  });
  const call = async (method: 'GET' | 'POST', path: string, body?: unknown) => {
    let res;
    try {
      res = await request(new URL(path, base), {
        method,
        dispatcher: agent,
        ...(body !== undefined
          ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }
          : {}),
      });
    } catch (err) {
      throw new StsError('ERR_STS_ADMIN_CALL_FAILED', `${method} ${path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const text = await res.body.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (res.statusCode !== 200) {
      const e = json as { error?: string; error_description?: string } | undefined;
      throw new StsError(
        'ERR_STS_ADMIN_CALL_FAILED',
        `${method} ${path}: HTTP ${res.statusCode} ${e?.error ?? ''}${e?.error_description ? `: ${e.error_description}` : ''}`,
      );
    }
    return json;
  };
  return {
    listKeys: () => call('GET', '/v1/admin/keys') as Promise<{ keys: KeySummary[] }>,
    rotate: () => call('POST', '/v1/admin/keys/rotate', {}) as ReturnType<StsAdminClient['rotate']>,
    revoke: (entry) => call('POST', '/v1/admin/revoke', entry),
    createJoinToken: (req) =>
      call('POST', '/v1/admin/join-tokens', req) as ReturnType<StsAdminClient['createJoinToken']>,
    close: () => agent.close(),
  };
}
