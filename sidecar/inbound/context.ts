import type { Duplex } from 'node:stream';
import type { PeerIdentity } from '../../ca/index.ts';
import type { Span } from '../../core/index.ts';
import type { SidecarError } from '../errors.ts';
import type { Decision } from '../policy/compile.ts';
import type { InboundRequest, InboundResponse } from '../h2/exchange.ts';
import type { WebSocketOffer } from '../websocket/handshake.ts';
import type { VerifiedToken } from '../token/verify.ts';
import type { ScannedHeaders } from './headers.ts';
import type { CheckedTarget } from './target.ts';

/** What the inbound layers learn about one request, in layer order. */
export interface InboundContext {
  /** node:http's request (HTTP/1.1), or an HTTP/2 stream's (h2/exchange.ts). */
  readonly req: InboundRequest;
  readonly res: InboundResponse;
  /** Monotonic start time (ms). */
  readonly startedAt: number;
  readonly traceId: string;
  /** The span id the app's `traceparent` names as parent when tracing is off. */
  readonly spanId: string;
  /** The `sidecar.inbound` span, when tracing is on. */
  readonly span?: Span;
  peer?: PeerIdentity;
  token?: string;
  verified?: VerifiedToken;
  target?: CheckedTarget;
  headers?: ScannedHeaders;
  decision?: Decision;
  /** False when a deny was let through because the policy is in `mode: audit`. */
  enforced: boolean;
  /** Set when a layer refused the request, or the upstream failed. */
  error?: SidecarError;
  /**
   * True once the `authz.decision` event was made durable before forwarding (`failMode: closed`):
   * the final status then goes in a second, `authz.response`, event.
   */
  decisionRecorded?: boolean;
  /** Gives back the caller's fair-share slot; the handler calls it once the request is recorded. */
  releaseSlot?: () => void;
  /** Seconds a refused caller is told to wait (`Retry-After`), set by the layer that refused it. */
  retryAfterSeconds?: number;
  /** Extra audit attributes (e.g. the ca/ code behind a refused peer). */
  attributes?: Record<string, string>;
  /** Set for a WebSocket opening handshake (inbound/upgrade.ts): relayed, not forwarded, once allowed. */
  upgrade?: PendingUpgrade;
}

/** A WebSocket handshake waiting for the layers: the client's socket, bytes read past its head, the offer. */
export interface PendingUpgrade {
  readonly socket: Duplex;
  readonly head: Buffer;
  readonly offer: WebSocketOffer;
}

/** One single-purpose inbound layer (STYLE.md #7): it enriches the context or throws a SidecarError. */
export type InboundLayer = (ctx: InboundContext) => void | Promise<void>;
