import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import { FrameCursor, closeFrame } from './frames.ts';

/** Who ended a relayed WebSocket: one of its two ends, or the sidecar (limit or shutdown). */
export type ClosedBy = 'client' | 'upstream' | 'idle' | 'lifetime' | 'shutdown';

/** What the audit records when a relayed WebSocket ends. */
export interface TunnelFacts {
  readonly closedBy: ClosedBy;
  /** Bytes relayed from the client to the upstream (frames, headers included). */
  readonly bytesFromClient: number;
  /** Bytes relayed from the upstream to the client. */
  readonly bytesToClient: number;
  /** From the 101 to the last socket closed, ms. */
  readonly durationMs: number;
  /** Status code of the first close frame relayed, from either side, when one carried a code. */
  readonly closeCode?: number;
}

/** The limits of every relayed WebSocket (the config's `websocket:` section, ms). */
export interface TunnelLimits {
  /** No byte either way for this long: the sidecar closes the connection (`idle`). */
  readonly idleTimeout: number;
  /** Open for this long: the sidecar closes it (`lifetime`), whatever the traffic. */
  readonly maxLifetime: number;
}

/** The relayed WebSockets of one sidecar. */
export interface Tunnels {
  /**
   * Relays bytes both ways between `client` and `upstream`, whose handshake is done (any bytes
   * that came with it already written). `done` is called once, when both sockets are closed.
   */
  open(client: Duplex, upstream: Duplex, done: (facts: TunnelFacts) => void): void;
  /** Open tunnels. */
  readonly size: number;
  /** Tunnels ended since start, by who closed them (running totals, read at scrape time). */
  closed(): Readonly<Record<ClosedBy, number>>;
  /**
   * Closes every tunnel (`shutdown`) and refuses new ones: a 1001 close frame each way where the
   * relay is between frames, then both sockets are ended, and destroyed after `graceMs` if the
   * peers have not closed. Resolves once none is left.
   */
  shutdown(graceMs?: number): Promise<void>;
}

/** How long a tunnel the sidecar ends may take to finish its closing handshake before its sockets are destroyed. */
export const CLOSE_GRACE_MS = 1_000;

const CLOSE_TEXT: Record<ClosedBy, string> = {
  client: 'the client went away',
  upstream: 'the service went away',
  idle: 'idle timeout',
  lifetime: 'connection lifetime reached',
  shutdown: 'sidecar shutting down',
};

/**
 * The byte relay of upgraded connections. Back-pressure both ways (a side that cannot take more
 * pauses the other), half-close passed on, and each end's frames followed (frames.ts) so that
 * the sidecar knows who began the closing handshake and can add a close frame of its own without
 * cutting a frame. When one socket closes without a closing handshake (killed, reset), the other
 * side gets a 1001 close frame and is ended at once; the idle and lifetime limits are checked by
 * one sweep timer that runs while tunnels are open.
 */
export function createTunnels(limits: TunnelLimits, now: () => number = () => performance.now()): Tunnels {
  const open = new Set<Tunnel>();
  let sweep: NodeJS.Timeout | undefined;
  let shuttingDown = false;
  const ended: Record<ClosedBy, number> = { client: 0, upstream: 0, idle: 0, lifetime: 0, shutdown: 0 };
  const tick = Math.max(
    10,
    Math.min(1_000, Math.floor(Math.min(limits.idleTimeout, limits.maxLifetime) / 5)),
  );
  const check = () => {
    const t = now();
    for (const tunnel of open) {
      if (t - tunnel.startedAt >= limits.maxLifetime) tunnel.end('lifetime');
      else if (t - tunnel.lastActive >= limits.idleTimeout) tunnel.end('idle');
    }
  };
  return {
    open(client, upstream, done) {
      const tunnel = new Tunnel(client, upstream, now, (facts) => {
        open.delete(tunnel);
        ended[facts.closedBy]++;
        if (open.size === 0 && sweep) {
          clearInterval(sweep);
          sweep = undefined;
        }
        done(facts);
      });
      open.add(tunnel);
      if (!sweep) {
        sweep = setInterval(check, tick);
        sweep.unref();
      }
      tunnel.start();
      if (shuttingDown) tunnel.end('shutdown');
    },
    get size() {
      return open.size;
    },
    closed: () => ({ ...ended }),
    async shutdown(graceMs = CLOSE_GRACE_MS) {
      shuttingDown = true;
      const left = [...open].map((t) => t.closed);
      for (const t of open) t.end('shutdown', graceMs);
      await Promise.all(left);
    },
  };
}

