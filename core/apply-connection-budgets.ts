import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { Server as TlsServer } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import type { ConnectionBudgets } from './connection-budgets.ts';

/** What {@link applyConnectionBudgets} needs from the part that owns the listener. */
export interface ConnectionBudgetHooks {
  /** The JSON body of the 408 a stalled request body gets, in the part's own error shape. */
  readonly timeoutBody: (message: string) => string;
  /** Called once for each request whose body stopped progressing, before it is answered (for audit). */
  readonly onBodyTimeout?: (req: IncomingMessage) => void;
  /** Monotonic clock in ms (tests); `performance.now` by default. */
  readonly now?: () => number;
  /**
   * For connections that carry no node:http request (an HTTP/2 session): whether the connection
   * still has work in flight. When it does, the hook has already asked it to close gracefully
   * (GOAWAY) and the drain waits for it instead of destroying it.
   */
  readonly inFlight?: (socket: Socket) => boolean;
}

/** Why the budgets closed a connection (the `reason` label of the metric). */
export type BudgetClosure = 'handshake' | 'body' | 'peer_cap' | 'listener_cap' | 'drain';

/** The listener's side of the budgets: counts, and the bounded shutdown. */
export interface ConnectionGuard {
  /** Accepted connections not yet closed (handshaking ones included). */
  readonly open: number;
  /** Connections closed by a budget since start, by why (running totals, read at scrape time). */
  closed(): Readonly<Record<BudgetClosure, number>>;
  /**
   * Bounded shutdown, to run alongside `server.close()` (which stops accepting): every connection
   * without a request in flight — idle keep-alive, half-open, mid-headers, never handshaken — is
   * destroyed now and as soon as it becomes idle; responses in flight get `connection: close`;
   * after `timeoutMs` (the `drainTimeout` budget by default) whatever is left is destroyed.
   * Resolves once no connection is left.
   */
  drain(timeoutMs?: number): Promise<void>;
}

/**
 * The request body in progress on one connection. One record per connection, reused by each of
 * its requests that has a body: a connection reads one request body at a time, even pipelined.
 */
interface WatchedBody {
  req: IncomingMessage | undefined;
  res: ServerResponse | undefined;
  bytes: number;
  since: number;
  /** Whether it is in the listener's sweep list. */
  listed: boolean;
}

const bodyTimedOut = new WeakSet<IncomingMessage>();

/** Whether {@link applyConnectionBudgets} answered this request 408 because its body stopped. */
export function isBodyTimedOut(req: IncomingMessage): boolean {
  return bodyTimedOut.has(req);
}

/**
 * Options for `http.createServer` / `https.createServer` (or fastify's `https`/`http`) that only
 * take effect at construction: how often Node checks its header and request timeouts (every 30 s
 * by default, which would let a 10 s budget run to 40 s).
 */
export function connectionServerOptions(budgets: ConnectionBudgets): {
  readonly connectionsCheckingInterval: number;
  readonly headersTimeout: number;
  readonly requestTimeout: number;
  readonly keepAliveTimeout: number;
} {
  return {
    connectionsCheckingInterval: checkInterval(Math.min(budgets.headersTimeout, budgets.requestTimeout)),
    headersTimeout: budgets.headersTimeout,
    requestTimeout: budgets.requestTimeout,
    keepAliveTimeout: budgets.keepAliveTimeout,
  };
}

/**
 * Applies the per-stage connection budgets to a node:http or node:https server (fastify's
 * `app.server` included; call it after the app is built, since fastify sets its own timeouts),
 * before it listens:
 * - TLS handshake: a connection that has not finished its handshake `handshakeTimeout` after
 *   accept is destroyed (never ended: there is no TLS session to carry an answer), whether it sent
 *   nothing, half a ClientHello, or trickles bytes;
 * - request headers and whole request: Node's `headersTimeout` and `requestTimeout` (408);
 * - request body progress: a body that gets no byte for `bodyTimeout` while the server would take
 *   one (the request's buffer is not full) is answered 408 with `connection: close`, and the
 *   connection closes — a chunk size of 2^64−1 followed by silence included. A body the consumer
 *   is slow to read (back-pressure) is not the client's stall and is not timed out;
 * - keep-alive idle: `keepAliveTimeout`;
 * - open connections: `maxConnections` per listener and `maxConnectionsPerPeer` per peer IP
 *   address; the connection past either is destroyed at accept.
 * The cost per request is one check of two headers; body watching and the handshake timer run
 * only for requests with a body and for TLS connections, and one sweep timer per listener
 * checks progress.
 */
