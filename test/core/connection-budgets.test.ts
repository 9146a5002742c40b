import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Server as HttpsServer } from 'node:https';
import { connect } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  applyConnectionBudgets,
  connectionBudgetsSchema,
  connectionServerOptions,
  describeClientError,
  parseConfigText,
  strictObject,
  DEFAULT_CONNECTION_BUDGETS,
} from '../../core/index.ts';
import type { ConnectionBudgets, ConnectionGuard } from '../../core/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';

const budgets = (extra: Partial<ConnectionBudgets> = {}): ConnectionBudgets => ({
  ...DEFAULT_CONNECTION_BUDGETS,
  ...extra,
});
const timeoutBody = (message: string) => JSON.stringify({ error: 'ERR_TEST_TIMEOUT', message });

/** A plain HTTP server with the budgets applied, listening on loopback port 0. */
async function httpServer(
  b: ConnectionBudgets,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ server: HttpServer; guard: ConnectionGuard; port: number }> {
  const server = createHttpServer(connectionServerOptions(b), handler);
  server.on('clientError', (_err, socket) => socket.destroy());
  const guard = applyConnectionBudgets(server, b, { timeoutBody });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, guard, port: (server.address() as AddressInfo).port };
}

/** Opens a TCP connection and resolves once connected. */
function tcp(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.on('error', reject);
  });
}

/** Milliseconds until `socket` closes (the server closed it), or rejects after `limit`. */
function closedWithin(socket: Socket, limit: number): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    if (socket.destroyed) return resolve(0);
    const timer = setTimeout(() => reject(new Error(`still open after ${limit} ms`)), limit);
    socket.on('error', () => {});
    // A socket whose data nobody reads never sees the end, nor closes.
    socket.resume();
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(performance.now() - t0);
    });
  });
}

/** Everything the server writes until it closes the connection. */
function readAll(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
    socket.on('error', () => resolve(text));
    socket.on('close', () => resolve(text));
  });
}

const stop = (server: HttpServer | HttpsServer, guard: ConnectionGuard) =>
  Promise.all([new Promise((r) => server.close(r)), guard.drain(0)]);

describe('the connections: config section', () => {
  const schema = strictObject({ connections: connectionBudgetsSchema });
  const parse = (yaml: string) => parseConfigText(yaml, 'x.yaml', schema).connections;

  it('defaults every budget when the section or a key is absent', () => {
    assert.deepEqual(parse('{}\n'), DEFAULT_CONNECTION_BUDGETS);
    assert.deepEqual(parse('connections: { bodyTimeout: 2s }\n'), {
      ...DEFAULT_CONNECTION_BUDGETS,
      bodyTimeout: 2_000,
    });
  });

  const refused: [string, string, RegExp][] = [
    ['a zero timeout', 'handshakeTimeout: 0s', /connections\.handshakeTimeout: "0s" must be a positive/],
    [
      'a timeout that is not a duration',
      'bodyTimeout: soon',
      /connections\.bodyTimeout: "soon" is not a duration/,
    ],
    ['a number for a duration', 'keepAliveTimeout: 5', /connections\.keepAliveTimeout: must be a string/],
    ['a zero connection cap', 'maxConnections: 0', /connections\.maxConnections: .*>=1/],
    ['a fractional cap', 'maxConnectionsPerPeer: 1.5', /connections\.maxConnectionsPerPeer: .*int/],
    [
      'headers given longer than the whole request',
      'headersTimeout: 2m, requestTimeout: 1m',
      /connections\.headersTimeout: must not be longer than requestTimeout/,
    ],
    [
      'a per-peer cap above the listener cap',
      'maxConnections: 10, maxConnectionsPerPeer: 11',
      /connections\.maxConnectionsPerPeer: must not be larger than maxConnections/,
    ],
    [
      'an unknown key',
      'bodyTimout: 1s',
      /connections\.bodyTimout: unknown key \(did you mean "bodyTimeout"\?\)/,
    ],
  ];
  for (const [name, body, message] of refused)
    it(`refuses ${name} with one line naming the key`, () => {
      assert.throws(
        () => parse(`connections: { ${body} }\n`),
        (err: Error & { code?: string }) => err.code === 'ERR_CONFIG_INVALID' && message.test(err.message),
      );
    });
});

