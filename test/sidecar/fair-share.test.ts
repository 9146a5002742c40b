import assert from 'node:assert/strict';
import { createServer, request } from 'node:http';
import type { Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { parseSidecarConfig } from '../../sidecar/index.ts';
import { fairShareLayer } from '../../sidecar/inbound/layers/fair-share.ts';
import type { InboundContext } from '../../sidecar/inbound/context.ts';
import type { SidecarError } from '../../sidecar/errors.ts';

/**
 * A real HTTP server running the layer for each request, the caller named by `x-caller`: an
 * admitted request is held until the test ends it; a refusal answers its status at once. As the
 * inbound handler does once it has recorded a request, the slot is given back when the response
 * closes (answered or cut).
 */
async function layerServer(options: Parameters<typeof fairShareLayer>[0]) {
  const layer = fairShareLayer(options);
  const held: ServerResponse[] = [];
  const server: Server = createServer((req, res) => {
    const ctx = {
      req,
      res,
      peer: { spiffeId: { uri: String(req.headers['x-caller']) } },
    } as unknown as InboundContext;
    const admitted = () => {
      held.push(res);
      res.once('close', () => ctx.releaseSlot?.());
    };
    const refused = (err: SidecarError) =>
      res
        .writeHead(err.code === 'ERR_SIDECAR_CALLER_OVER_LIMIT' ? 429 : 502, {
          'retry-after': String(ctx.retryAfterSeconds ?? ''),
        })
        .end(err.code);
    try {
      const r = layer(ctx);
      if (r) r.then(admitted, refused);
      else admitted();
    } catch (err) {
      refused(err as SidecarError);
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const send = (caller: string) =>
    new Promise<{ status: number; retryAfter: string | undefined; t: number }>((resolve, reject) => {
      const t0 = performance.now();
      const req = request(
        { port, host: '127.0.0.1', headers: { 'x-caller': caller }, agent: false },
        (res) => {
          res.resume();
          res.on('end', () =>
            resolve({
              status: res.statusCode!,
              retryAfter: res.headers['retry-after'] as string | undefined,
              t: performance.now() - t0,
            }),
          );
        },
      );
      req.on('error', reject);
      req.end();
    });
  const settle = () => new Promise((r) => setTimeout(r, 150));
  return { layer, held, server, send, settle };
}

describe('fair share layer', () => {
  let s: Awaited<ReturnType<typeof layerServer>>;
  before(async () => {
    s = await layerServer({ perCaller: 2, queue: 1, queueTimeout: 1_000, retryAfter: 1500 });
  });
  after(() => new Promise((r) => s.server.close(r)));

  it('admits perCaller requests, queues the next, refuses the one after with 429 and Retry-After, and keeps other callers apart', async () => {
    const a = [s.send('a'), s.send('a')];
    await s.settle();
    assert.equal(s.held.length, 2);
    const queued = s.send('a');
    await s.settle();
    assert.deepEqual(s.layer.stats(), { callers: 1, active: 2, waiting: 1 });
    const refused = await s.send('a');
    assert.equal(refused.status, 429);
    assert.equal(refused.retryAfter, '2', 'Retry-After in whole seconds, rounded up');
    const b = s.send('b');
    await s.settle();
    assert.equal(s.held.length, 3, `another caller is admitted at once ${JSON.stringify(s.layer.stats())}`);
    // A finished request hands its slot to the waiting one.
    s.held.shift()!.end();
    await s.settle();
    assert.equal(s.held.length, 3);
    assert.deepEqual(s.layer.stats(), { callers: 2, active: 3, waiting: 0 });
    for (const r of s.held.splice(0)) r.end();
    for (const r of await Promise.all([...a, queued, b])) assert.equal(r.status, 200);
    assert.deepEqual(s.layer.stats(), { callers: 0, active: 0, waiting: 0 });
  });

  it('refuses a request that waited queueTimeout with 429', async () => {
    const first = [s.send('c'), s.send('c')];
    await s.settle();
    const waited = await s.send('c');
    assert.equal(waited.status, 429);
    assert.ok(waited.t >= 990, `refused after ${waited.t} ms`);
    for (const r of s.held.splice(0)) r.end();
    await Promise.all(first);
    assert.deepEqual(s.layer.stats(), { callers: 0, active: 0, waiting: 0 });
  });

  it('frees the slot of a client that went away, and drops a waiter whose client went away', async () => {
    // One of these is cut below: its rejection is expected.
    const first = [s.send('d'), s.send('d')].map((p) => p.catch(() => undefined));
    await s.settle();
    const gone = request({ port: (s.server.address() as AddressInfo).port, headers: { 'x-caller': 'd' } });
    gone.on('error', () => {});
    gone.end();
    await s.settle();
    assert.equal(s.layer.stats().waiting, 1);
    gone.destroy();
    await s.settle();
    assert.equal(s.layer.stats().waiting, 0);
    s.held[0]!.socket!.destroy();
    await s.settle();
    assert.equal(s.layer.stats().active, 1);
    for (const r of s.held.splice(0)) r.end();
    await Promise.all(first);
    assert.deepEqual(s.layer.stats(), { callers: 0, active: 0, waiting: 0 });
  });
});

describe('inbound.fairShare in the sidecar config', () => {
  const config = (inbound: Record<string, unknown>) =>
    parseSidecarConfig(
      {
        service: 'spiffe://example.org/ns/shop/sa/orders',
        trustDomain: 'example.org',
        tls: { cert: 'c.pem', key: 'k.pem', trustBundle: 'r.pem' },
        sts: { url: 'https://sts', spiffeId: 'spiffe://example.org/sts', issuer: 'https://sts' },
        inbound: { app: 'http://127.0.0.1:8080', policy: 'p.yaml', ...inbound },
      },
      'x.yaml',
    );

  it('defaults perCaller to half the pool to the app', () => {
    assert.equal(config({}).inbound.fairShare.perCaller, 64);
    assert.equal(config({ upstreamConnections: 9 }).inbound.fairShare.perCaller, 4);
    assert.equal(config({ upstreamConnections: 1 }).inbound.fairShare.perCaller, 1);
  });

  const refused: [string, Record<string, unknown>, RegExp][] = [
    [
      'a share larger than the pool',
      { upstreamConnections: 8, fairShare: { perCaller: 9 } },
      /inbound\.fairShare\.perCaller: must not be larger than inbound\.upstreamConnections \(8\)/,
    ],
    ['a zero share', { fairShare: { perCaller: 0 } }, /inbound\.fairShare\.perCaller: .*>=1/],
    ['a negative queue', { fairShare: { queue: -1 } }, /inbound\.fairShare\.queue: .*>=0/],
    [
      'a bad queue timeout',
      { fairShare: { queueTimeout: 'soon' } },
      /inbound\.fairShare\.queueTimeout: "soon" is not a duration/,
    ],
  ];
  for (const [name, inbound, message] of refused)
    it(`refuses ${name} with one line naming the key`, () => {
      assert.throws(
        () => config(inbound),
        (err: Error) => message.test(err.message),
      );
    });
});
