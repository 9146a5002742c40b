import { once } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import { createServer, connect } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { coalesceWrites } from '../../core/index.ts';

type Handle = Record<string, (...args: unknown[]) => unknown>;
const WRITE_METHODS = ['writev', 'writeBuffer', 'writeUtf8String', 'writeLatin1String', 'writeAsciiString'];

/** Counts the writes `socket` hands to its handle: one per system call (or TLS write) it would make. */
function countHandleWrites(socket: Socket): { count: number } {
  const counter = { count: 0 };
  const handle = (socket as unknown as { _handle: Handle })._handle;
  for (const name of WRITE_METHODS) {
    const real = handle[name]!.bind(handle);
    handle[name] = (...args: unknown[]) => {
      counter.count++;
      return real(...args);
    };
  }
  return counter;
}

describe('coalesceWrites', () => {
  let server: Server;
  let port: number;
  const accepted: Socket[] = [];
  before(async () => {
    server = createServer((s) => accepted.push(s));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });
  after(() => {
    for (const s of accepted) s.destroy();
    server.close();
  });

  /** A connected pair: the local end (coalesced) and the server's end of it. */
  const pair = async (): Promise<{ local: Socket; remote: Socket }> => {
    const n = accepted.length;
    const local = connect(port, '127.0.0.1');
    await once(local, 'connect');
    while (accepted.length === n) await new Promise((r) => setImmediate(r));
    return { local, remote: accepted[n]! };
  };
  const readAll = async (s: Socket): Promise<string> => {
    let text = '';
    s.on('data', (c: Buffer) => (text += c.toString('latin1')));
    await once(s, 'end');
    return text;
  };

  test('writes made in one turn of the event loop leave in one write, in order, strings and buffers mixed', async () => {
    const { local, remote } = await pair();
    const writes = countHandleWrites(local);
    coalesceWrites(local);
    const received = readAll(remote);
    const parts = Array.from({ length: 8 }, (_, i) => `HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n${i}`);
    parts.forEach((p, i) => local.write(i % 2 ? Buffer.from(p, 'latin1') : p, i % 2 ? undefined : 'latin1'));
    local.cork();
    local.write('é', 'utf8');
    local.write(Buffer.from('!'));
    local.uncork();
    local.end();
    assert.equal(await received, parts.join('') + Buffer.from('é', 'utf8').toString('latin1') + '!');
    assert.equal(writes.count, 1);
  });

  test('a write acknowledged at once still calls back once, and later turns write again', async () => {
    const { local, remote } = await pair();
    const writes = countHandleWrites(local);
    coalesceWrites(local);
    const received = readAll(remote);
    const calls: string[] = [];
    local.write('a', () => calls.push('a'));
    local.write('b', () => calls.push('b'));
    await new Promise((r) => setTimeout(r, 20));
    local.write('c', () => calls.push('c'));
    local.end();
    assert.equal(await received, 'abc');
    assert.deepEqual(calls, ['a', 'b', 'c']);
    assert.equal(writes.count, 2);
  });

  test('past the held-bytes bound a callback waits for the real write (back-pressure holds)', async () => {
    const { local, remote } = await pair();
    coalesceWrites(local, 4);
    const received = readAll(remote);
    let small = false;
    let big = false;
    local.write('ab', () => (small = true));
    local.write('cdefgh', () => (big = true));
    await new Promise((r) => process.nextTick(r));
    assert.equal(small, true, 'within the bound: acknowledged at once');
    assert.equal(big, false, 'past the bound: not acknowledged before it is written');
    assert.ok(local.writableLength > 0, 'the unacknowledged bytes count against the stream');
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    assert.equal(big, true);
    local.end();
    assert.equal(await received, 'abcdefgh');
  });

  test('a peer that does not read meets back-pressure: write() returns false and nothing is lost', async () => {
    const { local, remote } = await pair();
    coalesceWrites(local);
    remote.pause();
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let written = 0;
    let full = false;
    // Bounded: stop at 256 MiB whatever happens, so a regression fails instead of filling memory.
    while (written < 256 * 2 ** 20) {
      written += chunk.length;
      if (local.write(chunk)) continue;
      const drained = await Promise.race([
        once(local, 'drain').then(() => true),
        new Promise((r) => setTimeout(r, 300, false)),
      ]);
      if (!drained) {
        full = true;
        break;
      }
    }
    assert.equal(full, true, 'the writer stopped draining: a peer that reads nothing holds it back');
    assert.ok(written < 64 * 2 ** 20, `${written} bytes taken before back-pressure`);
    let got = 0;
    remote.on('data', (c: Buffer) => (got += c.length));
    remote.resume();
    local.end();
    await once(remote, 'end');
    assert.equal(got, written);
  });

  test('end() right after writes delivers them before the FIN; destroy() right after writes still sends them', async () => {
    const a = await pair();
    coalesceWrites(a.local);
    const received = readAll(a.remote);
    a.local.end('last words');
    assert.equal(await received, 'last words');

    const b = await pair();
    coalesceWrites(b.local);
    b.local.on('error', (err) => assert.fail(err));
    let text = '';
    b.remote.on('data', (c: Buffer) => (text += c.toString('latin1')));
    const closed = once(b.remote, 'close');
    b.local.write('acknowledged, then destroyed');
    b.local.destroy();
    await once(b.local, 'close');
    await closed;
    assert.equal(text, 'acknowledged, then destroyed');
  });

  test('an HTTP answer survives server.close() destroying its idle keep-alive socket at once', async () => {
    const http = createHttpServer((_req, res) => {
      res.on('finish', () => http.close());
      res.end('hello');
    });
    http.on('connection', (s: Socket) => coalesceWrites(s));
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    const client = connect((http.address() as AddressInfo).port, '127.0.0.1');
    const answer = readAll(client);
    client.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    const text = await answer;
    assert.match(text, /^HTTP\/1\.1 200 [^]*\r\n\r\nhello$/);
  });
});
