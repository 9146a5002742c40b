import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { Agent, request } from 'undici';
import { chainIntermediatesPem, createPeerVerifier, peerConnector } from '../../ca/index.ts';
import { parseSpiffeId } from '../../core/index.ts';
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
  const host = base.hostname.replace(/^\[|\]$/g, '');
  const timeoutMs = options.timeoutMs ?? 10_000;
  // The STS's certificate passes the X.509-SVID peer policy (serverAuth) of the admin's own trust
  // domain, then names the host dialed, as Node's default check would have required.
  const agent = new Agent({
    connect: peerConnector({
      material: { cert: options.cert, key: options.key, ca: options.ca },
      verifier: createPeerVerifier({
        trustAnchorsPem: options.ca,
        intermediatesPem: chainIntermediatesPem(options.cert),
        trustDomain: ownTrustDomain(options.cert),
        purpose: 'serverAuth',
      }),
      accept: (peer) => {
        // From the verified leaf: on a client socket Node 24 hands out the peer certificate once.
        const leaf = new X509Certificate(peer.leafDer);
        if ((isIP(host) ? leaf.checkIP(host) : leaf.checkHost(host)) === undefined)
          throw new StsError('ERR_STS_ADMIN_CALL_FAILED', `the STS certificate does not name ${host}`);
      },
      timeoutMs,
      onTimeout: () => new StsError('ERR_STS_ADMIN_CALL_FAILED', `TLS connect to ${base.host} timed out`),
      minVersion: 'TLSv1.2',
    }),
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
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
      const code = (err as { code?: string }).code;
      const why = code?.startsWith('ERR_CA_') ? `the STS certificate was refused [${code}]: ` : '';
      throw new StsError('ERR_STS_ADMIN_CALL_FAILED', `${method} ${path}: ${why}${(err as Error).message}`, {
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

/** The trust domain of the admin's own certificate: the STS must be in the same one. */
function ownTrustDomain(certPem: string): string {
  let uri: string | undefined;
  try {
    uri = /URI:(spiffe:\/\/[^,\s]+)/.exec(new X509Certificate(certPem).subjectAltName ?? '')?.[1];
  } catch (err) {
    throw new StsError(
      'ERR_STS_ADMIN_CALL_FAILED',
      'the admin certificate is not a readable PEM certificate',
      {
        cause: err,
      },
    );
  }
  if (!uri) throw new StsError('ERR_STS_ADMIN_CALL_FAILED', 'the admin certificate carries no SPIFFE ID');
  return parseSpiffeId(uri).trustDomain;
}
