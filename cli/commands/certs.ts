import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  CA_FILES,
  KEY_ALGORITHMS,
  assertRegistryMatchesCa,
  certIssuedEvent,
  REVOCATION_REASONS,
  initCaDirectory,
  issueWorkloadCertificates,
  loadCaDirectory,
  revokeCertificate,
  writeFileAtomic,
} from '../../ca/index.ts';
import type { RevocationReason } from '../../ca/index.ts';
import { formatDuration, loadRegistry } from '../../core/index.ts';
import type { CliCommand } from '../lib/command.ts';
import { UsageError, parseFlags, required } from '../lib/command.ts';
import { durationFlag, keyAlgorithmFlag } from './ca.ts';
import { ADMIN_OPTIONS, withAdminClientFor } from '../lib/admin-client.ts';
import { findContext } from '../lib/context.ts';
import type { Context } from '../lib/context.ts';
import { sendEvents } from '../lib/send-events.ts';

/** `certs revoke` through the admin API (`--sts`, or the context's STS). */
function revokeOnline(flags: Record<string, string | boolean | undefined>, ctx: Context | undefined) {
  return withAdminClientFor(flags, ctx, 'certs revoke', async (client) => {
    const serial = required(flags.serial as string | undefined, 'serial', 'certs revoke');
    const res = (await client.revoke({ serial })) as { revoked: { serial: string; expiresAt: string } };
    console.log(
      flags.json
        ? JSON.stringify(res)
        : `revoked serial ${res.revoked.serial} until ${res.revoked.expiresAt}`,
    );
    return 0;
  });
}

/** Group summary shown by `portcullis --help`. */
export const summary = 'issue, renew and revoke workload certificates';

/** Leaf lifetime and renewal horizon of `certs issue` (and of `portcullis up`). */
export const DEFAULT_VALIDITY_MS = 24 * 3_600_000;
export const DEFAULT_RENEW_WITHIN_MS = 8 * 3_600_000;

const ISSUE_USAGE = `usage: portcullis certs issue --identities DIR --ca DIR --out DIR [flags]

Issues a certificate for every workload of the registry: what is missing is issued, what expires
within the threshold or no longer matches its registry entry is renewed, the rest is left as is.
Writes OUT/root.pem, OUT/intermediate.pem, OUT/crl.pem, OUT/<name>.pem (leaf + intermediate),
OUT/<name>-key.pem (0600) and, with --p12, OUT/<name>.p12 (0600).

flags:
  --identities PATH          registry directory or file (required)
  --ca DIR                   CA directory from 'portcullis ca init' (required)
  --out DIR                  output directory (required; created if missing)
  --init-ca                  create the CA in --ca first if there is none (trust domain from the registry)
  --validity DURATION        leaf lifetime (default ${formatDuration(DEFAULT_VALIDITY_MS)})
  --renew-within DURATION    renew leaves expiring within this (default ${formatDuration(DEFAULT_RENEW_WITHIN_MS)})
  --key-algorithm ALG        ${KEY_ALGORITHMS.join(' | ')} (default ecdsa-p256)
  --p12                      also export PKCS#12 bundles
  --passphrase-file FILE     PKCS#12 passphrase (first line); created with a random passphrase (0600) if missing

Every certificate issued or renewed is a cert.issued audit event, appended to --audit-file
(default OUT/issued.jsonl; 'portcullis audit import' sends it to a collector later) and, with
--collector, sent to the collector at once:
  --audit-file FILE          where the events are appended (JSON lines)
  --collector URL            audit collector, e.g. https://127.0.0.1:8444
  --collector-id ID          SPIFFE ID the collector must present
  --audit-cert, --audit-key  certificate and key to present to the collector (a registered workload)`;

