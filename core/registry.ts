import { z } from 'zod';
import { ConfigError } from './errors.ts';
import {
  durationSchema,
  parseConfigText,
  spiffeIdSchema,
  strictObject,
  trustDomainSchema,
} from './config.ts';
import type { SpiffeId } from './spiffe-id.ts';

/** Control-plane roles a workload can hold. */
export const ROLES = ['admin', 'audit-reader'] as const;
export type Role = (typeof ROLES)[number];

/** No token lives longer than this, whatever a registry entry says (docs/architecture.md § Tokens). */
export const TOKEN_TTL_CAP_MS = 3_600_000;
/** Token lifetime for entries that do not set `tokenTtl`. */
export const DEFAULT_TOKEN_TTL_MS = 300_000;
/** Lifetime of a certificate the STS issues online (EST) for entries that do not set `svidTtl`. */
export const DEFAULT_SVID_TTL_MS = 3_600_000;
/** No online-issued certificate lives longer than this, whatever a registry entry says. */
export const SVID_TTL_CAP_MS = 86_400_000;

/** One registered workload, as the CA, the STS and the sidecar see it. */
export interface Workload {
  readonly name: string;
  readonly spiffeId: SpiffeId;
  readonly dnsNames: readonly string[];
  /** IP address SANs (for workloads reached by address, such as a loopback STS). */
  readonly ipAddresses: readonly string[];
  /** SPIFFE IDs (URIs) this workload may request tokens for. */
  readonly audiences: readonly string[];
  readonly tokenTtlMs: number;
  /** Lifetime of the certificates the STS issues it online (EST enrolment and renewal). */
  readonly svidTtlMs: number;
  readonly roles: readonly Role[];
  /** Where the entry was declared, for error messages: `file` and `workloads[i]`. */
  readonly origin: { readonly file: string; readonly keyPath: string };
}

/** The workload registry: every workload of one trust domain. */
export interface Registry {
  readonly trustDomain: string;
  readonly workloads: readonly Workload[];
  /** Looks a workload up by its SPIFFE ID URI. */
  byId(uri: string): Workload | undefined;
  /** Looks a workload up by its name. */
  byName(name: string): Workload | undefined;
}

const NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const DNS_NAME = /^(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

const workloadSchema = strictObject({
  name: z.string().regex(NAME, 'must be lowercase letters, digits and dashes (used as a file name)'),
  spiffeId: spiffeIdSchema,
  dnsNames: z.array(z.string().max(253).regex(DNS_NAME, 'must be a lowercase DNS name')).default([]),
  ipAddresses: z
    .array(
      z
        .union([z.ipv4(), z.ipv6()], { error: 'must be an IPv4 or IPv6 address' })
        // The certificate library mis-encodes dotted IPv6 forms (::ffff:1.2.3.4 became ::ffff:1),
        // so the leaf would name another address and be re-issued on every run.
        .refine((ip) => !(ip.includes(':') && ip.includes('.')), {
          error:
            'an IPv6 address with a dotted IPv4 part is not supported: write the IPv4 address, or the IPv6 one in hex',
        }),
    )
    .default([]),
  audiences: z.array(spiffeIdSchema).default([]),
  tokenTtl: durationSchema.optional(),
  svidTtl: durationSchema.optional(),
  roles: z.array(z.enum(ROLES)).default([]),
});

const registryFileSchema = strictObject({
  trustDomain: trustDomainSchema,
  workloads: z.array(workloadSchema).min(1, 'must list at least one workload'),
});

/** One registry file's text and the name to report it by. */
export interface RegistrySource {
  readonly file: string;
  readonly text: string;
}

/**
 * Builds the registry from one or more YAML files of docs/architecture.md § Identities. Refuses, with a
 * {@link ConfigError} naming the file and key: schema errors, files that disagree on the trust
 * domain, IDs outside it, duplicate names or IDs, audiences that name no registered workload,
 * and token TTLs above the global cap.
 */
export function parseRegistry(sources: readonly RegistrySource[]): Registry {
  if (sources.length === 0) throw new TypeError('"sources" must hold at least one file');
  let trustDomain: string | undefined;
  let trustDomainFile = '';
  const workloads: Workload[] = [];
  const byId = new Map<string, Workload>();
  const byName = new Map<string, Workload>();
  const invalid = (file: string, keyPath: string, problem: string) =>
    new ConfigError('ERR_REGISTRY_INVALID', file, keyPath, problem);

  for (const { file, text } of sources) {
    const parsed = parseConfigText(text, file, registryFileSchema);
    if (trustDomain === undefined) {
      trustDomain = parsed.trustDomain;
      trustDomainFile = file;
    } else if (parsed.trustDomain !== trustDomain) {
      throw invalid(
        file,
        'trustDomain',
        `"${parsed.trustDomain}" differs from "${trustDomain}" in ${trustDomainFile}`,
      );
    }
    parsed.workloads.forEach((entry, i) => {
      const keyPath = `workloads[${i}]`;
      if (entry.spiffeId.trustDomain !== trustDomain) {
        throw invalid(
          file,
          `${keyPath}.spiffeId`,
          `"${entry.spiffeId.uri}" is outside the trust domain "${trustDomain}"`,
        );
      }
      if (entry.spiffeId.path === '') {
        throw invalid(
          file,
          `${keyPath}.spiffeId`,
          'a workload ID needs a path (the bare trust domain names no workload)',
        );
      }
      const sameName = byName.get(entry.name);
      if (sameName) {
        throw invalid(file, `${keyPath}.name`, `duplicate name "${entry.name}" (also at ${where(sameName)})`);
      }
      const sameId = byId.get(entry.spiffeId.uri);
      if (sameId) {
        throw invalid(
          file,
          `${keyPath}.spiffeId`,
          `duplicate SPIFFE ID "${entry.spiffeId.uri}" (also at ${where(sameId)})`,
        );
      }
      const tokenTtlMs = entry.tokenTtl ?? DEFAULT_TOKEN_TTL_MS;
      if (tokenTtlMs > TOKEN_TTL_CAP_MS) {
        throw invalid(file, `${keyPath}.tokenTtl`, 'exceeds the global cap of 1h');
      }
      const svidTtlMs = entry.svidTtl ?? DEFAULT_SVID_TTL_MS;
      if (svidTtlMs > SVID_TTL_CAP_MS) {
        throw invalid(file, `${keyPath}.svidTtl`, 'exceeds the cap of 24h');
      }
      if (svidTtlMs < 60_000) {
        throw invalid(file, `${keyPath}.svidTtl`, 'must be at least 1m');
      }
      const workload: Workload = Object.freeze({
        name: entry.name,
        spiffeId: entry.spiffeId,
        dnsNames: Object.freeze([...new Set(entry.dnsNames)]),
        ipAddresses: Object.freeze([...new Set(entry.ipAddresses)]),
        audiences: Object.freeze([...new Set(entry.audiences.map((a) => a.uri))]),
        tokenTtlMs,
        svidTtlMs,
        roles: Object.freeze([...new Set(entry.roles)]),
        origin: Object.freeze({ file, keyPath }),
      });
      workloads.push(workload);
      byName.set(workload.name, workload);
      byId.set(workload.spiffeId.uri, workload);
    });
  }

  for (const w of workloads) {
    w.audiences.forEach((aud) => {
      if (!byId.has(aud)) {
        const i = w.audiences.indexOf(aud);
        throw invalid(
          w.origin.file,
          `${w.origin.keyPath}.audiences[${i}]`,
          `"${aud}" names no registered workload`,
        );
      }
    });
  }

  return Object.freeze({
    trustDomain: trustDomain!,
    workloads: Object.freeze(workloads),
    byId: (uri: string) => byId.get(uri),
    byName: (name: string) => byName.get(name),
  });
}

function where(w: Workload): string {
  return `${w.origin.file} ${w.origin.keyPath}`;
}