export function applyConnectionBudgets(
  server: HttpServer | HttpsServer,
  budgets: ConnectionBudgets,
  hooks: ConnectionBudgetHooks,
): ConnectionGuard {
  const now = hooks.now ?? (() => performance.now());
  const isTls = server instanceof TlsServer;
  server.headersTimeout = budgets.headersTimeout;
  server.requestTimeout = budgets.requestTimeout;
  server.keepAliveTimeout = budgets.keepAliveTimeout;
  server.maxConnections = budgets.maxConnections;

  /** Every accepted TCP socket still open. */
  const sockets = new Set<Socket>();
  /** The socket HTTP runs on, per accepted socket (the TLS socket on a TLS listener, once secure). */
  const httpSocket = new Map<Socket, Socket>();
  const perPeer = new Map<string, number>();
  const handshakes = new Map<Socket, NodeJS.Timeout>();
  let draining = false;
  const closed: Record<BudgetClosure, number> = {
    handshake: 0,
    body: 0,
    peer_cap: 0,
    listener_cap: 0,
    drain: 0,
  };
  // Node closes a connection past server.maxConnections itself and says so with `drop`.
  server.on('drop', () => closed.listener_cap++);

  server.on('connection', (raw: Socket) => {
    const peer = raw.remoteAddress ?? '';
    const n = (perPeer.get(peer) ?? 0) + 1;
    if (draining || n > budgets.maxConnectionsPerPeer) {
      closed[draining ? 'drain' : 'peer_cap']++;
      raw.destroy();
      return;
    }
    perPeer.set(peer, n);
    sockets.add(raw);
    if (isTls) {
      const timer = setTimeout(() => {
        closed.handshake++;
        raw.destroy();
      }, budgets.handshakeTimeout);
      timer.unref();
      handshakes.set(raw, timer);
    } else httpSocket.set(raw, raw);
    raw.once('close', () => {
      sockets.delete(raw);
      httpSocket.delete(raw);
      const timer = handshakes.get(raw);
      if (timer) {
        clearTimeout(timer);
        handshakes.delete(raw);
      }
      const left = (perPeer.get(peer) ?? 1) - 1;
      if (left > 0) perPeer.set(peer, left);
      else perPeer.delete(peer);
    });
  });
  if (isTls)
    server.on('secureConnection', (socket: TLSSocket) => {
      // node:tls wraps the accepted TCP socket; `_parent` is that socket.
      const raw = (socket as TLSSocket & { _parent?: Socket })._parent;
      if (!raw) return;
      const timer = handshakes.get(raw);
      if (timer) {
        clearTimeout(timer);
        handshakes.delete(raw);
      }
      if (sockets.has(raw)) httpSocket.set(raw, socket);
    });

  // Request bodies in progress, checked by one sweep per listener. The list holds connections,
  // not requests: a request with a body takes its connection's record, and the sweep lets go of
  // a record whose body is done. A list of requests kept every finished request (its message,
  // response and socket state) until the next sweep, up to a second: ~40,000 of them under a
  // flood of small POSTs, enough to exhaust an 80 MB heap (decision 0105). Now what is kept is
  // bounded by the connections, and the list changes once per connection and sweep at most.
  const watched = new Set<WatchedBody>();
  const bodyOf = new WeakMap<Socket, WatchedBody>();
  let sweep: NodeJS.Timeout | undefined;
  const tick = checkInterval(budgets.bodyTimeout);
  const unlist = (w: WatchedBody) => {
    watched.delete(w);
    w.listed = false;
    w.req = undefined;
    w.res = undefined;
  };
  const check = () => {
    const t = now();
    for (const w of watched) {
      const { req, res } = w;
      if (!req || !res || req.complete || req.destroyed || res.writableEnded) {
        unlist(w);
        continue;
      }
      const bytes = req.socket?.bytesRead ?? 0;
      // A full buffer means the server (or the app behind it) is not reading: not the client's stall.
      if (bytes !== w.bytes || req.readableLength >= req.readableHighWaterMark) {
        w.bytes = bytes;
        w.since = t;
        continue;
      }
      if (t - w.since < budgets.bodyTimeout) continue;
      unlist(w);
      timeOutBody(req, res);
    }
    if (watched.size === 0 && sweep) {
      clearInterval(sweep);
      sweep = undefined;
    }
  };
  const timeOutBody = (req: IncomingMessage, res: ServerResponse) => {
    bodyTimedOut.add(req);
    closed.body++;
    hooks.onBodyTimeout?.(req);
    const socket = req.socket;
    if (res.headersSent || !socket?.writable) {
      socket?.destroy();
      return;
    }
    const body = hooks.timeoutBody('request body timed out');
    res.shouldKeepAlive = false;
    res
      .writeHead(408, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        'cache-control': 'no-store',
        connection: 'close',
      })
      .end(body, () => socket.destroy());
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    if (draining) res.shouldKeepAlive = false;
    const h = req.headers;
    if (h['transfer-encoding'] === undefined && (h['content-length'] ?? '0') === '0') return;
    const socket = req.socket as Socket | null;
    let w = socket ? bodyOf.get(socket) : undefined;
    if (!w) {
      w = { req, res, bytes: 0, since: 0, listed: false };
      if (socket) bodyOf.set(socket, w);
    }
    w.req = req;
    w.res = res;
    w.bytes = socket?.bytesRead ?? 0;
    w.since = now();
    if (!w.listed) {
      watched.add(w);
      w.listed = true;
    }
    if (!sweep) {
      sweep = setInterval(check, tick);
      sweep.unref();
    }
  };
  // The server's own handler is wrapped rather than joined by a second `request` listener: with
  // two, every request's emit goes through EventEmitter's slower many-listeners path.
  const handlers = server.listeners('request') as ((req: IncomingMessage, res: ServerResponse) => void)[];
  if (handlers.length === 1) {
    const handler = handlers[0]!;
    server.removeListener('request', handler);
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      onRequest(req, res);
      handler(req, res);
    });
  } else server.on('request', onRequest);

  /** Destroys every connection with no response in flight; the rest are told to close after it. */
  const closeIdle = () => {
    for (const raw of sockets) {
      const s = httpSocket.get(raw);
      // Already closing on its own (its last response said `connection: close`, or the client
      // half-closed it): finished off, not counted as closed by the drain.
      if (s?.writableEnded) {
        raw.destroy();
        continue;
      }
      // Not yet through the TLS handshake, or no request under way: nothing to drain.
      const current = s && (s as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
      if (!current && !(s && hooks.inFlight?.(s))) {
        closed.drain++;
        raw.destroy();
      } else if (current) current.shouldKeepAlive = false;
    }
  };

  return {
    get open() {
      return sockets.size;
    },
    closed: () => ({ ...closed }),
    async drain(timeoutMs = budgets.drainTimeout) {
      draining = true;
      const deadline = now() + timeoutMs;
      closeIdle();
      while (sockets.size > 0 && now() < deadline) {
        await new Promise((r) => setTimeout(r, Math.min(25, Math.max(1, deadline - now()))));
        closeIdle();
      }
      for (const raw of sockets) {
        closed.drain++;
        raw.destroy();
      }
      if (sweep) clearInterval(sweep);
      sweep = undefined;
      for (const w of watched) unlist(w);
    },
  };
}

/** How often a budget of `ms` is checked: a fifth of it, between 10 ms and 1 s. */
function checkInterval(ms: number): number {
  return Math.max(10, Math.min(1_000, Math.floor(ms / 5)));
}
