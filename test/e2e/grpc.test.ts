// gRPC through both sidecars: a real @grpc/grpc-js client (h2c to web's outbound side) and server
// (behind orders' sidecar as `app: h2c://…`), over one multiplexed mTLS HTTP/2 connection between
// the sidecars. Messages are raw bytes (identity serializers): no protobuf needed to test transport.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { connect as h2connect } from 'node:http2';
import { request as httpsRequest } from 'node:https';
import * as grpc from '@grpc/grpc-js';
import { ORDERS, WEB, startMesh } from './mesh.ts';
import type { Mesh } from './mesh.ts';

const id = (b: Buffer) => b;
const method = (path: string, requestStream: boolean, responseStream: boolean) => ({
  path,
  requestStream,
  responseStream,
  requestSerialize: id,
  requestDeserialize: id,
  responseSerialize: id,
  responseDeserialize: id,
});
const ORDERS_SERVICE = {
  get: method('/shop.Orders/Get', false, false),
  chat: method('/shop.Orders/Chat', true, true),
  upload: method('/shop.Orders/Upload', true, false),
  dump: method('/shop.Orders/Dump', false, true),
  slow: method('/shop.Orders/Slow', false, false),
  wipe: method('/shop.Admin/Wipe', false, false),
} as const;

const POLICY = `service: ${ORDERS}
mode: enforce
roles:
  storefront: [${WEB}]
rules:
  - id: storefront-calls-orders
    role: storefront
    grpc: [shop.Orders]
  - id: nobody-wipes
    effect: deny
    subjects: ['*']
    grpc: [shop.Admin/Wipe]
  - id: storefront-reads-orders
    role: storefront
    methods: [GET]
    paths: [/orders, /orders/:id]
`;

const DUMP_CHUNK = 64 * 1024;
const DUMP_CHUNKS = 160; // 10 MiB

interface Seen {
  traceparent?: string;
  peer?: string;
  authorization?: string;
  forwardedCert?: string;
}

function startGrpcApp(): Promise<{
  server: grpc.Server;
  port: number;
  seen: Seen[];
  blocked: { count: number };
}> {
  const seen: Seen[] = [];
  const blocked = { count: 0 };
  const note = (md: grpc.Metadata) =>
    seen.push({
      traceparent: md.get('traceparent')[0] as string | undefined,
      peer: md.get('x-portcullis-peer')[0] as string | undefined,
      authorization: md.get('authorization')[0] as string | undefined,
      forwardedCert: md.get('x-forwarded-client-cert')[0] as string | undefined,
    });
  const server = new grpc.Server();
  server.addService(ORDERS_SERVICE as unknown as grpc.ServiceDefinition, {
    get: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      note(call.metadata);
      const trailer = new grpc.Metadata();
      trailer.set('x-order-count', '3');
      cb(null, Buffer.concat([Buffer.from('got:'), call.request]), trailer);
    },
    chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      note(call.metadata);
      call.on('data', (m: Buffer) => call.write(Buffer.concat([Buffer.from('echo:'), m])));
      call.on('end', () => call.end());
    },
    upload: (call: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      let n = 0;
      call.on('data', (m: Buffer) => (n += m.length));
      call.on('end', () => cb(null, Buffer.from(String(n))));
    },
    dump: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      note(call.metadata);
      let i = 0;
      const chunk = (k: number) => createHash('sha512').update(String(k)).digest().subarray(0, 8);
      const pump = () => {
        while (i < DUMP_CHUNKS) {
          const b = Buffer.alloc(DUMP_CHUNK, chunk(i));
          i++;
          if (!call.write(b)) {
            blocked.count++;
            call.once('drain', pump);
            return;
          }
        }
        call.end();
      };
      pump();
    },
    slow: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      setTimeout(() => cb(null, Buffer.from('late')), 2_000).unref();
    },
    wipe: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, Buffer.from('wiped')),
  });
  return new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve({ server, port, seen, blocked }),
    ),
  );
}

