// The generated day of traffic that the policy replay bench and the query bench write into a
// store, the proposed policy they replay it against, and the figures replay must give for it.
import type { AuditEvent } from '../core/index.ts';

export const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';
export const WEB = 'spiffe://example.org/ns/shop/sa/web';
export const ADMIN = 'spiffe://example.org/ns/ops/sa/admin-console';
export const STS = 'spiffe://example.org/ns/portcullis/sa/sts';

/** The proposed change replayed: GET narrows to the list, the storefront may place orders. */
export const PROPOSED = `service: ${ORDERS}
mode: enforce
roles:
  storefront: [${WEB}]
rules:
  - id: storefront-lists-orders
    role: storefront
    methods: [GET]
    paths: [/orders]
  - id: storefront-places-orders
    role: storefront
    methods: [POST]
    paths: [/orders]
  - id: nobody-touches-admin
    effect: deny
    subjects: ['*']
    paths: [/admin, /admin/*]
`;

/**
 * Event `i` of a day of `events` events of traffic: 80 % decisions of the orders sidecar (reads of
 * 5,000 orders, list reads, posts, admin probes, other callers), 5 % refused before the policy,
 * 15 % other services and event types that replay must pass over; one event in 1,000 (a
 * certificate issuance) carries the reason `rare-reason`, for a sparse filter.
 */
export function trafficEvent(i: number, events: number): AuditEvent {
  const time = new Date(Date.UTC(2026, 11, 6) + Math.floor((i * 86_400_000) / events)).toISOString();
  const base = {
    type: 'authz.decision',
    time,
    source: ORDERS,
    target: ORDERS,
    subject: WEB,
    status: 200,
    latencyMs: 0.8,
    policyHash: 'sha256:e94dd85eb33ac50f0818f39bb24e7987cec4f98e5067e98ed9d99527150f1a49',
    traceId: (i.toString(16) + '0'.repeat(32)).slice(0, 32),
  } as const;
  const k = i % 20;
  const allowed = { decision: 'allow', reason: 'allowed', rule: 'storefront-reads-orders' } as const;
  const denied = { decision: 'deny', reason: 'ERR_SIDECAR_POLICY_DENIED', status: 403 } as const;
  if (k < 10) return { ...base, ...allowed, action: `GET /orders/${i % 5000}?v=${i % 7}` };
  if (k < 13) return { ...base, ...allowed, action: 'GET /orders' };
  if (k === 13) return { ...base, ...denied, action: 'POST /orders', rule: 'default-deny' };
  if (k === 14) return { ...base, ...denied, action: `GET /admin/${i % 50}`, rule: 'nobody-touches-admin' };
  if (k === 15) return { ...base, ...denied, subject: ADMIN, action: 'GET /orders', rule: 'default-deny' };
  if (k === 16)
    return {
      ...base,
      action: 'GET /orders',
      decision: 'deny',
      reason: 'ERR_SIDECAR_TOKEN_EXPIRED',
      status: 401,
    };
  if (k === 17)
    return {
      ...base,
      source: WEB,
      target: WEB,
      subject: ADMIN,
      action: 'GET /healthz',
      decision: 'allow',
      reason: 'allowed',
      rule: 'operators-read-health',
    };
  if (k === 18)
    return {
      type: 'token.issued',
      time,
      source: STS,
      subject: WEB,
      target: ORDERS,
      decision: 'allow',
      reason: 'issued',
    };
  return {
    type: 'cert.issued',
    time,
    source: STS,
    subject: WEB,
    attributes: { serial: i.toString(16) },
    ...(i % 1000 === 999 ? { reason: 'rare-reason' } : {}),
  };
}

/** What replay must report for the log of {@link trafficEvent} (a fast wrong answer fails a bench). */
export function expectedReplay(events: number) {
  let considered = 0;
  let replayed = 0;
  let allowedToDenied = 0;
  let deniedToAllowed = 0;
  for (let i = 0; i < events; i++) {
    const k = i % 20;
    if (k <= 16) considered++;
    if (k <= 15) replayed++;
    if (k < 10) allowedToDenied++;
    if (k === 13) deniedToAllowed++;
  }
  return { considered, replayed, allowedToDenied, deniedToAllowed };
}
