import { Agent, request } from 'undici';
import type { PeerVerifier } from '../ca/index.ts';
import { SidecarError } from './errors.ts';
import type { RevocationsResponse } from './revocations.ts';
import { createMtlsConnector } from './tls/connector.ts';
import type { TlsMaterial } from '../ca/index.ts';

/** A token from the STS and when it stops being usable (ms since the epoch). */
export interface FetchedToken {
  readonly token: string;
  readonly expiresAtMs: number;
}

/** The three calls the sidecar makes to the STS, all over mTLS with the sidecar's certificate. */
export interface StsClient {
  fetchJwks(): Promise<unknown>;
  fetchRevocations(etag: string | undefined): Promise<RevocationsResponse>;
  /** `traceparent`, when given, makes the STS's `sts.token` span a child of the caller's span. */
  requestToken(audience: string, traceparent?: string): Promise<FetchedToken>;
  close(): Promise<void>;
}

const MAX_BODY = 256 * 1024;

/**
 * The sidecar's only I/O with the STS (docs/sts.md): `GET /.well-known/jwks.json`,
 * `GET /v1/revocations` with If-None-Match, `POST /oauth2/token` (client credentials). The STS's
 * own SPIFFE ID is checked on every connection. Every call is bounded by `timeoutMs`; failures
 * reject with `ERR_SIDECAR_STS_UNAVAILABLE` and a short reason.
 */
export function createStsClient(opts: {
  readonly url: string;
  readonly spiffeId: string;
  readonly material: () => TlsMaterial;
  readonly verifier: () => PeerVerifier;
  readonly timeoutMs: number;
  readonly clock: () => number;
}): StsClient {
  const base = new URL(opts.url);
  let agent = makeAgent();
  let material = opts.material();
  function makeAgent() {
    return new Agent({
      connect: createMtlsConnector({
        material: opts.material,
        verifier: opts.verifier,
        expectedId: opts.spiffeId,
        timeoutMs: opts.timeoutMs,
        timeoutCode: 'ERR_SIDECAR_STS_UNAVAILABLE',
      }),
      keepAliveTimeout: 30_000,
      connections: 4,
    });
  }
  /** A reloaded certificate must not ride an old connection: new agent, old one drained. */
  function dispatcher(): Agent {
    const m = opts.material();
    if (m !== material) {
      material = m;
      const old = agent;
      agent = makeAgent();
      void old.close().catch(() => {});
    }
    return agent;
  }
  async function call(
    path: string,
    init: { method: 'GET' | 'POST'; headers?: Record<string, string>; body?: string },
  ) {
    try {
      const res = await request(new URL(path, base), {
        ...init,
        dispatcher: dispatcher(),
        headersTimeout: opts.timeoutMs,
        bodyTimeout: opts.timeoutMs,
        signal: AbortSignal.timeout(opts.timeoutMs),
      });
      const text = await readCapped(res.body);
      return { status: res.statusCode, headers: res.headers, text };
    } catch (err) {
      throw new SidecarError(
        'ERR_SIDECAR_STS_UNAVAILABLE',
        `token service unreachable: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
  const json = (text: string) => {
    try {
      return JSON.parse(text) as unknown;
    } catch (err) {
      throw new SidecarError('ERR_SIDECAR_STS_UNAVAILABLE', 'token service answered with invalid JSON', {
        cause: err,
      });
    }
  };
  return {
    async fetchJwks() {
      const r = await call('/.well-known/jwks.json', { method: 'GET' });
      if (r.status !== 200)
        throw new SidecarError('ERR_SIDECAR_STS_UNAVAILABLE', `JWKS answered ${r.status}`);
      return json(r.text);
    },
    async fetchRevocations(etag) {
      const r = await call('/v1/revocations', {
        method: 'GET',
        headers: etag ? { 'if-none-match': etag } : {},
      });
      if (r.status === 304) return { status: 304 };
      if (r.status !== 200)
        throw new SidecarError('ERR_SIDECAR_STS_UNAVAILABLE', `revocations answered ${r.status}`);
      const tag = r.headers.etag;
      return { status: 200, etag: typeof tag === 'string' ? tag : undefined, body: json(r.text) };
    },
    async requestToken(audience, traceparent) {
      const sentAt = opts.clock();
      const r = await call('/oauth2/token', {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          ...(traceparent ? { traceparent } : {}),
        },
        body: new URLSearchParams({ grant_type: 'client_credentials', audience }).toString(),
      });
      const body = json(r.text) as { access_token?: unknown; expires_in?: unknown; error?: unknown };
      if (r.status !== 200 || typeof body.access_token !== 'string' || typeof body.expires_in !== 'number') {
        const why = typeof body.error === 'string' ? body.error : `status ${r.status}`;
        throw new SidecarError('ERR_SIDECAR_STS_UNAVAILABLE', `token request refused (${why})`);
      }
      // Counted from when the request was sent, so that a slow answer errs on the early side.
      return { token: body.access_token, expiresAtMs: sentAt + body.expires_in * 1000 };
    },
    async close() {
      await agent.close();
    },
  };
}

async function readCapped(body: AsyncIterable<Buffer>): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > MAX_BODY) throw new Error('response too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
