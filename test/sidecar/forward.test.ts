import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, request } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Pool } from 'undici';
import type { SidecarError } from '../../sidecar/errors.ts';
import type { InboundContext } from '../../sidecar/inbound/context.ts';
import { UpstreamDeadlines, forward } from '../../sidecar/inbound/layers/forward.ts';

const CHUNK = Buffer.alloc(64 * 1024, 'x');
const BIG_CHUNKS = 512; // 32 MiB: more than loopback socket buffers hold

/** The app side: what it answered and when. */
interface AppLog {
  bigFinishedAt?: number;
  slowClosed?: Promise<void>;
  echoed?: string;
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)),
  );
}

function startApp(log: AppLog): Server {
  return createServer((req, res) => {
    if (req.url === '/big') {
      res.writeHead(200, { 'content-length': CHUNK.length * BIG_CHUNKS });
      let sent = 0;
      const pump = () => {
        while (sent < BIG_CHUNKS) {
          sent++;
          if (!res.write(CHUNK)) return void res.once('drain', pump);
        }
        res.end(() => (log.bigFinishedAt = Date.now()));
      };
      return pump();
    }
    if (req.url === '/slow') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first chunk\n');
      log.slowClosed = once(res, 'close').then(() => undefined);
      return; // never ends by itself
    }
    if (req.url === '/echo') {
      const hash = createHash('sha256');
      req.on('data', (c: Buffer) => hash.update(c));
      req.on('end', () => {
        log.echoed = hash.digest('hex');
        res.writeHead(201, { 'content-type': 'text/plain', connection: 'x-drop-me', 'x-drop-me': '1' });
        res.end(log.echoed);
      });
      return;
    }
    if (req.url === '/hints') {
      res.writeEarlyHints({ link: '</a.css>; rel=preload' });
      return void setTimeout(() => res.writeHead(200, { 'content-length': 2 }).end('ok'), 20);
    }
    if (req.url === '/hang') return; // no answer: the headers timeout
    if (req.url === '/deaf') return void req.pause(); // reads no upload and never answers
    if (req.url === '/stall') return void res.writeHead(200, { 'content-length': 100 }).write('part'); // the body timeout
    res.writeHead(404).end();
  });
}

/** The sidecar side: a plain HTTP listener that forwards each request the way the inbound layer does. */
function startFront(pool: Pool, outcomes: (number | string)[], deadlines: UpstreamDeadlines): Server {
  return createServer((req: IncomingMessage, res: ServerResponse) => {
    const forwardHeaders: string[] = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2)
      if (/^content-length$/i.test(req.rawHeaders[i]!))
        forwardHeaders.push(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
    const ctx = {
      req,
      res,
      startedAt: 0,
      traceId: '0af7651916cd43dd8448eb211c80319c',
      spanId: 'b7ad6b7169203331',
      enforced: true,
      peer: { spiffeId: { uri: 'spiffe://example.org/ns/shop/sa/web' } },
      target: { target: req.url!, path: req.url! },
      headers: { forward: forwardHeaders, traceparent: undefined },
    } as unknown as InboundContext;
    forward(ctx, { pool, deadlines, host: 'orders' }).then(
      (status) => outcomes.push(status),
      (err: SidecarError) => {
        outcomes.push(err.code);
        res.writeHead(err.code === 'ERR_SIDECAR_UPSTREAM_TIMEOUT' ? 504 : 502).end(err.code);
      },
    );
  });
}

function get(port: number, path: string, body?: Buffer): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, method: body ? 'POST' : 'GET', agent: false },
      resolve,
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function readAll(res: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of res) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

