import { parseSpiffeId } from '../core/index.ts';

/**
 * The `service.name` a sidecar's spans carry unless `OTEL_SERVICE_NAME` says otherwise: its
 * workload's name, taken from the last segment of the service's SPIFFE ID
 * (`spiffe://example.org/ns/shop/sa/orders` → `orders-sidecar`), so that every sidecar is its own
 * service in a tracing backend and stands beside the app it fronts. `service` is a validated
 * config value: an ID without a path is a TypeError.
 */
export function sidecarServiceName(service: string): string {
  let path: string;
  try {
    path = parseSpiffeId(service).path;
  } catch {
    path = '';
  }
  if (path === '')
    throw new TypeError(`"service" must be a SPIFFE ID with a path, got ${JSON.stringify(service)}`);
  return `${path.slice(path.lastIndexOf('/') + 1)}-sidecar`;
}
