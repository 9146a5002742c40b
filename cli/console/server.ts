// `portcullis console`: a loopback-only web server for security and platform teams. It is a
// client of the collector's query API (docs/audit.md), authenticated with the operator's own
// certificate; a random session secret guards the page (docs/console.md).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { isIP } from 'node:net';
import type { AddressInfo } from 'node:net';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  CheckpointError,
  CollectorClientError,
  ProofInvalidError,
  createCollectorReadClient,
  toRecord,
  verifyCheckpoint,
  verifyConsistency,
  verifyInclusionBundle,
} from '../../audit/index.ts';
import type { CollectorApiOptions, InclusionBundle } from '../../audit/index.ts';
import { ConfigError, PortcullisError } from '../../core/index.ts';
import { openDecisionSource, parsePolicy, replayDecisions, resolveSince } from '../../sidecar/index.ts';

/**
 * Name of the session cookie (HttpOnly, SameSite=Strict) of the console on `port`: cookies are not
 * kept apart by port, so two consoles on one machine each need their own name.
 */
export const sessionCookie = (port: number) => `portcullis_console_${port}`;

/** Options of {@link startConsole}. */
export interface ConsoleOptions {
  /** A loopback address: 127.0.0.0/8, ::1 or localhost. Anything else is refused. */
  readonly host: string;
  /** 0: an unused port. */
  readonly port: number;
  /** The collector and the operator's identity (role audit-reader). */
  readonly collector: CollectorApiOptions;
  /** The collector's checkpoint verifier key (`name+id+key`): every checkpoint is checked with it. */
  readonly verifierKey: string;
  /** A checkpoint saved earlier (`audit checkpoint --out`): the first "previous" one. */
  readonly savedCheckpoint?: string;
  /** Records per collector page when replaying (the collector's limits.queryRecords). */
  readonly replayPageSize?: number;
}

/** A running console. */
export interface RunningConsole {
  /** Base URL, without the session secret. */
  readonly url: string;
  /** The URL to open: carries the session secret once (`?token=`). */
  readonly loginUrl: string;
  close(): Promise<void>;
}

/** True for addresses that only this machine can reach. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  const h = host.replace(/^\[|\]$/g, '');
  return isIP(h) === 6 && (h === '::1' || h === '0:0:0:0:0:0:0:1');
}

const ASSETS_DIR = assetsDir();

/**
 * The console's pages: `console/` at the top of the checkout or image, found from this module's
 * place — cli/console/ in the sources, dist/cli/commands/ in the build.
 */
function assetsDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'console', 'index.html'))) return join(dir, 'console');
    dir = dirname(dir);
  }
  return fileURLToPath(new URL('../../console/', import.meta.url));
}

/** Browser libraries, served from node_modules (no CDN: the console works offline). */
const VENDOR: Record<string, string> = {
  'uPlot.esm.js': fileURLToPath(import.meta.resolve('uplot/dist/uPlot.esm.js')),
  'uPlot.min.css': fileURLToPath(import.meta.resolve('uplot/dist/uPlot.min.css')),
  'cytoscape.esm.min.mjs': fileURLToPath(import.meta.resolve('cytoscape/dist/cytoscape.esm.min.mjs')),
};

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

/** Query parameters the console passes on, per collector route (the collector validates values). */
const FILTERS = ['type', 'source', 'subject', 'decision', 'rule', 'reason', 'since', 'until'];
const RELAYED: Record<string, { path: string; params: readonly string[] }> = {
  '/api/events': { path: '/v1/events', params: [...FILTERS, 'order', 'limit', 'cursor'] },
  '/api/aggregates': { path: '/v1/aggregates', params: [...FILTERS, 'groupBy', 'interval'] },
  '/api/status': { path: '/v1/status', params: [] },
  '/api/sources': { path: '/v1/sources', params: [] },
};

const SECURITY_HEADERS = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
};

/** An error the console answers with: status, stable code, one-line message. */
class ConsoleError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * Starts the console on a loopback address. Refuses (`TypeError`) a non-loopback host before
 * opening any socket.
 */
