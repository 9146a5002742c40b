import assert from 'node:assert/strict';
import { createServer as createHttpServer, request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { createServer, connect } from 'node:net';
import type { Server, Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { statusForCode } from '../../sidecar/errors.ts';
import type { SidecarError } from '../../sidecar/errors.ts';
import { answerJson, relayHandshake, responseOn } from '../../sidecar/websocket/answer.ts';
import { FrameCursor, closeFrame } from '../../sidecar/websocket/frames.ts';
import {
  acceptFor,
  checkUpgradeRequest,
  checkUpstreamAccept,
  isRefusal,
} from '../../sidecar/websocket/handshake.ts';
import type { WebSocketOffer } from '../../sidecar/websocket/handshake.ts';
import { createTunnels } from '../../sidecar/websocket/tunnels.ts';
import type { TunnelFacts } from '../../sidecar/websocket/tunnels.ts';

/** One WebSocket frame as RFC 6455 §5.2 lays it out, masked when `mask` is given. */
function frame(opcode: number, payload: Buffer, mask?: Buffer): Buffer {
  const len = payload.length;
  const head =
    len < 126
      ? Buffer.from([0x80 | opcode, len])
      : len < 65_536
        ? Buffer.from([0x80 | opcode, 126, len >> 8, len & 0xff])
        : Buffer.concat([Buffer.from([0x80 | opcode, 127]), u64(len)]);
  if (!mask) return Buffer.concat([head, payload]);
  head[1] = head[1]! | 0x80;
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
  return Buffer.concat([head, mask, masked]);
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

describe('FrameCursor follows frame boundaries without reading payloads', () => {
  it('is at a boundary only between frames, whatever the chunking', () => {
    const stream = Buffer.concat([
      frame(0x1, Buffer.from('hello')),
      frame(0x2, Buffer.alloc(300, 7), Buffer.from([1, 2, 3, 4])),
      frame(0x2, Buffer.alloc(70_000, 9)),
      frame(0x9, Buffer.alloc(0)),
    ]);
    const ends = new Set([7, 7 + 4 + 4 + 300, 7 + 308 + 10 + 70_000, 7 + 308 + 70_010 + 2]);
    for (const step of [1, 3, 1000, stream.length]) {
      const cursor = new FrameCursor();
      for (let i = 0; i < stream.length; i += step) {
        const end = Math.min(stream.length, i + step);
        cursor.feed(stream.subarray(i, end));
        if (ends.has(end)) assert.equal(cursor.atBoundary, true, `boundary at ${end} (step ${step})`);
        else if (step === 1) assert.equal(cursor.atBoundary, false, `no boundary at ${end}`);
      }
      assert.equal(cursor.atBoundary, true);
      assert.equal(cursor.sawClose, false);
    }
  });

  it("reads a close frame's status code, masked or not, even split byte by byte", () => {
    for (const masked of [false, true]) {
      const cursor = new FrameCursor();
      const bytes = closeFrame(1008, 'policy', masked);
      for (const b of bytes) cursor.feed(Buffer.from([b]));
      assert.equal(cursor.sawClose, true);
      assert.equal(cursor.closeCode, 1008);
      assert.equal(cursor.atBoundary, true);
    }
    const empty = new FrameCursor();
    empty.feed(frame(0x8, Buffer.alloc(0)));
    assert.equal(empty.sawClose, true);
    assert.equal(empty.closeCode, undefined);
  });

  it('gives up on a length it cannot follow, and then never reports a boundary', () => {
    const cursor = new FrameCursor();
    cursor.feed(Buffer.concat([Buffer.from([0x82, 127]), Buffer.from('ffffffffffffffff', 'hex')]));
    assert.equal(cursor.lost, true);
    assert.equal(cursor.atBoundary, false);
  });
});

describe('the WebSocket opening handshake (RFC 6455 §4)', () => {
  const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
  const request = (headers: Record<string, string>, method = 'GET', httpVersion = '1.1') =>
    ({
      method,
      httpVersion,
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': KEY,
        ...headers,
      },
    }) as unknown as IncomingMessage;

  it("computes RFC 6455's own example accept value", () => {
    assert.equal(acceptFor(KEY), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  });

  it('accepts a valid handshake with its offered subprotocols and extension names', () => {
    const offer = checkUpgradeRequest(
      request({
        'sec-websocket-protocol': 'chat, superchat',
        'sec-websocket-extensions': 'permessage-deflate; client_max_window_bits',
      }),
    );
    assert.ok(!isRefusal(offer));
    assert.deepEqual(offer, {
      key: KEY,
      protocols: ['chat', 'superchat'],
      extensions: ['permessage-deflate'],
    });
  });

  for (const [what, req, status, message] of [
    ['h2c', request({ upgrade: 'h2c' }), 400, /Upgrade: h2c is not supported/],
    ['another protocol', request({ upgrade: 'TLS/1.0' }), 400, /Upgrade: tls\/1\.0 is not supported/],
    ['two protocols', request({ upgrade: 'h2c, websocket' }), 400, /exactly one protocol/],
    ['POST', request({}, 'POST'), 400, /GET/],
    ['HTTP/1.0', request({}, 'GET', '1.0'), 400, /HTTP\/1\.1/],
    ['a body', request({ 'content-length': '5' }), 400, /no request body/],
    ['version 8', request({ 'sec-websocket-version': '8' }), 426, /version 13/],
    ['two versions', request({ 'sec-websocket-version': '13, 13' }), 426, /version 13/],
    ['a short key', request({ 'sec-websocket-key': 'c2hvcnQ=' }), 400, /Sec-WebSocket-Key/],
    ['two keys', request({ 'sec-websocket-key': `${KEY}, ${KEY}` }), 400, /Sec-WebSocket-Key/],
  ] as const) {
    it(`refuses ${what} with ${status} and the reason`, () => {
      const r = checkUpgradeRequest(req);
      assert.ok(isRefusal(r));
      assert.equal(r.status, status);
      assert.match(r.message, message);
      if (status === 426) assert.deepEqual(r.headers, { 'sec-websocket-version': '13' });
    });
  }

  it("checks the upstream's 101 as a client must", () => {
    const offer: WebSocketOffer = { key: KEY, protocols: ['chat'], extensions: ['permessage-deflate'] };
    const ok = {
      upgrade: 'websocket',
      connection: 'Upgrade',
      'sec-websocket-accept': acceptFor(KEY),
      'sec-websocket-protocol': 'chat',
      'sec-websocket-extensions': 'permessage-deflate; server_no_context_takeover',
    };
    assert.equal(checkUpstreamAccept(offer, ok), undefined);
    assert.match(checkUpstreamAccept(offer, { ...ok, 'sec-websocket-accept': 'x' })!, /Accept is wrong/);
    assert.match(checkUpstreamAccept(offer, { ...ok, upgrade: 'h2c' })!, /Upgrade: websocket/);
    assert.match(checkUpstreamAccept(offer, { ...ok, 'sec-websocket-protocol': 'mqtt' })!, /subprotocol/);
    assert.match(checkUpstreamAccept(offer, { ...ok, 'sec-websocket-extensions': 'x-zip' })!, /extension/);
  });
});

describe('the tunnel relay', () => {
  const servers: Server[] = [];
  after(() => servers.forEach((s) => s.close()));

  /** A connected pair of TCP sockets on loopback: [the end the test drives, the end the relay gets]. */
  async function pair(): Promise<[Socket, Socket]> {
    const server = createServer();
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const accepted = new Promise<Socket>((r) => server.once('connection', r));
    // Half-open allowed: a peer that gets a FIN does not close by itself (the test says when).
    const near = connect({
      port: (server.address() as { port: number }).port,
      host: '127.0.0.1',
      allowHalfOpen: true,
    });
    await new Promise((r) => near.once('connect', r));
    return [near, await accepted];
  }

  it('keeps back-pressure: a service that does not read stalls the client, nothing piles up in the relay, and every byte arrives once it reads', async () => {
    const tunnels = createTunnels({ idleTimeout: 60_000, maxLifetime: 60_000 });
    const [client, clientEnd] = await pair();
    const [service, serviceEnd] = await pair();
    service.pause();
    const done = new Promise<TunnelFacts>((resolve) => tunnels.open(clientEnd, serviceEnd, resolve));
    const total = 32 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 0x41);
    let written = 0;
    // Write until the client's own socket says stop and stays stopped for 300 ms.
    for (;;) {
      while (written < total && client.write(chunk)) written += chunk.length;
      if (written >= total) break;
      written += chunk.length;
      const drained = await Promise.race([
        new Promise<boolean>((r) => client.once('drain', () => r(true))),
        new Promise<boolean>((r) => setTimeout(() => r(false), 300)),
      ]);
      if (!drained) break;
    }
    assert.ok(written < total, `the client was stalled (wrote ${written} of ${total} bytes)`);
    // What the relay holds in memory towards the service is at most a chunk or two.
    assert.ok(serviceEnd.writableLength <= 256 * 1024, `relay buffer ${serviceEnd.writableLength}`);
    // Once the service reads, everything arrives.
    let received = 0;
    service.on('data', (c: Buffer) => (received += c.length));
    service.resume();
    while (written < total) {
      if (!client.write(chunk)) await new Promise((r) => client.once('drain', r));
      written += chunk.length;
    }
    client.end();
    await new Promise<void>((r) => service.once('end', () => r()));
    assert.equal(received, total);
    service.end();
    const facts = await done;
    assert.equal(facts.bytesFromClient, total);
  });

  it('closes a tunnel at its lifetime however busy, with a 1001 close frame each way, audited as lifetime', async () => {
    const tunnels = createTunnels({ idleTimeout: 60_000, maxLifetime: 200 });
    const [client, clientEnd] = await pair();
    const [service, serviceEnd] = await pair();
    const done = new Promise<TunnelFacts>((resolve) => tunnels.open(clientEnd, serviceEnd, resolve));
    const ping = frame(0x9, Buffer.from('x'), Buffer.from([9, 9, 9, 9]));
    const chatter = setInterval(() => client.writable && client.write(ping), 20);
    const toClient: Buffer[] = [];
    const toService: Buffer[] = [];
    client.on('data', (c: Buffer) => toClient.push(c));
    service.on('data', (c: Buffer) => toService.push(c));
    client.on('end', () => client.end());
    service.on('end', () => service.end());
    const t0 = performance.now();
    const facts = await done;
    clearInterval(chatter);
    const took = performance.now() - t0;
    assert.equal(facts.closedBy, 'lifetime');
    assert.ok(took >= 190 && took < 1_500, `closed after ${Math.round(took)} ms`);
    const c = new FrameCursor();
    c.feed(Buffer.concat(toClient));
    assert.equal(c.closeCode, 1001, 'the client got a 1001 close frame');
    const s = new FrameCursor();
    s.feed(Buffer.concat(toService));
    assert.equal(s.sawClose, true, 'the service got a close frame after the relayed pings');
    assert.equal(s.closeCode, 1001);
    assert.equal(tunnels.size, 0);
  });

  it('a tunnel opened on a socket that already closed ends at once, the other side told', async () => {
    const tunnels = createTunnels({ idleTimeout: 60_000, maxLifetime: 60_000 });
    const [client, clientEnd] = await pair();
    const [service, serviceEnd] = await pair();
    clientEnd.destroy();
    await new Promise((r) => clientEnd.once('close', r));
    const got: Buffer[] = [];
    service.on('data', (c: Buffer) => got.push(c));
    service.on('end', () => service.end());
    const facts = await new Promise<TunnelFacts>((resolve) => tunnels.open(clientEnd, serviceEnd, resolve));
    assert.equal(facts.closedBy, 'client');
    assert.equal(tunnels.size, 0);
    const cursor = new FrameCursor();
    cursor.feed(Buffer.concat(got));
    assert.equal(cursor.closeCode, 1001);
    client.destroy();
  });

  it('shutdown destroys tunnels whose peers do not close within the grace, and refuses new ones', async () => {
    const tunnels = createTunnels({ idleTimeout: 60_000, maxLifetime: 60_000 });
    const [client, clientEnd] = await pair();
    const [service, serviceEnd] = await pair();
    // Neither peer answers the close: only the grace ends it.
    client.on('data', () => {});
    service.on('data', () => {});
    const done = new Promise<TunnelFacts>((resolve) => tunnels.open(clientEnd, serviceEnd, resolve));
    const t0 = performance.now();
    await tunnels.shutdown(150);
    assert.ok(performance.now() - t0 < 1_000);
    assert.equal((await done).closedBy, 'shutdown');
    const [, lateEnd] = await pair();
    const [, lateService] = await pair();
    const late = new Promise<TunnelFacts>((resolve) => tunnels.open(lateEnd, lateService, resolve));
    setTimeout(() => {
      lateEnd.destroy();
      lateService.destroy();
    }, 200).unref();
    assert.equal((await late).closedBy, 'shutdown');
    client.destroy();
    service.destroy();
  });
});

describe('relayHandshake', () => {
  const servers: { close(): unknown }[] = [];
  after(() => servers.forEach((s) => s.close()));

  it('an upstream that never answers the handshake: the client gets 504 after the timeout, the upstream request is dropped', async () => {
    // The upstream takes the connection, reads the handshake and says nothing.
    const silent = createServer((s) => s.on('error', () => {}).resume());
    servers.push(silent);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const upstreamClosed = new Promise<void>((r) => silent.once('connection', (s) => s.once('close', r)));
    const front = createHttpServer();
    servers.push(front);
    const failed = new Promise<SidecarError>((resolveFail) =>
      front.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
        const res = responseOn(req, socket);
        const offer = checkUpgradeRequest(req) as WebSocketOffer;
        const upReq = httpRequest({
          port: (silent.address() as { port: number }).port,
          host: '127.0.0.1',
          headers: { connection: 'Upgrade', upgrade: 'websocket' },
          agent: false,
        });
        relayHandshake(upReq, {
          offer,
          res,
          client: socket,
          head,
          tunnels: createTunnels({ idleTimeout: 60_000, maxLifetime: 60_000 }),
          closed: () => assert.fail('no tunnel opens'),
          timeoutMs: 150,
          who: 'the service',
          fail: (err) => {
            answerJson(res, statusForCode(err.code), err.code, err.message);
            resolveFail(err);
          },
          answered: () => assert.fail('nothing is answered'),
        });
      }),
    );
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
    const client = connect({ port: (front.address() as { port: number }).port, host: '127.0.0.1' });
    client.write(
      'GET /feed HTTP/1.1\r\nHost: orders\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        `Sec-WebSocket-Key: ${Buffer.alloc(16, 1).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    let answer = '';
    client.on('data', (c: Buffer) => (answer += c.toString()));
    await new Promise((r) => client.once('end', r));
    const err = await failed;
    assert.equal(err.code, 'ERR_SIDECAR_UPSTREAM_TIMEOUT');
    assert.match(answer, /^HTTP\/1\.1 504 /);
    assert.match(answer, /"message":"the service did not answer in time"/);
    await upstreamClosed;
    client.destroy();
  });
});