describe('describeClientError', () => {
  const cases: [string, Error & { code?: string; library?: string }, number | undefined][] = [
    [
      'a TLS handshake timeout',
      Object.assign(new Error('x'), { code: 'ERR_TLS_HANDSHAKE_TIMEOUT' }),
      undefined,
    ],
    [
      'an OpenSSL failure',
      Object.assign(new Error('x'), { code: 'ERR_SSL_WRONG_VERSION_NUMBER' }),
      undefined,
    ],
    ['an OpenSSL error object', Object.assign(new Error('x'), { library: 'SSL routines' }), undefined],
    ['a reset', Object.assign(new Error('x'), { code: 'ECONNRESET' }), undefined],
    ['a request timeout', Object.assign(new Error('x'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }), 408],
    ['oversized headers', Object.assign(new Error('x'), { code: 'HPE_HEADER_OVERFLOW' }), 431],
    ['a parser refusal', Object.assign(new Error('x'), { code: 'HPE_INVALID_CHUNK_SIZE' }), 400],
  ];
  for (const [name, err, status] of cases)
    it(`${status ? `answers ${status}` : 'answers nothing (destroy)'} for ${name}`, () => {
      assert.equal(describeClientError(err)?.status, status);
    });
});

describe('TLS handshake budget', () => {
  let pki: TestPki;
  let server: HttpsServer;
  let guard: ConnectionGuard;
  let port: number;
  before(async () => {
    pki = await makeTestPki();
    const leaf = pki.leaf('sts');
    const b = budgets({ handshakeTimeout: 400 });
    server = createHttpsServer(
      { cert: leaf.certPem, key: leaf.keyPem, ...connectionServerOptions(b) },
      (_q, r) => r.end('ok'),
    );
    guard = applyConnectionBudgets(server, b, { timeoutBody });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    await stop(server, guard);
    pki.cleanup();
  });

  it('destroys connections that never send a ClientHello within the handshake timeout, and still serves', async () => {
    const sockets = await Promise.all(Array.from({ length: 50 }, () => tcp(port)));
    const ok = await new Promise<string>((resolve, reject) => {
      const s = tlsConnect({ port, host: '127.0.0.1', ca: pki.rootPem, servername: 'localhost' }, () =>
        s.end('GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'),
      );
      readAll(s).then(resolve, reject);
    });
    assert.match(ok, /^HTTP\/1\.1 200/);
    const times = await Promise.all(sockets.map((s) => closedWithin(s, 1_500)));
    assert.ok(Math.max(...times) < 1_000, `slowest close ${Math.max(...times)} ms`);
    for (let i = 0; i < 20 && guard.open > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(guard.open, 0);
    assert.equal(guard.closed().handshake, 50, 'each is counted as closed by the handshake budget');
  });

  it('destroys a connection that trickles its ClientHello one byte at a time (the budget is not an idle timer)', async () => {
    const s = await tcp(port);
    const hello = Buffer.from('160301', 'hex');
    let i = 0;
    const trickle = setInterval(() => s.writable && s.write(hello.subarray(i % 3, (i++ % 3) + 1)), 50);
    try {
      const t = await closedWithin(s, 1_500);
      assert.ok(t < 1_000, `closed after ${t} ms`);
    } finally {
      clearInterval(trickle);
    }
  });

  it('a half-closed never-handshaken connection is destroyed too, not left half-open', async () => {
    const s = await tcp(port);
    s.end();
    assert.ok((await closedWithin(s, 1_500)) < 1_000);
  });
});

describe('request body progress budget', () => {
  let server: HttpServer;
  let guard: ConnectionGuard;
  let port: number;
  let bodyTimeouts = 0;
  before(async () => {
    ({ server, guard, port } = await httpServer(budgets({ bodyTimeout: 300 }), (req, res) => {
      // /late reads its body only after a while (back-pressure, not a stalled client).
      const read = () => {
        let n = 0;
        req.on('data', (c: Buffer) => (n += c.length));
        req.on('end', () => res.end(`read ${n}`));
      };
      if (req.url === '/late') setTimeout(read, 900);
      else read();
    }));
  });
  after(() => stop(server, guard));

  const stalls: [string, string][] = [
    ['a body shorter than its content-length', 'content-length: 100\r\n\r\n0123456789'],
    [
      'a chunk size of 2^64-1 followed by silence',
      'transfer-encoding: chunked\r\n\r\nffffffffffffffff\r\nabc',
    ],
    ['a chunked body that stops between chunks', 'transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n'],
  ];
  for (const [name, rest] of stalls)
    it(`answers 408 with connection: close and closes for ${name}`, async () => {
      const s = await tcp(port);
      const answer = readAll(s);
      const t0 = performance.now();
      s.write(`POST / HTTP/1.1\r\nhost: x\r\n${rest}`);
      const text = await answer;
      const t = performance.now() - t0;
      assert.match(text, /^HTTP\/1\.1 408 /);
      assert.match(text, /connection: close/i);
      assert.match(text, /"error":"ERR_TEST_TIMEOUT"/);
      assert.ok(t >= 290 && t < 1_000, `answered after ${t} ms`);
      assert.equal(guard.closed().body, ++bodyTimeouts);
    });

  it('does not time out a body that keeps coming, however slowly, within the budget', async () => {
    const s = await tcp(port);
    const answer = readAll(s);
    s.write('POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 5\r\n\r\n');
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setTimeout(r, 150));
      s.write('x');
    }
    assert.match(await answer, /^HTTP\/1\.1 200[\s\S]*read 5$/);
  });

  it('does not time out a body the server is slow to read (its buffer is full: back-pressure)', async () => {
    const s = await tcp(port);
    const answer = readAll(s);
    const size = 4 * 1024 * 1024;
    s.write(`POST /late HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: ${size}\r\n\r\n`);
    s.write(Buffer.alloc(size, 0x61));
    assert.match(await answer, new RegExp(`^HTTP/1\\.1 200[\\s\\S]*read ${size}$`));
  });
});

