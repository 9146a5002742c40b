import type { IncomingHttpHeaders } from 'node:http';
import { MAX_TIMER_MS } from '../../core/index.ts';

/** gRPC status codes the sidecar itself answers with (grpc/doc/statuscodes.md). */
export const GRPC = Object.freeze({
  OK: 0,
  CANCELLED: 1,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
});

/** Whether a request comes from a gRPC (or gRPC-Web) client: `content-type: application/grpc*`. */
export function isGrpcRequest(headers: IncomingHttpHeaders): boolean {
  const ct = headers['content-type'];
  return typeof ct === 'string' && ct.length >= 16 && ct.slice(0, 16).toLowerCase() === 'application/grpc';
}

/**
 * The gRPC status of a refusal with this sidecar error code: token and certificate failures are
 * UNAUTHENTICATED (16), a policy deny PERMISSION_DENIED (7); the others follow their HTTP status.
 */
export function grpcStatusFor(code: string, httpStatus: number): number {
  if (code === 'ERR_SIDECAR_PEER_UNVERIFIED' || code.startsWith('ERR_SIDECAR_TOKEN_'))
    return code === 'ERR_SIDECAR_TOKEN_UNAVAILABLE' ? GRPC.UNAVAILABLE : GRPC.UNAUTHENTICATED;
  if (code === 'ERR_SIDECAR_POLICY_DENIED') return GRPC.PERMISSION_DENIED;
  switch (httpStatus) {
    case 400:
      return GRPC.INVALID_ARGUMENT;
    case 401:
      return GRPC.UNAUTHENTICATED;
    case 403:
      return GRPC.PERMISSION_DENIED;
    case 404:
      return GRPC.UNIMPLEMENTED;
    case 408:
    case 504:
      return GRPC.DEADLINE_EXCEEDED;
    case 429:
      return GRPC.RESOURCE_EXHAUSTED;
    case 502:
    case 503:
      return GRPC.UNAVAILABLE;
    default:
      return GRPC.INTERNAL;
  }
}

/** `grpc-message` encoding (gRPC over HTTP/2 spec): printable ASCII except `%` as is, the rest %-encoded UTF-8. */
export function encodeGrpcMessage(message: string): string {
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };

/**
 * The deadline a `grpc-timeout` header asks for, in ms (`TimeoutValue TimeoutUnit`: at most 8
 * digits and one of H M S m u n), at most ~24.8 days (the longest timer; 8 digits of hours allow
 * 11 000 years). `undefined` when absent; `null` when malformed (the caller refuses it rather than
 * forwarding a deadline it cannot honour).
 */
export function parseGrpcTimeout(value: string | string[] | undefined): number | undefined | null {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') return null;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!m) return null;
  return Math.min(Number(m[1]) * UNIT_MS[m[2]!]!, MAX_TIMER_MS);
}