export async function startConsole(o: ConsoleOptions): Promise<RunningConsole> {
  if (!isLoopbackHost(o.host))
    throw new TypeError(
      `"${o.host}" is not a loopback address: the console listens on 127.0.0.1, ::1 or localhost only`,
    );
  verifyKeyUsable(o.verifierKey);
  const secret = randomBytes(32).toString('base64url');
  const secretDigest = digest(secret);
  const reader = createCollectorReadClient(o.collector);
  const assets = new Set(readdirSync(ASSETS_DIR).filter((f) => TYPES[extname(f)] !== undefined));
  /** The last checkpoint this console verified, and the one before it (for the consistency check). */
  const seen: { latest?: string; previous?: string } = o.savedCheckpoint ? { latest: o.savedCheckpoint } : {};
  /** Fetches the collector's latest checkpoint, checks its signature, and remembers it. */
  const latestCheckpoint = async () => {
    const note = await reader.text('/v1/checkpoints/latest');
    const body = verifyCheckpoint(note, o.verifierKey);
    if (seen.latest !== note) {
      seen.previous = seen.latest;
      seen.latest = note;
    }
    return { note, body };
  };
  let allowedHosts = new Set<string>();
  const streams = new Set<AbortController>();

  const app = Fastify({
    logger: false,
    bodyLimit: 1 << 20,
    return503OnClosing: true,
    requestIdHeader: false,
  }) as unknown as FastifyInstance;

  let cookieName = '';
  const sessionOk = (req: FastifyRequest): 'ok' | 'missing' | 'wrong' => {
    const cookie = parseCookies(req.headers.cookie)[cookieName];
    if (cookie === undefined) return 'missing';
    return timingSafeEqual(digest(cookie), secretDigest) ? 'ok' : 'wrong';
  };

  app.addHook('onRequest', async (req, reply) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) void reply.header(k, v);
    // DNS rebinding: a page of another site that resolves its own name to 127.0.0.1 sends its Host.
    const host = req.headers.host ?? '';
    if (!allowedHosts.has(host.toLowerCase()))
      throw new ConsoleError(
        403,
        'ERR_CONSOLE_HOST',
        'the Host header does not name this console (DNS rebinding?)',
      );
    const origin = req.headers.origin;
    if (origin !== undefined && !allowedHosts.has(origin.replace(/^http:\/\//, '').toLowerCase()))
      throw new ConsoleError(403, 'ERR_CONSOLE_ORIGIN', 'requests from other origins are refused');
    if (req.method !== 'GET' && req.method !== 'HEAD' && origin === undefined)
      throw new ConsoleError(403, 'ERR_CONSOLE_ORIGIN', 'a state-changing request needs an Origin header');
    const url = new URL(req.url, 'http://console');
    if (url.pathname === '/' && url.searchParams.has('token')) {
      const token = url.searchParams.get('token')!;
      if (!timingSafeEqual(digest(token), secretDigest))
        throw new ConsoleError(
          403,
          'ERR_CONSOLE_SESSION',
          'wrong session secret: open the URL portcullis console printed',
        );
      // The secret leaves the address bar and lives on in a cookie no script can read.
      void reply
        .header('set-cookie', `${cookieName}=${secret}; HttpOnly; SameSite=Strict; Path=/`)
        .redirect('/', 303);
      return reply;
    }
    const session = sessionOk(req);
    if (session === 'missing')
      throw new ConsoleError(
        401,
        'ERR_CONSOLE_SESSION',
        'no session: open the URL portcullis console printed (it carries ?token=)',
      );
    if (session === 'wrong')
      throw new ConsoleError(
        403,
        'ERR_CONSOLE_SESSION',
        'wrong session secret: open the URL portcullis console printed',
      );
  });

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    let status = 500;
    let code = 'ERR_CONSOLE_INTERNAL';
    let message = 'internal error';
    if (err instanceof ConsoleError) [status, code, message] = [err.status, err.code, err.message];
    else if (err instanceof CollectorClientError) {
      // The collector's own 4xx answers (bad filter, forbidden) reach the user as they are.
      status = err.status !== undefined && err.status < 500 ? err.status : 502;
      [code, message] = [err.code, err.message];
    } else if (err instanceof PortcullisError) [status, code, message] = [400, err.code, err.message];
    else if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500)
      [status, code, message] = [err.statusCode, 'ERR_CONSOLE_BAD_REQUEST', err.message.split('\n')[0]!];
    if (req.url.startsWith('/api/') || status !== 401) void reply.code(status).send({ error: code, message });
    else void reply.code(status).type('text/html; charset=utf-8').send(noSessionPage(message));
  });

  app.setNotFoundHandler((req, reply) => {
    void reply
      .code(404)
      .send({ error: 'ERR_CONSOLE_NOT_FOUND', message: `no page ${req.url.split('?')[0]!.slice(0, 200)}` });
  });

  const page = (file: string, reply: FastifyReply) =>
    reply.type(TYPES[extname(file)]!).send(readFileSync(file));

  app.get('/', (_req, reply) => page(join(ASSETS_DIR, 'index.html'), reply));
  app.get('/app/:file', (req, reply) => {
    const { file } = req.params as { file: string };
    if (!assets.has(file))
      throw new ConsoleError(404, 'ERR_CONSOLE_NOT_FOUND', `no asset ${file.slice(0, 100)}`);
    return page(join(ASSETS_DIR, file), reply);
  });
  app.get('/vendor/:file', (req, reply) => {
    const file = VENDOR[(req.params as { file: string }).file];
    if (!file) throw new ConsoleError(404, 'ERR_CONSOLE_NOT_FOUND', 'no such library');
    return page(file, reply);
  });

  // The query API, relayed as it is: the numbers on every page come from the collector.
  for (const [route, target] of Object.entries(RELAYED)) {
    app.get(route, async (req, reply) => {
      const res = await reader.get(`${target.path}${relayQuery(req.url, target.params)}`);
      const text = await readBody(res.body);
      if (res.status >= 500)
        throw new ConsoleError(
          502,
          'ERR_CONSOLE_COLLECTOR',
          `collector answered ${res.status} on ${target.path}`,
        );
      return reply
        .code(res.status)
        .type(res.contentType || 'application/json')
        .send(text);
    });
  }

  // Live tail: the collector's server-sent events, piped through; Last-Event-ID resumes.
  app.get('/api/events/stream', async (req, reply) => {
    const query = relayQuery(req.url, FILTERS);
    const abort = new AbortController();
    const last = req.headers['last-event-id'];
    const res = await reader.get(`/v1/events/stream${query}`, {
      stream: true,
      signal: abort.signal,
      headers: typeof last === 'string' && /^[0-9]{1,16}$/.test(last) ? { 'last-event-id': last } : {},
    });
    if (res.status !== 200) {
      const text = await readBody(res.body);
      return reply
        .code(res.status >= 500 ? 502 : res.status)
        .type('application/json')
        .send(text);
    }
    streams.add(abort);
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, {
      ...SECURITY_HEADERS,
      'content-type': 'text/event-stream; charset=utf-8',
      connection: 'keep-alive',
    });
    const done = () => {
      streams.delete(abort);
      abort.abort();
      res.body.destroy();
      if (!raw.writableEnded) raw.end();
    };
    req.raw.on('close', done);
    res.body.on('error', done);
    res.body.on('end', done);
    res.body.pipe(raw, { end: false });
  });

  // An event and its inclusion proof, checked here against the latest signed checkpoint.
  app.get('/api/proof', async (req) => {
    const seqText = (req.query as Record<string, unknown>).seq;
    if (typeof seqText !== 'string' || !/^(0|[1-9][0-9]{0,15})$/.test(seqText))
      throw new ConsoleError(400, 'ERR_CONSOLE_BAD_REQUEST', 'seq must be a non-negative integer');
    const seq = Number(seqText);
    const { note, body: checkpoint } = await latestCheckpoint();
    const cp = describeCheckpoint(checkpoint);
    if (seq >= checkpoint.size)
      return {
        seq,
        verified: false,
        pending: true,
        checkpoint: cp,
        message: `record ${seq} is newer than the latest checkpoint (size ${checkpoint.size}); the collector signs a new one soon`,
      };
    const raw = await reader.json<InclusionBundle>(`/v1/proofs/inclusion?seq=${seq}&size=${checkpoint.size}`);
    const bundle = { ...raw, record: toRecord(raw.record) };
    try {
      const record = verifyInclusionBundle(bundle, note, o.verifierKey);
      return { seq, verified: true, checkpoint: cp, proofLength: bundle.proof.length, record };
    } catch (err) {
      if (!(err instanceof ProofInvalidError || err instanceof CheckpointError)) throw err;
      return {
        seq,
        verified: false,
        checkpoint: cp,
        message: `${err.message} [${err.code}]`,
        record: bundle.record,
      };
    }
  });

  // Integrity: the collector's status, the latest checkpoint, and its consistency with the one before.
  app.get('/api/integrity', async () => {
    const status = await reader.json<unknown>('/v1/status');
    const { body: latest } = await latestCheckpoint();
    let consistency: Record<string, unknown> = {
      checked: false,
      message: 'no earlier checkpoint seen yet: check again once the collector has signed another',
    };
    const previousNote = seen.previous;
    if (previousNote !== undefined) {
      const previous = verifyCheckpoint(previousNote, o.verifierKey);
      consistency = { checked: true, previous: describeCheckpoint(previous) };
      try {
        if (previous.origin !== latest.origin)
          throw new Error(`origin changed from "${previous.origin}" to "${latest.origin}"`);
        if (latest.size < previous.size)
          throw new Error(`the log shrank from ${previous.size} to ${latest.size} records`);
        const { proof } = await reader.json<{ proof: string[] }>(
          `/v1/proofs/consistency?from=${previous.size}&to=${latest.size}`,
        );
        verifyConsistency({
          fromSize: previous.size,
          toSize: latest.size,
          fromRoot: previous.root,
          toRoot: latest.root,
          proof: proof.map((p) => Buffer.from(p, 'base64')),
        });
        consistency = { ...consistency, ok: true, proofLength: proof.length };
      } catch (err) {
        if (err instanceof CollectorClientError) throw err;
        consistency = { ...consistency, ok: false, message: (err as Error).message };
      }
    }
    return { status, checkpoint: describeCheckpoint(latest), consistency };
  });

  // Policy replay as a page: the recorded decisions come through the same query API.
  app.post(
    '/api/replay',
    {
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['service', 'policy'],
          properties: {
            service: { type: 'string', minLength: 1, maxLength: 2048 },
            policy: { type: 'string', minLength: 1, maxLength: 1 << 19 },
            since: { type: 'string', maxLength: 64 },
          },
        },
      },
    },
    async (req) => {
      const body = req.body as { service: string; policy: string; since?: string };
      let since: string | undefined;
      if (body.since) {
        since = resolveSince(body.since, Date.now());
        if (since === undefined)
          throw new ConsoleError(
            400,
            'ERR_CONSOLE_BAD_REQUEST',
            `since must be a duration (24h, 7d) or an RFC 3339 time, not "${body.since.slice(0, 64)}"`,
          );
      }
      let policy;
      try {
        policy = parsePolicy(body.policy, 'proposed policy', body.service);
      } catch (err) {
        if (err instanceof ConfigError) throw new ConsoleError(400, err.code, err.message);
        throw err;
      }
      const source = await openDecisionSource(o.collector.url, {
        service: policy.service,
        ...(since !== undefined ? { since } : {}),
        tls: o.collector.tls,
        collectorId: o.collector.collectorId,
        pageSize: o.replayPageSize ?? 1000,
      });
      try {
        return await replayDecisions(policy, source.records, since !== undefined ? { since } : {});
      } finally {
        await source.close();
      }
    },
  );

  await app.listen({ host: o.host, port: o.port });
  const port = (app.server.address() as AddressInfo).port;
  const hostPart = isIP(o.host) === 6 ? `[${o.host}]` : o.host;
  cookieName = sessionCookie(port);
  allowedHosts = new Set([`${hostPart}:${port}`, `localhost:${port}`].map((h) => h.toLowerCase()));
  const url = `http://${hostPart}:${port}/`;
  return {
    url,
    loginUrl: `${url}?token=${secret}`,
    async close() {
      for (const s of streams) s.abort();
      await app.close();
      await reader.close();
    },
  };
}