describe('request body progress budget: what it keeps', () => {
  // The sweep runs every second with a 60 s budget: what the budget keeps between sweeps shows.
  let server: HttpServer;
  let guard: ConnectionGuard;
  let port: number;
  const seen: WeakRef<IncomingMessage>[] = [];
  before(async () => {
    ({ server, guard, port } = await httpServer(budgets({ bodyTimeout: 60_000 }), (req, res) => {
      seen.push(new WeakRef(req));
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => res.end(`read ${n}`));
    }));
  });
  after(() => stop(server, guard));

  it('keeps no finished request alive until the next sweep, only the last one per connection', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const s = await tcp(port);
    const count = 40;
    let text = '';
    const answered = new Promise<void>((resolve) =>
      s.on('data', (c: Buffer) => {
        text += c.toString('latin1');
        if (text.split('read 3').length - 1 === count) resolve();
      }),
    );
    // Pipelined: each request's body is complete before the next one's headers.
    s.write('POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc'.repeat(count));
    await answered;
    await new Promise((r) => setImmediate(r));
    gc();
    await new Promise((r) => setImmediate(r));
    const alive = seen.filter((w) => w.deref() !== undefined).length;
    assert.equal(seen.length, count);
    // The connection's record holds its last request until the sweep; a list of requests held all 40.
    assert.ok(alive <= 1, `${alive} of ${count} finished requests still reachable`);
    s.destroy();
  });
});

describe('request body progress budget on a reused connection', () => {
  let server: HttpServer;
  let guard: ConnectionGuard;
  let port: number;
  before(async () => {
    ({ server, guard, port } = await httpServer(budgets({ bodyTimeout: 300 }), (req, res) => {
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => res.end(`read ${n}`));
    }));
  });
  after(() => stop(server, guard));

  it('answers 408 to a stalled body that follows finished ones on the same connection', async () => {
    const s = await tcp(port);
    const answer = readAll(s);
    for (let i = 0; i < 3; i++) {
      s.write('POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc');
      // Past a sweep or two, so that the connection's record is let go and taken again.
      await new Promise((r) => setTimeout(r, 100));
    }
    const t0 = performance.now();
    s.write('POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789');
    const text = await answer;
    const t = performance.now() - t0;
    assert.equal(text.split('read 3').length - 1, 3);
    assert.match(text, /HTTP\/1\.1 408 [\s\S]*"error":"ERR_TEST_TIMEOUT"/);
    assert.ok(t >= 290 && t < 1_000, `answered after ${t} ms`);
    assert.equal(guard.closed().body, 1);
  });

  it('does not take the idle time between two requests on a connection for a stalled body', async () => {
    const s = await tcp(port);
    const answer = readAll(s);
    s.write('POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc');
    // Idle (no request in progress) for longer than the body budget: not a stalled body.
    await new Promise((r) => setTimeout(r, 700));
    s.write('POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 3\r\n\r\nxyz');
    const text = await answer;
    assert.equal(text.split('read 3').length - 1, 2);
    assert.doesNotMatch(text, / 408 /);
    assert.equal(guard.closed().body, 1);
  });
});

