// The two demo services of `portcullis up` and docker-compose: `orders` answers order lookups;
// `web` calls `orders` through its sidecar's outbound proxy. Plain node:http apps that know
// nothing of mTLS or tokens: that is the sidecars' job.
import { createServer, request } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ROOT_CONTEXT, SpanKind, propagation, trace } from '@opentelemetry/api';
import type { Tracer } from '@opentelemetry/api';

/** Options of {@link startDemoApp}. */
export interface DemoAppOptions {
  readonly kind: 'orders' | 'web';
  readonly host?: string;
  readonly port?: number;
  /** web only: the sidecar's outbound proxy, e.g. `http://127.0.0.1:15001`. */
  readonly proxy?: string;
  /** web only: the host name orders is routed by (default `orders.shop.internal`). */
  readonly ordersHost?: string;
  /**
   * When given, each request is a server span (child of the caller's `traceparent`), and web's
   * call to orders carries that span as its parent: an instrumented app, as a real one would be.
   */
  readonly tracer?: Tracer;
}

/** A running demo app. */
export interface DemoApp {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

const ORDER_ID = /^\/orders\/([A-Za-z0-9_-]{1,64})$/;

/** Starts one demo app on `host:port` (port 0 picks one). */
export async function startDemoApp(options: DemoAppOptions): Promise<DemoApp> {
  const handler = options.kind === 'orders' ? ordersHandler : webHandler(options);
  const tracer = options.tracer;
  const server: Server = createServer((req, res) => {
    if (tracer) {
      // Plain OpenTelemetry API, as any instrumented app would use it: W3C context in, span, context out.
      const route = ORDER_ID.test(req.url ?? '') ? '/orders/:id' : (req.url ?? '/').split('?')[0]!;
      const parent = propagation.extract(ROOT_CONTEXT, req.headers);
      const span = tracer.startSpan(
        `${req.method} ${route}`,
        {
          kind: SpanKind.SERVER,
          attributes: { 'http.request.method': req.method ?? '', 'http.route': route },
        },
        parent,
      );
      // What this app calls next is a child of this span.
      const carrier: Record<string, string> = {};
      propagation.inject(trace.setSpan(parent, span), carrier);
      if (carrier.traceparent) req.headers.traceparent = carrier.traceparent;
      res.once('close', () => {
        span.setAttribute('http.response.status_code', res.statusCode);
        span.end();
      });
    }
    handler(req, res).catch((err: unknown) =>
      send(res, 502, { error: 'upstream_failed', detail: String((err as Error).message) }),
    );
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${options.host ?? '127.0.0.1'}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function ordersHandler(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = req.url ?? '/';
  if (url === '/healthz') return send(res, 200, { status: 'ok' });
  const m = ORDER_ID.exec(url);
  if (!m) return send(res, 404, { error: 'not_found' });
  // The sidecar has verified the caller; this header is the only identity the app needs to read.
  const caller = req.headers['x-portcullis-peer'] ?? null;
  const trace = req.headers.traceparent ?? null;
  if (req.method === 'GET') {
    return send(res, 200, {
      service: 'orders',
      order: { id: m[1], item: 'The Art of Computer Programming', status: 'shipped' },
      caller,
      traceparent: trace,
    });
  }
  if (req.method === 'POST')
    return send(res, 201, { service: 'orders', order: { id: m[1], status: 'updated' }, caller });
  return send(res, 405, { error: 'method_not_allowed' });
}

function webHandler(options: DemoAppOptions) {
  const proxy = new URL(options.proxy ?? 'http://127.0.0.1:15001');
  const ordersHost = options.ordersHost ?? 'orders.shop.internal';
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = req.url ?? '/';
    if (url === '/healthz') return send(res, 200, { status: 'ok' });
    const m = ORDER_ID.exec(url);
    if (!m || req.method !== 'GET') return send(res, 404, { error: 'not_found', try: 'GET /orders/1' });
    // Absolute-form request to the sidecar's outbound proxy, exactly what HTTP_PROXY clients send.
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const headers: Record<string, string> = { host: ordersHost };
      if (typeof req.headers.traceparent === 'string') headers.traceparent = req.headers.traceparent;
      const out = request(
        {
          host: proxy.hostname,
          port: proxy.port,
          method: 'GET',
          path: `http://${ordersHost}/orders/${m[1]}`,
          headers,
          timeout: 10_000,
        },
        (r) => {
          let body = '';
          r.setEncoding('utf8');
          r.on('data', (c: string) => (body += c));
          r.on('end', () => resolve({ status: r.statusCode ?? 502, body }));
          r.on('error', reject);
        },
      );
      out.on('timeout', () => out.destroy(new Error('orders did not answer in time')));
      out.on('error', reject);
      out.end();
    });
    let orders: unknown;
    try {
      orders = JSON.parse(answer.body);
    } catch {
      orders = answer.body;
    }
    send(res, answer.status === 200 ? 200 : 502, { service: 'web', ordersStatus: answer.status, orders });
  };
}

// `node demo/app.ts orders --port 8082` / `node demo/app.ts web --port 8081 --proxy http://127.0.0.1:15001`
if (import.meta.main) {
  const { parseArgs } = await import('node:util');
  const USAGE = 'usage: node demo/app.ts orders|web [--host H] [--port N] [--proxy URL] [--orders-host NAME]';
  const fail = (why: string): never => {
    console.error(`demo: ${why}\n${USAGE}`);
    process.exit(2);
  };
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        port: { type: 'string' },
        host: { type: 'string' },
        proxy: { type: 'string' },
        'orders-host': { type: 'string' },
      },
    });
  } catch (err) {
    fail((err as Error).message);
  }
  const { positionals, values } = parsed!;
  const kind = positionals[0];
  if (kind !== 'orders' && kind !== 'web') fail('the first argument is orders or web');
  const port = Number(values.port ?? 0);
  if (!/^\d{1,5}$/.test(values.port ?? '0') || port > 65_535) fail(`--port: "${values.port}" is not a port`);
  if (values.proxy !== undefined && !URL.canParse(values.proxy))
    fail(`--proxy: "${values.proxy}" is not a URL`);
  const app = await startDemoApp({
    kind: kind as 'orders' | 'web',
    host: values.host ?? '127.0.0.1',
    port,
    ...(values.proxy ? { proxy: values.proxy } : {}),
    ...(values['orders-host'] ? { ordersHost: values['orders-host'] } : {}),
  }).catch((err: Error) => fail(err.message));
  console.log(`demo ${kind} listening on ${app.url}`);
  const stop = () => void app.close().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
