import { Counter, Gauge, Registry } from 'prom-client';
import { collectProcessMetrics } from '../core/index.ts';

/** The STS's Prometheus metrics. */
export interface StsMetrics {
  readonly registry: Registry;
  readonly tokensIssued: Counter<'grant'>;
  /** Every refused request, any route, by reason code. */
  readonly requestsRefused: Counter<'reason'>;
  /** Refused token requests only (`POST /oauth2/token`), by reason code. */
  readonly tokensRefused: Counter<'reason'>;
  readonly rotations: Counter;
  readonly keyAge: Gauge<'state'>;
}

/** Creates the STS metrics on `registry` (a fresh one by default, so tests and replicas don't collide). */
export function createStsMetrics(registry = new Registry(), withDefaults = false): StsMetrics {
  if (withDefaults) collectProcessMetrics(registry, 'portcullis_sts_');
  return {
    registry,
    tokensIssued: new Counter({
      name: 'portcullis_sts_tokens_issued_total',
      help: 'Access tokens issued, by grant type',
      labelNames: ['grant'],
      registers: [registry],
    }),
    requestsRefused: new Counter({
      name: 'portcullis_sts_requests_refused_total',
      help: 'Requests refused, by reason code',
      labelNames: ['reason'],
      registers: [registry],
    }),
    tokensRefused: new Counter({
      name: 'portcullis_sts_tokens_refused_total',
      help: 'Token requests refused, by reason code',
      labelNames: ['reason'],
      registers: [registry],
    }),
    rotations: new Counter({
      name: 'portcullis_sts_key_rotations_total',
      help: 'Signing key rotations performed by this replica',
      registers: [registry],
    }),
    keyAge: new Gauge({
      name: 'portcullis_sts_key_age_seconds',
      help: 'Age of the oldest key in each state since it entered that state',
      labelNames: ['state'],
      registers: [registry],
    }),
  };
}