const REVOKE_USAGE = `usage: portcullis certs revoke --serial SERIAL [--ca DIR] [--out DIR] [--reason REASON]
       portcullis certs revoke --serial SERIAL [--sts URL] [--cert FILE] [--key FILE] [--cacert FILE] [--context DIR]

Online (--sts, or a context and neither --ca nor --out): asks the STS admin API, which stores the
revocation durably, refuses the certificate at once and serves it to sidecars (and other replicas)
within their poll interval. After \`portcullis up\`, \`certs revoke --serial SERIAL\` does this with
the context's STS and admin identity. Offline (--ca or --out, or no context): adds SERIAL to the
CRL signed by the intermediate (OUT/crl.pem), which the STS reads into its deny-list.

flags:
  --serial SERIAL   certificate serial in hex (colons and upper case accepted) (required)
  --ca DIR          CA directory (offline; default certs/ca)
  --out DIR         directory holding crl.pem (offline; default certs)
  --reason REASON   ${REVOCATION_REASONS.join(' | ')} (offline)
  --context DIR     the deployment's context (default: $PORTCULLIS_CONTEXT, else ./.portcullis)
  --sts URL         revoke online through this STS (default: the context's)
  --cert, --key     admin certificate and key (default: the context's admin, else certs/admin-console{,-key}.pem)
  --cacert FILE     trust bundle for the STS (default: the context's, else certs/root.pem)
  --json            print the raw JSON answer (online)`;

