import { z } from 'zod';
import { timerDurationSchema, strictObject } from './config.ts';

/** What a connection may cost a listener at each stage, before and while it proves anything. */
export interface ConnectionBudgets {
  /** TCP accept → TLS handshake done (TLS listeners); past it the socket is destroyed. */
  readonly handshakeTimeout: number;
  /** Connection (or the end of the previous answer) → complete request headers; past it 408. */
  readonly headersTimeout: number;
  /** Longest time a request body may go without a byte while the server would take one; past it 408. */
  readonly bodyTimeout: number;
  /** Whole request received (headers and body); past it 408. */
  readonly requestTimeout: number;
  /** Idle time between requests on a keep-alive connection; past it the connection is closed. */
  readonly keepAliveTimeout: number;
  /** Open connections per listener; more are closed at once. */
  readonly maxConnections: number;
  /** Open connections per peer IP address per listener; more are closed at once. */
  readonly maxConnectionsPerPeer: number;
  /** On shutdown: how long in-flight requests may finish before every remaining socket is destroyed. */
  readonly drainTimeout: number;
}

/** The defaults: an edge proxy's (nginx's and Envoy's hardening guides), in ms. */
export const DEFAULT_CONNECTION_BUDGETS: ConnectionBudgets = Object.freeze({
  handshakeTimeout: 10_000,
  headersTimeout: 10_000,
  bodyTimeout: 10_000,
  requestTimeout: 300_000,
  keepAliveTimeout: 60_000,
  maxConnections: 10_000,
  maxConnectionsPerPeer: 512,
  drainTimeout: 10_000,
});

const count = z.number().int().min(1).max(1_000_000);

/**
 * The `connections:` section shared by every part's config (STS, collector, sidecar): one budget
 * per connection stage, applied to each of the part's listeners by `applyConnectionBudgets`.
 * Every key is optional; docs/operations.md lists the defaults and what each bounds.
 */
export const connectionBudgetsSchema = strictObject({
  handshakeTimeout: timerDurationSchema.default(DEFAULT_CONNECTION_BUDGETS.handshakeTimeout),
  headersTimeout: timerDurationSchema.default(DEFAULT_CONNECTION_BUDGETS.headersTimeout),
  bodyTimeout: timerDurationSchema.default(DEFAULT_CONNECTION_BUDGETS.bodyTimeout),
  requestTimeout: timerDurationSchema.default(DEFAULT_CONNECTION_BUDGETS.requestTimeout),
  keepAliveTimeout: timerDurationSchema.default(DEFAULT_CONNECTION_BUDGETS.keepAliveTimeout),
  maxConnections: count.default(DEFAULT_CONNECTION_BUDGETS.maxConnections),
  maxConnectionsPerPeer: count.default(DEFAULT_CONNECTION_BUDGETS.maxConnectionsPerPeer),
  drainTimeout: timerDurationSchema.default(DEFAULT_CONNECTION_BUDGETS.drainTimeout),
})
  .superRefine((b, ctx) => {
    if (b.headersTimeout > b.requestTimeout)
      ctx.addIssue({
        code: 'custom',
        path: ['headersTimeout'],
        message: 'must not be longer than requestTimeout (the headers are part of the request)',
      });
    if (b.maxConnectionsPerPeer > b.maxConnections)
      ctx.addIssue({
        code: 'custom',
        path: ['maxConnectionsPerPeer'],
        message: 'must not be larger than maxConnections',
      });
  })
  .default({ ...DEFAULT_CONNECTION_BUDGETS });