class Tunnel {
  readonly startedAt: number;
  lastActive: number;
  /** Follows client → upstream frames, and upstream → client frames. */
  private readonly fromClient = new FrameCursor();
  private readonly fromUpstream = new FrameCursor();
  private bytesFromClient = 0;
  private bytesToClient = 0;
  private closedBy: ClosedBy | undefined;
  private ending = false;
  private sockets = 2;
  private grace: NodeJS.Timeout | undefined;
  private settle!: () => void;
  /** Resolves when both sockets are closed and `done` was called. */
  readonly closed = new Promise<void>((r) => (this.settle = r));
  private readonly client: Duplex;
  private readonly upstream: Duplex;
  private readonly now: () => number;
  private readonly done: (facts: TunnelFacts) => void;

  constructor(client: Duplex, upstream: Duplex, now: () => number, done: (facts: TunnelFacts) => void) {
    this.client = client;
    this.upstream = upstream;
    this.now = now;
    this.done = done;
    this.startedAt = now();
    this.lastActive = this.startedAt;
  }

  start(): void {
    this.relay(this.client, this.upstream, this.fromClient, 'client');
    this.relay(this.upstream, this.client, this.fromUpstream, 'upstream');
  }

  private relay(src: Duplex, dst: Duplex, cursor: FrameCursor, side: 'client' | 'upstream'): void {
    src.on('data', (chunk: Buffer) => {
      // Once the sidecar ended the tunnel, the peers' closing frames are read and dropped.
      if (this.ending) return;
      this.lastActive = this.now();
      if (side === 'client') this.bytesFromClient += chunk.length;
      else this.bytesToClient += chunk.length;
      cursor.feed(chunk);
      // The side that sent the first close frame began the closing handshake.
      if (cursor.sawClose) this.closedBy ??= side;
      if (!dst.write(chunk)) {
        src.pause();
        dst.once('drain', () => src.resume());
      }
    });
    src.on('end', () => {
      // Without a close frame first, that side is gone (RFC 6455 §7.1.5: closed abnormally): the
      // other side is told so. After one, the closing handshake's half-close is passed on.
      if (!cursor.sawClose) return this.end(side);
      if (!dst.writableEnded) dst.end();
    });
    src.on('error', () => {});
    const gone = () => {
      this.closedBy ??= side;
      this.sockets--;
      if (this.sockets === 0) return this.finish();
      // The other side is told (1001, unless a closing handshake already ran) and let go.
      this.end(side);
    };
    // A socket that closed before the tunnel opened will not say so again.
    if (src.destroyed && src.closed) return void process.nextTick(gone);
    src.on('close', gone);
    src.resume();
  }

  /**
   * Ends the tunnel from the sidecar's side: a 1001 close frame to each end that did not send or
   * get one yet (only between frames: never inside one), both sockets ended, destroyed after
   * `graceMs` if still open.
   */
  end(why: ClosedBy, graceMs = CLOSE_GRACE_MS): void {
    this.closedBy ??= why;
    if (this.ending) return;
    this.ending = true;
    const text = CLOSE_TEXT[why];
    // Towards the client the sidecar is the server (unmasked); towards the upstream, the client (masked).
    this.goAway(this.client, this.fromUpstream, this.fromClient, text, false);
    this.goAway(this.upstream, this.fromClient, this.fromUpstream, text, true);
    this.grace = setTimeout(() => {
      this.client.destroy();
      this.upstream.destroy();
    }, graceMs);
    this.grace.unref();
  }

  private goAway(to: Duplex, towards: FrameCursor, from: FrameCursor, text: string, masked: boolean): void {
    if (to.destroyed) return;
    // No close frame after one went that way, nor when that side already said it is closing.
    if (towards.atBoundary && !towards.sawClose && !from.sawClose && !to.writableEnded)
      to.write(closeFrame(1001, text, masked));
    if (!to.writableEnded) to.end();
    to.resume();
  }

  private finish(): void {
    if (this.grace) clearTimeout(this.grace);
    const code = this.fromClient.closeCode ?? this.fromUpstream.closeCode;
    this.done({
      closedBy: this.closedBy ?? 'client',
      bytesFromClient: this.bytesFromClient,
      bytesToClient: this.bytesToClient,
      durationMs: Math.round((this.now() - this.startedAt) * 1000) / 1000,
      ...(code !== undefined ? { closeCode: code } : {}),
    });
    this.settle();
  }
}