const Client = grpc.makeGenericClientConstructor(
  ORDERS_SERVICE as unknown as grpc.ServiceDefinition,
  'Orders',
);
type AnyClient = InstanceType<typeof Client> & Record<string, (...args: unknown[]) => unknown>;

function unary(
  client: AnyClient,
  name: string,
  body: Buffer,
  md = new grpc.Metadata(),
  options: grpc.CallOptions = {},
): Promise<{ value: Buffer; trailers: grpc.Metadata }> {
  return new Promise((resolve, reject) => {
    // grpc-js calls back before it emits `status` (which carries the trailers): wait for both.
    let value: Buffer | undefined;
    let trailers: grpc.Metadata | undefined;
    const settle = () => value && trailers && resolve({ value, trailers });
    const call = (client[name] as (...a: unknown[]) => grpc.ClientUnaryCall)(
      body,
      md,
      options,
      (err: grpc.ServiceError | null, v: Buffer) => (err ? reject(err) : ((value = v), settle())),
    );
    call.on('status', (s: grpc.StatusObject) => ((trailers = s.metadata), settle()));
  });
}

describe('gRPC through both sidecars (grpc-js client and server)', () => {
  let mesh: Mesh;
  let app: Awaited<ReturnType<typeof startGrpcApp>>;
  let client: AnyClient;
  before(async () => {
    app = await startGrpcApp();
    mesh = await startMesh({ ordersPolicy: POLICY, ordersAppUrl: `h2c://127.0.0.1:${app.port}` });
    client = new Client(`127.0.0.1:${mesh.web.outbound!.port}`, grpc.credentials.createInsecure(), {
      'grpc.default_authority': 'orders',
    }) as AnyClient;
  });
  after(async () => {
    client?.close();
    await mesh?.close();
    await new Promise<void>((r) => (app ? app.server.tryShutdown(() => r()) : r()));
  });

  it('passes an allowed unary call with its trailers, the caller identity and the trace id', async () => {
    const traceId = randomBytes(16).toString('hex');
    const md = new grpc.Metadata();
    md.set('traceparent', `00-${traceId}-${randomBytes(8).toString('hex')}-01`);
    md.set('x-portcullis-peer', 'spiffe://example.org/ns/evil/sa/forged');
    md.set('x-forwarded-client-cert', 'forged');
    const { value, trailers } = await unary(client, 'get', Buffer.from('order-1'), md);
    assert.equal(value.toString(), 'got:order-1');
    assert.equal(trailers.get('x-order-count')[0], '3');
    const seen = app.seen.at(-1)!;
    assert.equal(seen.traceparent?.slice(3, 35), traceId, 'the server sees the client trace id');
    assert.equal(seen.peer, WEB, 'the identity header is the sidecar one, not the forged one');
    assert.equal(seen.forwardedCert, undefined);
    assert.equal(seen.authorization, undefined, 'the token stays with the sidecar');
    const event = mesh.ordersEvents.findLast((e) => e.action === 'POST /shop.Orders/Get')!;
    assert.equal(event.decision, 'allow');
    assert.equal(event.rule, 'storefront-calls-orders');
    assert.equal(event.attributes?.grpcStatus, '0');
    assert.equal(event.traceId, traceId);
  });

  it('passes bidirectional and client streaming calls', async () => {
    const call = (client.chat as () => grpc.ClientDuplexStream<Buffer, Buffer>)();
    const got: string[] = [];
    call.on('data', (m: Buffer) => got.push(m.toString()));
    const done = new Promise<void>((resolve, reject) => {
      call.on('end', resolve);
      call.on('error', reject);
    });
    for (let i = 0; i < 20; i++) call.write(Buffer.from(`m${i}`));
    call.end();
    await done;
    assert.deepEqual(
      got,
      Array.from({ length: 20 }, (_, i) => `echo:m${i}`),
    );
    const total = await new Promise<string>((resolve, reject) => {
      const up = (client.upload as (cb: grpc.requestCallback<Buffer>) => grpc.ClientWritableStream<Buffer>)(
        (err, v) => (err ? reject(err) : resolve(v!.toString())),
      );
      for (let i = 0; i < 50; i++) up.write(randomBytes(10_000));
      up.end();
    });
    assert.equal(total, '500000');
  });

  it('refuses a denied method with PERMISSION_DENIED naming the rule, and audits it', async () => {
    await assert.rejects(unary(client, 'wipe', Buffer.from('all')), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.PERMISSION_DENIED);
      assert.match(err.details, /ERR_SIDECAR_POLICY_DENIED: denied by rule nobody-wipes/);
      return true;
    });
    const event = mesh.ordersEvents.findLast((e) => e.action === 'POST /shop.Admin/Wipe')!;
    assert.equal(event.decision, 'deny');
    assert.equal(event.rule, 'nobody-wipes');
    assert.equal(event.status, 200);
    assert.equal(event.attributes?.grpcStatus, '7');
  });

  it('answers UNAUTHENTICATED without a token, and for a token bound to another certificate', async () => {
    const pki = mesh.pki;
    const direct = (name: string) =>
      new Client(
        `127.0.0.1:${mesh.orders.inbound.port}`,
        grpc.credentials.createSsl(
          Buffer.from(pki.rootPem),
          Buffer.from(pki.leaf(name).keyPem),
          Buffer.from(pki.leaf(name).certPem),
          { checkServerIdentity: () => undefined },
        ),
        { 'grpc.default_authority': 'orders', 'grpc.ssl_target_name_override': 'orders' },
      ) as AnyClient;
    const web = direct('web');
    const admin = direct('admin-console');
    try {
      await assert.rejects(unary(web, 'get', Buffer.from('x')), (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.UNAUTHENTICATED);
        assert.match(err.details, /ERR_SIDECAR_TOKEN_MISSING/);
        return true;
      });
      // A genuine token of web's, presented on the admin console's connection.
      const token = await mesh.web.tokens!.get(ORDERS);
      const md = new grpc.Metadata();
      md.set('authorization', `Bearer ${token}`);
      await assert.rejects(unary(admin, 'get', Buffer.from('x'), md), (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.UNAUTHENTICATED);
        assert.match(err.details, /ERR_SIDECAR_TOKEN_NOT_BOUND/);
        return true;
      });
      const event = mesh.ordersEvents.findLast((e) => e.reason === 'ERR_SIDECAR_TOKEN_NOT_BOUND')!;
      assert.equal(event.attributes?.grpcStatus, '16');
    } finally {
      web.close();
      admin.close();
    }
  });

  it('streams 10 MiB from the server intact, under back-pressure from a slow reader', async () => {
    const expected = createHash('sha256');
    for (let i = 0; i < DUMP_CHUNKS; i++)
      expected.update(
        Buffer.alloc(DUMP_CHUNK, createHash('sha512').update(String(i)).digest().subarray(0, 8)),
      );
    const blockedBefore = app.blocked.count;
    const call = (client.dump as (b: Buffer) => grpc.ClientReadableStream<Buffer>)(Buffer.from('all'));
    const got = createHash('sha256');
    let bytes = 0;
    // Read nothing for a while: the windows fill and the server must wait.
    call.pause();
    await new Promise((r) => setTimeout(r, 300));
    call.resume();
    await new Promise<void>((resolve, reject) => {
      call.on('data', (m: Buffer) => {
        bytes += m.length;
        got.update(m);
      });
      call.on('end', resolve);
      call.on('error', reject);
    });
    assert.equal(bytes, DUMP_CHUNK * DUMP_CHUNKS);
    assert.equal(got.digest('hex'), expected.digest('hex'));
    assert.ok(app.blocked.count > blockedBefore, 'the server saw back-pressure (write() returned false)');
  });

  it('honours grpc-timeout at the sidecar: past it the call is DEADLINE_EXCEEDED and audited', async () => {
    // A raw HTTP/2 client that does not enforce its own deadline: only the sidecar can end the call.
    const session = h2connect(`http://127.0.0.1:${mesh.web.outbound!.port}`);
    try {
      const started = Date.now();
      const answer = await new Promise<{ head: Record<string, unknown>; trailers: Record<string, unknown> }>(
        (resolve, reject) => {
          const s = session.request({
            ':method': 'POST',
            ':path': '/shop.Orders/Slow',
            ':authority': 'orders',
            'content-type': 'application/grpc',
            te: 'trailers',
            'grpc-timeout': '300m',
          });
          let head: Record<string, unknown> = {};
          let trailers: Record<string, unknown> = {};
          s.on('response', (h) => (head = h));
          s.on('trailers', (t) => (trailers = t));
          s.on('data', () => {});
          s.on('end', () => resolve({ head, trailers }));
          s.on('error', reject);
          // One empty gRPC message: flag 0, length 0.
          s.end(Buffer.alloc(5));
        },
      );
      const took = Date.now() - started;
      assert.equal(answer.head[':status'], 200);
      assert.equal(
        answer.head['grpc-status'] ?? answer.trailers['grpc-status'],
        String(grpc.status.DEADLINE_EXCEEDED),
      );
      assert.ok(took >= 250 && took < 1_800, `ended by the 300 ms deadline, not the 2 s server (${took} ms)`);
      const event = mesh.ordersEvents.findLast((e) => e.action === 'POST /shop.Orders/Slow')!;
      assert.equal(event.reason, 'ERR_SIDECAR_UPSTREAM_TIMEOUT');
      assert.equal(event.attributes?.grpcStatus, '4');
    } finally {
      session.close();
    }
  });

  it('refuses a malformed grpc-timeout rather than guessing a deadline', async () => {
    const md = new grpc.Metadata();
    md.set('grpc-timeout', 'soon');
    // grpc-js sets grpc-timeout itself only with a deadline; a custom one goes out as sent.
    await assert.rejects(unary(client, 'get', Buffer.from('x'), md), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.match(err.details, /grpc-timeout/);
      return true;
    });
  });

  it('relays an HTTP/1.1 call to the h2c app, trailers included', async () => {
    const leaf = mesh.pki.leaf('web');
    const token = await mesh.web.tokens!.get(ORDERS);
    const message = Buffer.from('order-9');
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, message.length]), message]);
    const answer = await new Promise<{
      status: number;
      body: Buffer;
      trailers: Record<string, string | undefined>;
    }>((resolve, reject) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port: mesh.orders.inbound.port,
          method: 'POST',
          path: '/shop.Orders/Get',
          cert: leaf.certPem,
          key: leaf.keyPem,
          rejectUnauthorized: false,
          agent: false,
          headers: {
            host: 'orders',
            authorization: `Bearer ${token}`,
            'content-type': 'application/grpc',
            te: 'trailers',
            'content-length': frame.length,
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode!, body: Buffer.concat(chunks), trailers: res.trailers }),
          );
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(frame);
    });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.subarray(5).toString(), 'got:order-9');
    assert.equal(answer.trailers['grpc-status'], '0');
    assert.equal(answer.trailers['x-order-count'], '3');
  });

  it('carries many calls on one multiplexed connection between the sidecars', async () => {
    const open = async () => {
      const m = await mesh.orders.metrics.registry
        .getSingleMetric('portcullis_sidecar_connections_open')!
        .get();
      return m.values.find((v) => v.labels.listener === 'inbound')?.value ?? NaN;
    };
    const before = await open();
    const calls = await Promise.all(
      Array.from({ length: 50 }, (_, i) => unary(client, 'get', Buffer.from(`o${i}`))),
    );
    assert.equal(calls.length, 50);
    calls.forEach((c, i) => assert.equal(c.value.toString(), `got:o${i}`));
    assert.ok((await open()) <= before, 'no new connection to orders for 50 concurrent calls');
    assert.ok(before >= 1);
  });
});
