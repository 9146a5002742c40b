import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import type { ServerResponse } from 'node:http';
import { connect as h2connect, constants, createServer as createH2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { DEFAULT_CONNECTION_BUDGETS } from '../../core/index.ts';
import { createH2Side } from '../../sidecar/inbound/h2.ts';
import { scanH2RequestHeaders } from '../../sidecar/inbound/headers.ts';
import { encodeGrpcMessage, grpcStatusFor, isGrpcRequest, parseGrpcTimeout } from '../../sidecar/h2/grpc.ts';
import { parsePolicy } from '../../sidecar/policy/parse.ts';
import { compilePolicy } from '../../sidecar/policy/compile.ts';
import { connect as netConnect, createServer } from 'node:net';
import { Writable } from 'node:stream';
import { Pool } from 'undici';
import { createH2Client, h2RequestHeaders, openH2c, relayH2 } from '../../sidecar/h2/relay.ts';
import { H2Request, H2Response, uploadOf } from '../../sidecar/h2/exchange.ts';

const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';
const WEB = 'spiffe://example.org/ns/shop/sa/web';
const pseudo = [':method', 'POST', ':path', '/shop.Orders/Get', ':scheme', 'https'];

describe('scanH2RequestHeaders', () => {
  it('strips identity, token, trace and method-override fields as for HTTP/1.1, and reads :authority', () => {
    const s = scanH2RequestHeaders([
      ...pseudo,
      ':authority',
      'orders',
      'content-type',
      'application/grpc',
      'te',
      'trailers',
      'authorization',
      'Bearer a.b.c',
      'x-portcullis-peer',
      'spiffe://evil',
      'x_forwarded_client_cert',
      'evil',
      'x-http-method-override',
      'DELETE',
      'traceparent',
      '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      'grpc-timeout',
      '1S',
    ]);
    assert.deepEqual(s.forward, ['content-type', 'application/grpc', 'grpc-timeout', '1S']);
    assert.equal(s.authority, 'orders');
    assert.equal(s.traceparent, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
  });

  it('takes host when there is no :authority, and refuses the ambiguous shapes', () => {
    assert.equal(scanH2RequestHeaders([...pseudo, 'host', 'orders']).authority, 'orders');
    const refused = (raw: string[], why: RegExp) =>
      assert.throws(
        () => scanH2RequestHeaders(raw),
        (e: Error & { code?: string }) => e.code === 'ERR_SIDECAR_REQUEST_MALFORMED' && why.test(e.message),
      );
    refused([...pseudo], /:authority and Host missing/);
    refused([...pseudo, ':authority', 'orders', 'host', 'admin'], /disagree/);
    refused([...pseudo, 'host', 'a', 'host', 'a'], /more than one/);
    refused([...pseudo, ':authority', 'orders', 'transfer-encoding', 'chunked'], /connection-specific/);
    refused([...pseudo, ':authority', 'orders', 'connection', 'close'], /connection-specific/);
    refused([...pseudo, ':authority', 'orders', 'te', 'gzip'], /TE other than trailers/);
    refused([...pseudo, ':authority', 'orders', ':protocol', 'websocket'], /extended CONNECT/);
    refused(
      [...pseudo, ':authority', 'orders', 'content-length', '1', 'content-length', '2'],
      /Content-Length/,
    );
    refused([...pseudo, ':authority', 'orders', 'content-length', 'x'], /not a number/);
  });
});

describe('gRPC helpers', () => {
  it('recognises gRPC callers by content-type', () => {
    assert.equal(isGrpcRequest({ 'content-type': 'application/grpc' }), true);
    assert.equal(isGrpcRequest({ 'content-type': 'application/grpc+proto' }), true);
    assert.equal(isGrpcRequest({ 'content-type': 'Application/GRPC-web' }), true);
    assert.equal(isGrpcRequest({ 'content-type': 'application/json' }), false);
    assert.equal(isGrpcRequest({}), false);
  });

  it('maps refusals to gRPC statuses: authentication 16, policy 7, the rest by HTTP status', () => {
    assert.equal(grpcStatusFor('ERR_SIDECAR_TOKEN_MISSING', 401), 16);
    assert.equal(grpcStatusFor('ERR_SIDECAR_TOKEN_NOT_BOUND', 401), 16);
    assert.equal(grpcStatusFor('ERR_SIDECAR_PEER_UNVERIFIED', 403), 16);
    assert.equal(grpcStatusFor('ERR_SIDECAR_POLICY_DENIED', 403), 7);
    assert.equal(grpcStatusFor('ERR_SIDECAR_TOKEN_UNAVAILABLE', 503), 14);
    assert.equal(grpcStatusFor('ERR_SIDECAR_CALLER_OVER_LIMIT', 429), 8);
    assert.equal(grpcStatusFor('ERR_SIDECAR_UPSTREAM_TIMEOUT', 504), 4);
    assert.equal(grpcStatusFor('ERR_SIDECAR_UPSTREAM_UNAVAILABLE', 502), 14);
    assert.equal(grpcStatusFor('ERR_SIDECAR_PATH_AMBIGUOUS', 400), 3);
    assert.equal(grpcStatusFor('ERR_SIDECAR_ROUTE_UNKNOWN', 404), 12);
  });

  it('percent-encodes grpc-message and parses grpc-timeout', () => {
    assert.equal(encodeGrpcMessage('denied by rule x: 100% é\n'), 'denied by rule x: 100%25 %C3%A9%0A');
    assert.equal(parseGrpcTimeout(undefined), undefined);
    assert.equal(parseGrpcTimeout('250m'), 250);
    assert.equal(parseGrpcTimeout('2S'), 2000);
    assert.equal(parseGrpcTimeout('1H'), 3_600_000);
    assert.equal(parseGrpcTimeout('5000u'), 5);
    assert.equal(parseGrpcTimeout('123456789m'), null, 'at most 8 digits');
    assert.equal(parseGrpcTimeout('10'), null);
    assert.equal(parseGrpcTimeout('-1S'), null);
    assert.equal(parseGrpcTimeout(['1S', '2S']), null);
    // Past the longest Node timer (2^31-1 ms, ~24.8 days) setTimeout fires at once: a 30-day
    // deadline must not become an immediate DEADLINE_EXCEEDED.
    assert.equal(parseGrpcTimeout('720H'), 2_147_483_647);
    assert.equal(parseGrpcTimeout('99999999H'), 2_147_483_647);
    assert.equal(parseGrpcTimeout('596H'), 596 * 3_600_000);
  });
});

describe('policy grpc: shorthand', () => {
  const policy = (rules: string) =>
    parsePolicy(
      `service: ${ORDERS}\nmode: enforce\nroles:\n  shop: [${WEB}]\nrules:\n${rules}`,
      'p.yaml',
      ORDERS,
    );

  it('matches a whole service or one method as POST paths', () => {
    const p = policy(
      `  - id: shop-orders\n    role: shop\n    grpc: [shop.Orders]\n  - id: no-wipe\n    effect: deny\n    subjects: ['*']\n    grpc: [shop.Admin/Wipe]\n  - id: admin-read\n    role: shop\n    grpc: [shop.Admin]\n`,
    );
    assert.deepEqual(p.rules[0]!.paths, ['/shop.Orders/*']);
    assert.deepEqual(p.rules[0]!.methods, ['POST']);
    const a = compilePolicy(p);
    assert.equal(a.decide(WEB, 'POST', '/shop.Orders/Get').rule, 'shop-orders');
    assert.equal(a.decide(WEB, 'POST', '/shop.Orders/Get').allow, true);
    assert.equal(a.decide(WEB, 'GET', '/shop.Orders/Get').allow, false, 'gRPC is POST only');
    assert.equal(a.decide(WEB, 'POST', '/shop.Admin/List').allow, true);
    const wipe = a.decide(WEB, 'POST', '/shop.Admin/Wipe');
    assert.equal(wipe.allow, false);
    assert.equal(wipe.rule, 'no-wipe');
  });

  it('refuses bad names and rules with neither paths nor grpc', () => {
    assert.throws(
      () => policy(`  - id: r\n    role: shop\n    grpc: ['shop.Orders/Get/x']\n`),
      /gRPC service/,
    );
    assert.throws(() => policy(`  - id: r\n    role: shop\n    grpc: ['/shop.Orders']\n`), /gRPC service/);
    assert.throws(() => policy(`  - id: r\n    role: shop\n    methods: [GET]\n`), /needs "paths" or "grpc"/);
  });
});

describe('HTTP/2 flow-control stall', () => {
  const answer = (res: { writeHead(s: number): { end(b: Buffer): unknown } }) =>
    res.writeHead(200).end(Buffer.alloc(1 << 20));
  for (const [name, serve] of [
    ['core stream API (inbound)', { streams: (_req: unknown, res: H2Response) => answer(res) }],
    ['compatibility API (outbound)', { compat: (_req: unknown, res: ServerResponse) => answer(res) }],
  ] as const)
    it(`resets a stream whose answer waits on a window the client never opens: ${name}`, async () => {
      const side = createH2Side(serve, { ...DEFAULT_CONNECTION_BUDGETS, bodyTimeout: 300 });
      const server = createServer((socket) => side.accept(socket));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const client = h2connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, {
        settings: { initialWindowSize: 0 },
      });
      try {
        const started = Date.now();
        const code = await new Promise<number>((resolve) => {
          const s = client.request({ ':path': '/' });
          s.on('error', () => {});
          s.on('close', () => resolve(s.rstCode!));
          s.end();
        });
        assert.equal(code, constants.NGHTTP2_CANCEL);
        const took = Date.now() - started;
        assert.ok(took >= 250 && took < 5_000, `reset after the body timeout (${took} ms)`);
        assert.equal(side.streams, 0);
      } finally {
        client.destroy();
        await new Promise((r) => server.close(r));
      }
    });
});

describe('relayH2 over an h2c client', () => {
  it('bounds the wait for a non-gRPC answer head with the headers timeout, and cancels the upstream stream', async () => {
    let upstreamClosed: Promise<number> | undefined;
    const app = createH2Server((req) => {
      // Never answers; note how the stream ends.
      upstreamClosed = new Promise((r) => req.stream.once('close', () => r(req.stream.rstCode)));
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const client = createH2Client(() =>
      openH2c(`http://127.0.0.1:${(app.address() as AddressInfo).port}`, 2_000),
    );
    const front = createHttpServer((req, res) => {
      client
        .request(h2RequestHeaders('GET', '/slow', 'app', 'http', [], false))
        .then((stream) => relayH2(req, res, stream, undefined, 200))
        .then(
          () => res.end(),
          (err: Error & { code?: string }) => res.writeHead(504).end(err.code),
        );
    });
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
    try {
      const started = Date.now();
      const r = await fetch(`http://127.0.0.1:${(front.address() as AddressInfo).port}/`);
      assert.equal(r.status, 504);
      assert.equal(await r.text(), 'ERR_SIDECAR_UPSTREAM_TIMEOUT');
      assert.ok(Date.now() - started < 2_000);
      assert.equal(await upstreamClosed, constants.NGHTTP2_CANCEL);
      assert.equal(client.connected, true, 'the connection to the app outlives one cancelled stream');
    } finally {
      await client.close();
      await new Promise((r) => front.close(r));
      await new Promise((r) => app.close(r));
    }
  });
});

/** An h2c server whose streams go to `onStream` as an H2Request and H2Response; closed by the returned function. */
async function exchangeServer(
  onStream: (req: H2Request, res: H2Response) => void,
): Promise<{ port: number; close: () => Promise<void> }> {
  const server = createH2Server();
  server.on('stream', (stream, headers, _flags, raw: string[]) => {
    stream.on('error', () => {});
    onStream(new H2Request(stream, headers, raw), new H2Response(stream));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

const closedOf = (req: H2Request) =>
  new Promise<boolean>((resolve) => {
    if (req.stream.destroyed) return resolve(true);
    const t = setTimeout(() => resolve(false), 2_000);
    req.stream.once('close', () => (clearTimeout(t), resolve(true)));
  });

describe('H2Request and H2Response (the inbound core-stream exchange)', () => {
  it('a body given to undici: a reset after undici let go of it (app refused) throws nothing', async () => {
    const pool = new Pool('http://127.0.0.1:9'); // nothing listens: ECONNREFUSED
    let served: H2Request | undefined;
    const server = await exchangeServer((req, res) => {
      served = req;
      pool.dispatch(
        { method: 'POST', path: '/', headers: [], body: uploadOf(req) },
        {
          onRequestStart() {},
          onResponseStart() {},
          onResponseData() {},
          onResponseEnd() {},
          onResponseError() {
            res.writeHead(502).end('bad gateway');
          },
        },
      );
    });
    const client = h2connect(`http://127.0.0.1:${server.port}`);
    try {
      const s = client.request({ ':method': 'POST', ':path': '/' }, { endStream: false });
      s.on('error', () => {});
      s.write(Buffer.alloc(200_000));
      const status = await new Promise((r) => s.once('response', (h) => r(h[':status'])));
      assert.equal(status, 502);
      await new Promise((r) => setTimeout(r, 200)); // undici is done with the request by then
      client.socket.destroy(); // the body never ends
      assert.equal(await closedOf(served!), true);
      // An uncaught error from the body's view would fail this test through the runner.
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      client.destroy();
      await pool.close();
      await server.close();
    }
  });

  it('a body the consumer stopped reading (an early answer) is drained, so the stream closes', async () => {
    let serve: (req: H2Request) => void;
    const served = new Promise<H2Request>((r) => (serve = r));
    const server = await exchangeServer((req, res) => {
      serve(req);
      const view = uploadOf(req);
      view.once('data', () => view.destroy()); // as undici does once the app answered
      res.writeHead(200).end('early answer');
    });
    const client = h2connect(`http://127.0.0.1:${server.port}`);
    try {
      const s = client.request({ ':method': 'POST', ':path': '/' }, { endStream: false });
      s.on('error', () => {});
      s.resume();
      s.write(Buffer.alloc(10_000));
      setTimeout(() => s.end(Buffer.alloc(20_000)), 100);
      assert.equal(
        await closedOf(await served),
        true,
        'the server stream closes and frees its buffered body',
      );
    } finally {
      client.destroy();
      await server.close();
    }
  });

  it('answering a stream the client reset (closed, body unread) neither throws nor keeps it', async () => {
    let served: H2Request | undefined;
    const answered = new Promise<H2Response>((resolve) => {
      void exchangeServer((req, res) => {
        served = req;
        // Whatever takes the body does not read it (an app applying back-pressure).
        req.stream.pipe(new Writable({ highWaterMark: 1, write() {} }));
        setTimeout(() => resolve(res), 300);
      }).then((srv) => {
        const frame = (type: number, flags: number, id: number, payload: Buffer) => {
          const h = Buffer.alloc(9);
          h.writeUIntBE(payload.length, 0, 3);
          h[3] = type;
          h[4] = flags;
          h.writeUInt32BE(id, 5);
          return Buffer.concat([h, payload]);
        };
        const sock = netConnect(srv.port, '127.0.0.1', () => {
          sock.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
          sock.write(frame(4, 0, 0, Buffer.alloc(0))); // SETTINGS
          // HEADERS (END_HEADERS): :method POST, :path /, :scheme http, :authority a
          sock.write(frame(1, 4, 1, Buffer.from([0x83, 0x84, 0x86, 0x41, 0x01, 0x61])));
          for (let i = 0; i < 3; i++) sock.write(frame(0, 0, 1, Buffer.alloc(16_384)));
          setTimeout(() => sock.write(frame(3, 0, 1, Buffer.alloc(4))), 100); // RST_STREAM NO_ERROR
        });
        sock.on('data', () => {});
        sock.on('error', () => {});
        closers.push(() => (sock.destroy(), srv.close()));
      });
    });
    const closers: (() => Promise<void>)[] = [];
    try {
      const res = await answered;
      assert.equal(served!.stream.closed, true);
      assert.equal(res.gone, true);
      res.writeHead(200, ['content-type', 'text/plain']);
      assert.equal(
        res.write(Buffer.from('dropped')),
        true,
        'a write to a gone stream does not wait for drain',
      );
      res.end();
      assert.equal(served!.stream.destroyed, true, 'ending the answer frees the stream');
    } finally {
      for (const close of closers) await close();
    }
  });

  it('relayH2 for a client already gone cancels the app stream at once', async () => {
    let upstreamClosed: Promise<number> | undefined;
    const app = createH2Server((req) => {
      upstreamClosed = new Promise((r) => req.stream.once('close', () => r(req.stream.rstCode!)));
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const upstream = createH2Client(() =>
      openH2c(`http://127.0.0.1:${(app.address() as AddressInfo).port}`, 2_000),
    );
    let outcome: Promise<unknown> | undefined;
    const server = await exchangeServer((req, res) => {
      req.stream.once('close', () => {
        // The client reset while the layers ran; the relay starts afterwards.
        outcome = upstream
          .request(h2RequestHeaders('POST', '/x', 'app', 'http', [], false))
          .then((stream) => relayH2(req, res, stream, undefined, undefined));
        outcome.catch(() => {}); // asserted below
      });
    });
    const client = h2connect(`http://127.0.0.1:${server.port}`);
    try {
      const s = client.request({ ':method': 'POST', ':path': '/x' }, { endStream: false });
      s.on('error', () => {});
      await new Promise((r) => setTimeout(r, 50));
      s.close(constants.NGHTTP2_CANCEL);
      while (!outcome) await new Promise((r) => setTimeout(r, 10));
      await assert.rejects(
        outcome,
        (e: Error & { code?: string }) => e.code === 'ERR_SIDECAR_UPSTREAM_UNAVAILABLE',
      );
      while (!upstreamClosed) await new Promise((r) => setTimeout(r, 10));
      assert.equal(await upstreamClosed, constants.NGHTTP2_CANCEL);
    } finally {
      client.destroy();
      await upstream.close();
      await server.close();
      await new Promise((r) => app.close(r));
    }
  });
});

describe('HTTP/2 request bodies that stop, and resets mid-relay', () => {
  it('a non-gRPC body that stops is answered 408 after bodyTimeout and the exchange sees it; an idle gRPC stream is not cut', async () => {
    const seen: { bodyTimedOut: boolean; path: string }[] = [];
    const side = createH2Side(
      {
        streams: (req, res) => {
          uploadOf(req).resume(); // the app reads whatever comes
          res.once('close', () => seen.push({ bodyTimedOut: req.bodyTimedOut, path: req.url }));
        },
      },
      { ...DEFAULT_CONNECTION_BUDGETS, bodyTimeout: 300 },
    );
    const server = createServer((socket) => side.accept(socket));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const client = h2connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    try {
      const started = Date.now();
      const stalled = client.request({ ':method': 'POST', ':path': '/upload' }, { endStream: false });
      stalled.write('the first bytes, then nothing');
      let body = '';
      stalled.on('data', (c: Buffer) => (body += c));
      const status = await new Promise((r) => stalled.once('response', (h) => r(h[':status'])));
      assert.equal(status, 408);
      await new Promise((r) => stalled.once('close', r));
      assert.equal(JSON.parse(body).error, 'ERR_SIDECAR_BODY_TIMEOUT');
      const took = Date.now() - started;
      assert.ok(took >= 250 && took < 5_000, `answered after the body timeout (${took} ms)`);
      assert.deepEqual(seen, [{ bodyTimedOut: true, path: '/upload' }]);

      const grpc = client.request(
        {
          ':method': 'POST',
          ':path': '/shop.Orders/Watch',
          'content-type': 'application/grpc',
          te: 'trailers',
        },
        { endStream: false },
      );
      grpc.on('error', () => {});
      await new Promise((r) => setTimeout(r, 900));
      assert.equal(grpc.closed, false, 'an idle gRPC stream outlives the body timeout');
      grpc.close(constants.NGHTTP2_CANCEL);
    } finally {
      client.destroy();
      await new Promise((r) => server.close(r));
    }
  });

  it('relayH2: a client reset before the app answers is the client gone, not an answer of status 0', async () => {
    const app = createH2Server(() => {}); // never answers
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const upstream = createH2Client(() =>
      openH2c(`http://127.0.0.1:${(app.address() as AddressInfo).port}`, 2_000),
    );
    let outcome: Promise<unknown> | undefined;
    const server = await exchangeServer((req, res) => {
      outcome = upstream
        .request(h2RequestHeaders('POST', '/x', 'app', 'http', [], false))
        .then((stream) => relayH2(req, res, stream, undefined, 5_000));
      outcome.catch(() => {}); // asserted below
    });
    const client = h2connect(`http://127.0.0.1:${server.port}`);
    try {
      const s = client.request({ ':method': 'POST', ':path': '/x' }, { endStream: false });
      s.on('error', () => {});
      s.write('some body');
      while (!outcome) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 50));
      s.close(constants.NGHTTP2_NO_ERROR);
      await assert.rejects(
        outcome,
        (e: Error & { code?: string }) => e.code === 'ERR_SIDECAR_UPSTREAM_UNAVAILABLE',
      );
    } finally {
      client.destroy();
      await upstream.close();
      await server.close();
      await new Promise((r) => app.close(r));
    }
  });
});