describe('connection caps and keep-alive idle budget', () => {
  it('closes a connection past the per-peer cap at once and keeps the others', async () => {
    const { server, guard, port } = await httpServer(budgets({ maxConnectionsPerPeer: 3 }), (_q, r) =>
      r.end(),
    );
    try {
      const kept = await Promise.all([tcp(port), tcp(port), tcp(port)]);
      const extra = await tcp(port);
      assert.ok((await closedWithin(extra, 1_000)) < 500);
      assert.equal(guard.open, 3);
      assert.equal(guard.closed().peer_cap, 1);
      for (const s of kept) assert.equal(s.destroyed, false);
      kept[0]!.destroy();
      await new Promise((r) => setTimeout(r, 50));
      const again = await tcp(port);
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(again.destroyed, false, 'a freed place is given to the next connection');
      for (const s of [...kept, again]) s.destroy();
    } finally {
      await stop(server, guard);
    }
  });

  it('closes connections past the listener cap at once', async () => {
    const b = budgets({ maxConnections: 2, maxConnectionsPerPeer: 2 });
    const { server, guard, port } = await httpServer(b, (_q, r) => r.end());
    try {
      const kept = await Promise.all([tcp(port), tcp(port)]);
      const extra = await tcp(port);
      assert.ok((await closedWithin(extra, 1_000)) < 500);
      assert.equal(guard.closed().listener_cap, 1);
      for (const s of kept) s.destroy();
    } finally {
      await stop(server, guard);
    }
  });

  it('closes an idle keep-alive connection after keepAliveTimeout (plus the 1 s grace Node gives clients)', async () => {
    const { server, guard, port } = await httpServer(budgets({ keepAliveTimeout: 300 }), (_q, r) =>
      r.end('ok'),
    );
    try {
      const s = await tcp(port);
      s.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
      const t = await closedWithin(s, 3_000);
      assert.ok(t >= 250 && t < 2_000, `closed after ${t} ms`);
    } finally {
      await stop(server, guard);
    }
  });

  it('answers 408 to a connection that sends no complete headers within headersTimeout', async () => {
    const b = budgets({ headersTimeout: 300, requestTimeout: 300 });
    const { server, guard, port } = await httpServer(b, (_q, r) => r.end('ok'));
    server.removeAllListeners('clientError');
    server.on('clientError', (err: Error & { code?: string }, socket) => {
      const a = describeClientError(err);
      if (!a) return void socket.destroy();
      socket.end(`HTTP/1.1 ${a.status} x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    });
    try {
      const s = await tcp(port);
      const answer = readAll(s);
      s.write('GET / HTTP/1.1\r\nhost: x\r\n');
      const t0 = performance.now();
      assert.match(await answer, /^HTTP\/1\.1 408 /);
      assert.ok(performance.now() - t0 < 1_000);
    } finally {
      await stop(server, guard);
    }
  });
});

describe('bounded drain', () => {
  it('closes idle, half-open and mid-headers connections at once, finishes requests in flight, then resolves', async () => {
    const { server, guard, port } = await httpServer(budgets(), (req, res) => {
      if (req.url === '/slow') setTimeout(() => res.end('done'), 300);
      else res.end('ok');
    });
    const idle = await tcp(port);
    idle.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    await new Promise((r) => idle.once('data', r));
    const halfOpen = await tcp(port);
    halfOpen.end();
    // The server closes a half-open connection itself (no request on it): wait for that before
    // the drain, or on a loaded machine the drain may find it still open and count it.
    await closedWithin(halfOpen, 2_000);
    const midHeaders = await tcp(port);
    midHeaders.write('GET / HTTP/1.1\r\nhost: x\r\n');
    const busy = await tcp(port);
    const busyAnswer = readAll(busy);
    busy.write('GET /slow HTTP/1.1\r\nhost: x\r\n\r\n');
    await new Promise((r) => setTimeout(r, 50));
    const t0 = performance.now();
    const drained = Promise.all([new Promise((r) => server.close(r)), guard.drain(5_000)]);
    assert.ok((await closedWithin(idle, 500)) < 200);
    assert.ok((await closedWithin(midHeaders, 500)) < 200);
    const text = await busyAnswer;
    assert.match(text, /^HTTP\/1\.1 200[\s\S]*connection: close[\s\S]*done$/i);
    await drained;
    const t = performance.now() - t0;
    assert.ok(t < 1_000, `drained in ${t} ms`);
    assert.equal(guard.open, 0);
    assert.equal(
      guard.closed().drain,
      2,
      'the idle and mid-headers connections (the half-open one closed itself)',
    );
  });

  it('destroys a request still in flight at the drain timeout', async () => {
    const { server, guard, port } = await httpServer(budgets(), () => {
      /* never answers */
    });
    const s = await tcp(port);
    s.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    await new Promise((r) => setTimeout(r, 50));
    const t0 = performance.now();
    await Promise.all([new Promise((r) => server.close(r)), guard.drain(300)]);
    const t = performance.now() - t0;
    assert.ok(t >= 290 && t < 800, `drained in ${t} ms`);
    await closedWithin(s, 500);
  });
});