/** `portcullis certs issue` and `portcullis certs revoke`. */
export const commands: readonly CliCommand[] = [
  {
    name: 'certs issue',
    summary: 'issue or renew every workload certificate (idempotent)',
    usage: ISSUE_USAGE,
    async run(argv) {
      const cmd = 'certs issue';
      const flags = parseFlags(
        argv,
        {
          identities: { type: 'string' },
          ca: { type: 'string' },
          out: { type: 'string' },
          'init-ca': { type: 'boolean' },
          validity: { type: 'string' },
          'renew-within': { type: 'string' },
          'key-algorithm': { type: 'string' },
          p12: { type: 'boolean' },
          'passphrase-file': { type: 'string' },
          'audit-file': { type: 'string' },
          collector: { type: 'string' },
          'collector-id': { type: 'string' },
          'audit-cert': { type: 'string' },
          'audit-key': { type: 'string' },
        },
        cmd,
      );
      if (flags.collector !== undefined) {
        for (const f of ['collector-id', 'audit-cert', 'audit-key'] as const) required(flags[f], f, cmd);
      }
      const identities = required(flags.identities, 'identities', cmd);
      const caDir = required(flags.ca, 'ca', cmd);
      const outDir = required(flags.out, 'out', cmd);
      const validityMs = durationFlag(flags.validity, 'validity', cmd) ?? DEFAULT_VALIDITY_MS;
      const renewWithinMs =
        durationFlag(flags['renew-within'], 'renew-within', cmd) ?? DEFAULT_RENEW_WITHIN_MS;
      if (renewWithinMs >= validityMs) {
        throw new UsageError(
          `${cmd}: --renew-within (${formatDuration(renewWithinMs)}) must be shorter than --validity (${formatDuration(validityMs)})`,
        );
      }
      const keyAlgorithm = keyAlgorithmFlag(flags['key-algorithm'], cmd);
      if (flags['passphrase-file'] && !flags.p12)
        throw new UsageError(`${cmd}: --passphrase-file goes with --p12`);
      if (flags.p12 && !flags['passphrase-file'])
        throw new UsageError(`${cmd}: --p12 needs --passphrase-file FILE`);

      // Everything is read and checked before anything is written.
      const registry = loadRegistry(identities);
      let createdPassphrase = false;
      let passphrase: string | undefined;
      if (flags.p12) {
        const file = flags['passphrase-file']!;
        if (existsSync(file)) {
          passphrase = readFileSync(file, 'utf8').split(/\r?\n/)[0]!;
          if (passphrase.length < 8)
            throw new UsageError(`${file}: the PKCS#12 passphrase must be at least 8 characters`);
        } else {
          passphrase = randomBytes(24).toString('base64url');
          createdPassphrase = true;
        }
      }
      const hasCa = Object.values(CA_FILES).some((f) => existsSync(join(caDir, f)));
      let ca;
      if (!hasCa && flags['init-ca']) {
        ca = await initCaDirectory(caDir, { trustDomain: registry.trustDomain, keyAlgorithm });
        console.log(`created CA for trust domain ${ca.trustDomain} in ${caDir}`);
      } else {
        ca = await loadCaDirectory(caDir);
      }
      assertRegistryMatchesCa(registry, ca);
      if (createdPassphrase) {
        writeFileAtomic(flags['passphrase-file']!, `${passphrase}\n`, 0o600);
        console.log(`wrote a new random PKCS#12 passphrase to ${flags['passphrase-file']} (0600)`);
      }
      const result = await issueWorkloadCertificates({
        registry,
        ca,
        outDir,
        validityMs,
        renewWithinMs,
        keyAlgorithm,
        ...(passphrase !== undefined ? { p12Passphrase: passphrase } : {}),
        deps: { now: () => new Date(), progress: (line) => console.log(line) },
      });
      // Each new certificate is a cert.issued event: in the local file first (nothing is lost if the
      // collector is away), then at the collector when one is named.
      const events = result.outcomes
        .filter((x) => x.action !== 'unchanged')
        .map((x) =>
          certIssuedEvent({
            certPem: readFileSync(join(outDir, `${x.name}.pem`), 'utf8'),
            workload: x.name,
            auth: 'offline',
            action: 'certs issue',
            reason: x.action,
            time: new Date(),
          }),
        );
      const auditFile = flags['audit-file'] ?? join(outDir, 'issued.jsonl');
      if (events.length) {
        appendFileSync(auditFile, events.map((e) => JSON.stringify(e) + '\n').join(''), { mode: 0o600 });
        console.log(`${events.length} cert.issued audit events appended to ${auditFile}`);
        if (flags.collector !== undefined) {
          const sent = await sendEvents(events, {
            url: flags.collector,
            cert: flags['audit-cert']!,
            key: flags['audit-key']!,
            trustBundle: join(outDir, 'root.pem'),
            collectorId: flags['collector-id']!,
          });
          console.log(`${sent} cert.issued audit events sent to ${flags.collector}`);
        }
      }
      const count = (a: string) => result.outcomes.filter((o) => o.action === a).length;
      const issued = count('issued');
      const renewed = count('renewed');
      const unchanged = count('unchanged');
      if (result.written.length === 0) {
        console.log(
          `nothing to do: all ${unchanged} certificates are valid beyond the renewal threshold; no file changed`,
        );
      } else {
        console.log(
          `${issued} issued, ${renewed} renewed, ${unchanged} unchanged; ${result.written.length} files written in ${outDir}`,
        );
      }
      return 0;
    },
  },
  {
    name: 'certs revoke',
    summary: 'add a certificate serial to the CRL',
    usage: REVOKE_USAGE,
    async run(argv) {
      const cmd = 'certs revoke';
      const flags = parseFlags(
        argv,
        {
          serial: { type: 'string' },
          ca: { type: 'string' },
          out: { type: 'string' },
          reason: { type: 'string' },
          ...ADMIN_OPTIONS,
        },
        cmd,
      );
      const offline = flags.ca !== undefined || flags.out !== undefined;
      const online = ['sts', 'cert', 'key', 'cacert', 'json'].filter(
        (f) => flags[f as keyof typeof flags] !== undefined && flags[f as keyof typeof flags] !== false,
      );
      if (offline && online.length)
        throw new UsageError(
          `${cmd}: --${online[0]} revokes online and --${flags.ca !== undefined ? 'ca' : 'out'} offline: give one or the other`,
        );
      const ctx = offline ? undefined : findContext(flags.context);
      if (!offline && (flags.sts !== undefined || ctx !== undefined)) {
        if (flags.reason !== undefined)
          throw new UsageError(`${cmd}: --reason goes with an offline revocation (--ca, --out)`);
        return revokeOnline(flags, ctx);
      }
      const serial = required(flags.serial, 'serial', cmd);
      const reason = flags.reason;
      if (reason !== undefined && !(REVOCATION_REASONS as readonly string[]).includes(reason)) {
        throw new UsageError(
          `${cmd}: --reason must be one of ${REVOCATION_REASONS.join(', ')}, got "${reason}"`,
        );
      }
      const ca = await loadCaDirectory(flags.ca ?? 'certs/ca');
      const result = await revokeCertificate({
        ca,
        outDir: flags.out ?? 'certs',
        serial,
        ...(reason ? { reason: reason as RevocationReason } : {}),
        deps: { now: () => new Date() },
      });
      const whose = result.workload ? ` (${result.workload})` : '';
      console.log(
        result.alreadyRevoked
          ? `serial ${result.serial}${whose} was already revoked; CRL unchanged`
          : `revoked serial ${result.serial}${whose}; CRL #${result.crl.number} written to ${join(flags.out ?? 'certs', 'crl.pem')}`,
      );
      return 0;
    },
  },
];