describe('inbound forward: streaming, back-pressure and aborts through the app pool', () => {
  const log: AppLog = {};
  const outcomes: (number | string)[] = [];
  let app: Server;
  let front: Server;
  let pool: Pool;
  let port: number;
  const deadlines = new UpstreamDeadlines(300, 1_500);
  before(async () => {
    app = startApp(log);
    const appPort = await listen(app);
    // As start.ts makes it: no timers in the pool, the deadlines enforce both timeouts.
    pool = new Pool(`http://127.0.0.1:${appPort}`, { connections: 4, headersTimeout: 0, bodyTimeout: 0 });
    front = startFront(pool, outcomes, deadlines);
    port = await listen(front);
  });
  after(async () => {
    front.closeAllConnections();
    app.closeAllConnections();
    await pool.destroy();
    deadlines.close();
    await Promise.all([new Promise((r) => front.close(r)), new Promise((r) => app.close(r))]);
  });

  it('holds the app back while the client reads slowly, then delivers every byte', async () => {
    const res = await get(port, '/big');
    assert.equal(res.statusCode, 200);
    res.pause();
    await new Promise((r) => setTimeout(r, 500));
    // Without back-pressure the sidecar would have drained all 32 MiB from the app by now.
    assert.equal(log.bigFinishedAt, undefined, 'the app finished writing while the client was not reading');
    const body = await readAll(res);
    assert.equal(body.length, CHUNK.length * BIG_CHUNKS);
    assert.ok(body.every((b) => b === 0x78));
    assert.equal(outcomes.at(-1), 200);
  });

  it('aborts the upstream request when the client goes away mid-response', async () => {
    const res = await get(port, '/slow');
    assert.equal(res.statusCode, 200);
    await once(res, 'data');
    res.destroy();
    const closed = await Promise.race([
      log.slowClosed!.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 2000)),
    ]);
    assert.equal(closed, true, "the app's response was not closed after the client left");
  });

  it('streams a request body to the app and strips the headers its Connection names', async () => {
    const body = Buffer.alloc(3 * 1024 * 1024 + 7, 'b');
    const res = await get(port, '/echo', body);
    assert.equal(res.statusCode, 201);
    assert.equal(res.headers['x-drop-me'], undefined);
    const text = (await readAll(res)).toString();
    assert.equal(text, createHash('sha256').update(body).digest('hex'));
    assert.equal(log.echoed, text);
  });

  it('relays the final answer after a 1xx informational one', async () => {
    const res = await get(port, '/hints');
    assert.equal(res.statusCode, 200);
    assert.equal((await readAll(res)).toString(), 'ok');
  });

  it('rejects with ERR_SIDECAR_UPSTREAM_TIMEOUT when the app does not answer in time', async () => {
    const started = performance.now();
    const res = await get(port, '/hang');
    const waited = performance.now() - started;
    assert.equal(res.statusCode, 504);
    assert.equal((await readAll(res)).toString(), 'ERR_SIDECAR_UPSTREAM_TIMEOUT');
    // The headers timeout (300 ms), give or take one sweep (75 ms) and the machine's scheduling.
    assert.ok(waited >= 290 && waited < 1_200, `answered after ${Math.round(waited)} ms`);
    assert.equal(deadlines.size, 0, 'the timed-out exchange is no longer watched');
  });

  it('a long upload the app keeps reading is not cut by the headers timeout; an app that stops reading one is (504)', async () => {
    // 1.2 s of upload in chunks every 100 ms, four times the headers timeout.
    const upload = (path: string, chunks: number, size: number) =>
      new Promise<{ status: number; body: string; ms: number }>((resolve, reject) => {
        const started = performance.now();
        const req = request(
          {
            host: '127.0.0.1',
            port,
            path,
            method: 'POST',
            agent: false,
            headers: { 'content-length': chunks * size },
          },
          (res) =>
            void readAll(res).then(
              (b) =>
                resolve({ status: res.statusCode!, body: b.toString(), ms: performance.now() - started }),
              reject,
            ),
        );
        req.on('error', reject);
        let sent = 0;
        const next = () => {
          if (req.destroyed) return;
          if (sent === chunks) return void req.end();
          sent++;
          req.write(Buffer.alloc(size, 'u'));
          setTimeout(next, 100);
        };
        next();
      });
    const slow = await upload('/echo', 12, 1024);
    assert.equal(slow.status, 201);
    assert.equal(
      slow.body,
      createHash('sha256')
        .update(Buffer.alloc(12 * 1024, 'u'))
        .digest('hex'),
    );
    assert.ok(slow.ms >= 1_100, `answered after ${Math.round(slow.ms)} ms`);
    // 12 × 4 MiB: the app's socket buffers fill, the pool stops taking chunks, the wait runs out.
    const deaf = await upload('/deaf', 12, 4 * 1024 * 1024);
    assert.equal(deaf.status, 504);
    assert.equal(deaf.body, 'ERR_SIDECAR_UPSTREAM_TIMEOUT');
    assert.equal(deadlines.size, 0);
  });

  it('cuts the answer when the app stops sending its body for the body timeout, and no longer watches it', async () => {
    const started = performance.now();
    const res = await get(port, '/stall');
    assert.equal(res.statusCode, 200);
    const parts: Buffer[] = [];
    res.on('data', (c: Buffer) => parts.push(c));
    const [err] = (await once(res, 'error').catch((e: unknown) => [e])) as [Error];
    const waited = performance.now() - started;
    assert.match(err.message, /aborted/);
    assert.equal(Buffer.concat(parts).toString(), 'part');
    assert.ok(waited >= 1_450 && waited < 2_800, `cut after ${Math.round(waited)} ms`);
    assert.equal(outcomes.at(-1), 200);
    assert.equal(deadlines.size, 0);
  });

  it('watches nothing once every exchange has ended', () => {
    assert.equal(deadlines.size, 0);
  });

  it('rejects with ERR_SIDECAR_UPSTREAM_UNAVAILABLE when the app is down', async () => {
    const closed = createServer();
    const deadPort = await listen(closed);
    await new Promise((r) => closed.close(r));
    const deadPool = new Pool(`http://127.0.0.1:${deadPort}`);
    const f = startFront(deadPool, outcomes, deadlines);
    const p = await listen(f);
    try {
      const res = await get(p, '/anything');
      assert.equal(res.statusCode, 502);
      assert.equal((await readAll(res)).toString(), 'ERR_SIDECAR_UPSTREAM_UNAVAILABLE');
    } finally {
      f.closeAllConnections();
      await new Promise((r) => f.close(r));
      await deadPool.destroy();
    }
  });
});
