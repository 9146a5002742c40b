import type { Registry } from '../../core/index.ts';

/**
 * The SPIFFE ID a policy tool means by `caller`: a registry workload's name (`web`) or its SPIFFE
 * ID. Undefined when the registry holds neither: a workload the CA never certified cannot reach a
 * sidecar, so the tools refuse to reason about it rather than guess.
 */
export function resolveCaller(registry: Registry, caller: string): string | undefined {
  if (caller.startsWith('spiffe://')) return registry.byId(caller)?.spiffeId.uri;
  return registry.byName(caller)?.spiffeId.uri;
}