/** Fails early, with the key's own message, when the verifier key does not parse. */
function verifyKeyUsable(key: string): void {
  try {
    verifyCheckpoint('', key);
  } catch (err) {
    if (err instanceof CheckpointError && err.code === 'ERR_AUDIT_KEY_INVALID') throw err;
  }
}

function describeCheckpoint(c: { origin: string; size: number; root: Uint8Array; chainHead: string }) {
  return {
    origin: c.origin,
    size: c.size,
    rootHash: Buffer.from(c.root).toString('base64'),
    chainHead: c.chainHead,
  };
}

/** The allowed parameters of `url`, in order, as a query string for the collector. */
function relayQuery(url: string, allowed: readonly string[]): string {
  const params = new URL(url, 'http://console').searchParams;
  const out = new URLSearchParams();
  for (const [k, v] of params) {
    if (!allowed.includes(k))
      throw new ConsoleError(
        400,
        'ERR_CONSOLE_BAD_REQUEST',
        `unknown parameter "${k.slice(0, 64)}" (one of: ${allowed.join(', ') || 'none'})`,
      );
    out.append(k, v);
  }
  const q = out.toString();
  return q ? `?${q}` : '';
}

async function readBody(body: AsyncIterable<unknown>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return out;
}

function noSessionPage(message: string): string {
  const safe = message.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html><meta charset="utf-8"><title>Portcullis console</title><h1>Portcullis console</h1><p>${safe}</p>`;
}
