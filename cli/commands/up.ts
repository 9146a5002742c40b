import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join, relative, resolve } from 'node:path';
import { pino } from 'pino';
import { stringify as stringifyYaml } from 'yaml';
import { loadAuditConfig, startCollector } from '../../audit/index.ts';
import type { RunningCollector } from '../../audit/index.ts';
import {
  CA_FILES,
  initCaDirectory,
  issueWorkloadCertificates,
  loadCaDirectory,
  writeFileAtomic,
} from '../../ca/index.ts';
import {
  LOG_LEVELS,
  activeTracer,
  createLogger,
  formatDuration,
  loadRegistry,
  parseDuration,
  startTelemetry,
} from '../../core/index.ts';
import type { Logger } from '../../core/index.ts';
import { loadSidecarConfig, sidecarServiceName, startSidecar } from '../../sidecar/index.ts';
import type { RunningSidecar } from '../../sidecar/index.ts';
import { createStsAdminClient, loadStsConfig, startSts } from '../../sts/index.ts';
import type { RunningSts } from '../../sts/index.ts';
import { startDemoApp } from '../../demo/app.ts';
import type { DemoApp } from '../../demo/app.ts';
import type { CliCommand } from '../lib/command.ts';
import { closeWithin, untilShutdownSignal } from '../lib/signals.ts';
import { CONTEXT_FILE } from '../lib/context.ts';
import { DEFAULT_RENEW_WITHIN_MS, DEFAULT_VALIDITY_MS } from './certs.ts';
import { UsageError, parseFlags } from '../lib/command.ts';

/** Group summary shown by `portcullis --help`. */
export const summary = 'run the local demo mesh on loopback';

/** Fixed loopback ports, so that the banner's commands can be pasted as they are. */
const UP_PORTS = {
  sts: 8443,
  audit: 8444,
  ordersInbound: 15443,
  webInbound: 15444,
  webOutbound: 15001,
  webApp: 8081,
  ordersApp: 8082,
  webMetrics: 15091,
  ordersMetrics: 15090,
} as const;

const USAGE = `usage: portcullis up [--data-dir DIR] [--identities DIR] [--policies DIR] [--port-offset N] [--svid-ttl DURATION] [--log-level LEVEL]

Starts the local mesh on loopback: creates the CA and certificates in the data directory if
missing (never overwriting; expiring leaves are renewed), starts the audit collector (file
store), the STS (file keystore under a generated master key stored 0600; the online CA), and the
demo apps web and orders, each behind a sidecar. The two sidecars enrol over EST with a one-time
join token and renew their certificates themselves; the STS and the collector renew theirs too.
Ctrl-C drains requests, flushes audit events and exits 0. A second run reuses the data directory.

flags:
  --data-dir DIR     where certificates, keys, configs and the audit log live (default .portcullis)
  --identities DIR   workload registry (default identities)
  --policies DIR     sidecar policies, one <service>.yaml each (default policies)
  --port-offset N    add N to every port (default 0: STS 8443, collector 8444, web outbound 15001, …)
  --svid-ttl DURATION  lifetime of the certificates the STS issues online (default 1h; e.g. 2m to
                     watch renewals happen at half of it: portcullis audit query --type cert.issued)
  --log-level LEVEL  log level of the parts, on stderr (default warn)`;

/** `portcullis up`. */
export const commands: readonly CliCommand[] = [
  {
    name: 'up',
    summary,
    usage: USAGE,
    async run(argv) {
      const flags = parseFlags(
        argv,
        {
          'data-dir': { type: 'string' },
          identities: { type: 'string' },
          policies: { type: 'string' },
          'port-offset': { type: 'string' },
          'log-level': { type: 'string' },
          'svid-ttl': { type: 'string' },
        },
        'up',
      );
      let svidTtlMs = 3_600_000;
      if (flags['svid-ttl'] !== undefined) {
        try {
          svidTtlMs = parseDuration(flags['svid-ttl']);
        } catch {
          throw new UsageError(`up: --svid-ttl must be a duration like 2m or 1h, got "${flags['svid-ttl']}"`);
        }
        if (svidTtlMs < 60_000 || svidTtlMs > 86_400_000)
          throw new UsageError('up: --svid-ttl must be from 1m to 24h');
      }
      const offset = Number(flags['port-offset'] ?? 0);
      if (!Number.isInteger(offset) || offset < 0 || offset > 40_000)
        throw new UsageError('up: --port-offset must be an integer from 0 to 40000');
      const level = flags['log-level'] ?? 'warn';
      if (!(LOG_LEVELS as readonly string[]).includes(level)) {
        throw new UsageError(`up: --log-level must be one of ${LOG_LEVELS.join(', ')}`);
      }
      // One telemetry for the whole mesh; each part exports under its own service.name (MESH_SERVICES).
      const telemetry = await startTelemetry({ serviceName: 'portcullis-up' });
      const mesh = await startMesh({
        dataDir: resolve(flags['data-dir'] ?? '.portcullis'),
        identities: resolve(flags.identities ?? 'identities'),
        policies: resolve(flags.policies ?? 'policies'),
        logLevel: level as pino.LevelWithSilent,
        portOffset: offset,
        svidTtlMs,
        print: (line) => console.log(line),
      });
      console.log(mesh.banner);
      const signal = await untilShutdownSignal();
      console.log(`\n${signal}: draining requests and flushing audit events…`);
      try {
        await closeWithin('up', 30_000, () => mesh.close());
      } catch (err) {
        console.error(`portcullis up: shutdown failed: ${(err as Error).message}`);
        return 1;
      }
      console.log('stopped; every audit event is in the log.');
      await telemetry.shutdown();
      return 0;
    },
  },
];

/**
 * The `service.name` of each part's spans: the mesh runs in one process, but a tracing backend
 * shows each part as its own service, as it would for separate deployments; the sidecars name
 * themselves as standalone ones do (`sidecarServiceName`: `web-sidecar`, `orders-sidecar`).
 */
const MESH_SERVICES = { sts: 'portcullis-sts', webApp: 'web', ordersApp: 'orders' } as const;

/** Options of {@link startMesh}. */
interface MeshOptions {
  readonly dataDir: string;
  readonly identities: string;
  readonly policies: string;
  readonly logLevel: pino.LevelWithSilent;
  readonly portOffset: number;
  /** Cap on the lifetime of certificates issued online (the STS's `ca.svidTtlCap`). */
  readonly svidTtlMs: number;
  readonly print: (line: string) => void;
}

/** A running local mesh. */
interface Mesh {
  readonly banner: string;
  close(): Promise<void>;
}

/**
 * Brings the mesh up in dependency order (collector, STS, apps, sidecars), writing the parts'
 * configs into `dataDir/config/` and loading them through the same loaders the single-part
 * commands use. On any failure the parts already started are stopped again.
 */
async function startMesh(o: MeshOptions): Promise<Mesh> {
  const P = Object.fromEntries(Object.entries(UP_PORTS).map(([k, v]) => [k, v + o.portOffset])) as Record<
    keyof typeof UP_PORTS,
    number
  >;
  const dirs = {
    certs: join(o.dataDir, 'certs'),
    config: join(o.dataDir, 'config'),
    spool: join(o.dataDir, 'spool'),
  };
  mkdirSync(o.dataDir, { recursive: true, mode: 0o700 });
  mkdirSync(dirs.config, { recursive: true });

  // 1. Identity: CA once, then idempotent issuance (never overwrites what is still good).
  const registry = loadRegistry(o.identities);
  for (const name of ['sts', 'audit', 'web', 'orders', 'security-console', 'admin-console']) {
    if (!registry.byName(name))
      throw new Error(`${o.identities}: the demo mesh needs a workload named "${name}"`);
  }
  const caDir = join(dirs.certs, 'ca');
  const ca = existsSync(join(caDir, CA_FILES.rootCert))
    ? await loadCaDirectory(caDir)
    : await initCaDirectory(caDir, { trustDomain: registry.trustDomain });
  const issued = await issueWorkloadCertificates({
    registry,
    ca,
    outDir: dirs.certs,
    validityMs: DEFAULT_VALIDITY_MS,
    renewWithinMs: DEFAULT_RENEW_WITHIN_MS,
    keyAlgorithm: 'ecdsa-p256',
    deps: { now: () => new Date() },
  });
  const fresh = issued.outcomes.filter((x) => x.action !== 'unchanged').length;
  o.print(
    fresh
      ? `certificates: ${fresh} issued or renewed in ${rel(dirs.certs)}`
      : `certificates: reusing ${rel(dirs.certs)}`,
  );

  // 2. The STS master key: generated once, kept 0600 beside the keystore it seals.
  const masterKeyFile = join(o.dataDir, 'master-key');
  if (!existsSync(masterKeyFile))
    writeFileAtomic(masterKeyFile, `${randomBytes(32).toString('base64')}\n`, 0o600);
  const masterKey = readFileSync(masterKeyFile, 'utf8').trim();

  // 3. Configs, written where an operator can read and reuse them.
  const td = registry.trustDomain;
  const id = (name: string) => registry.byName(name)!.spiffeId.uri;
  const tls = (name: string) => ({
    cert: join(dirs.certs, `${name}.pem`),
    key: join(dirs.certs, `${name}-key.pem`),
    trustBundle: join(dirs.certs, CA_FILES.rootCert),
  });
  const audit = (name: string, failMode: 'open' | 'closed') => ({
    sink: 'collector',
    collector: `https://127.0.0.1:${P.audit}`,
    collectorId: id('audit'),
    spoolDir: join(dirs.spool, name),
    failMode,
  });
  const loopback = (port: number) => ({ host: '127.0.0.1', port });
  const issuer = `https://127.0.0.1:${P.sts}`;
  const sts = { url: issuer, spiffeId: id('sts'), issuer };
  // Parts renew their own certificates over EST at half their life; the STS renews through itself.
  const renew = { renewAt: '50%', retryMin: '1s', retryMax: '30s' };
  // The demo workloads keep only what they enrolled: their own directory, a key made there.
  const enrolled = (name: string) => ({
    cert: join(o.dataDir, 'identity', name, 'cert.pem'),
    key: join(o.dataDir, 'identity', name, 'key.pem'),
    trustBundle: join(dirs.certs, CA_FILES.rootCert),
  });
  const joinTokenFile = (name: string) => join(o.dataDir, 'identity', name, 'join-token');
  for (const name of ['web', 'orders'])
    mkdirSync(join(o.dataDir, 'identity', name), { recursive: true, mode: 0o700 });
  const files = {
    audit: write(dirs.config, 'audit.yaml', {
      listen: loopback(P.audit),
      origin: `${td}/portcullis/audit`,
      identities: o.identities,
      tls: tls('audit'),
      identity: { est: issuer, bootstrap: 'files', ...renew },
      dataDir: join(o.dataDir, 'audit'),
      store: `file:${join(o.dataDir, 'audit', 'log')}`,
      checkpoint: { everyRecords: 100, interval: '5s' },
    }),
    sts: write(dirs.config, 'sts.yaml', {
      listen: loopback(P.sts),
      tls: tls('sts'),
      identity: { bootstrap: 'files', ...renew },
      identities: o.identities,
      issuer,
      ca: { dir: caDir, svidTtlCap: formatDuration(o.svidTtlMs) },
      keystore: { type: 'file', dir: join(o.dataDir, 'sts-keys') },
      audit: audit('sts', 'open'),
      revocation: { crl: join(dirs.certs, 'crl.pem') },
    }),
    orders: write(dirs.config, 'sidecar-orders.yaml', {
      service: id('orders'),
      trustDomain: td,
      tls: enrolled('orders'),
      identity: { bootstrap: { joinTokenFile: joinTokenFile('orders') }, ...renew },
      sts,
      inbound: {
        listen: loopback(P.ordersInbound),
        app: `http://127.0.0.1:${P.ordersApp}`,
        policy: join(o.policies, 'orders.yaml'),
      },
      metrics: { listen: loopback(P.ordersMetrics) },
      audit: audit('orders', 'closed'),
    }),
    web: write(dirs.config, 'sidecar-web.yaml', {
      service: id('web'),
      trustDomain: td,
      tls: enrolled('web'),
      identity: { bootstrap: { joinTokenFile: joinTokenFile('web') }, ...renew },
      sts,
      inbound: {
        listen: loopback(P.webInbound),
        app: `http://127.0.0.1:${P.webApp}`,
        policy: join(o.policies, 'web.yaml'),
      },
      outbound: {
        listen: loopback(P.webOutbound),
        routes: [
          {
            name: 'orders',
            hosts: ['orders.shop.internal'],
            address: `127.0.0.1:${P.ordersInbound}`,
            spiffeId: id('orders'),
          },
        ],
      },
      metrics: { listen: loopback(P.webMetrics) },
      audit: audit('web', 'open'),
    }),
  };

  // The context every other command reads (cli/lib/context.ts): no flags needed after `up`.
  const relToData = (p: string) => relative(o.dataDir, p);
  const admin = registry.workloads.find((w) => w.roles.includes('admin'));
  const reader = registry.workloads.find((w) => w.roles.includes('audit-reader'));
  const identityOf = (w: typeof admin) =>
    w ? { cert: relToData(tls(w.name).cert), key: relToData(tls(w.name).key) } : undefined;
  writeFileAtomic(
    join(o.dataDir, CONTEXT_FILE),
    `# Written by portcullis up on each start: where this mesh's parts are and who operates it.\n# Every portcullis command run from ${rel(dirname(o.dataDir))} (or given --context ${rel(o.dataDir)}) reads it.\n${stringifyYaml(
      {
        trustDomain: td,
        trustBundle: relToData(tls('sts').trustBundle),
        sts: { url: issuer, spiffeId: id('sts') },
        collector: {
          url: `https://127.0.0.1:${P.audit}`,
          spiffeId: id('audit'),
          store: `file:${relToData(join(o.dataDir, 'audit', 'log'))}`,
          verifierKey: relToData(join(o.dataDir, 'audit', 'checkpoint.vkey')),
          checkpoint: 'checkpoints/latest.checkpoint',
        },
        ca: { dir: relToData(caDir), crl: relToData(join(dirs.certs, 'crl.pem')) },
        operators: {
          ...(admin ? { admin: identityOf(admin) } : {}),
          ...(reader ? { auditReader: identityOf(reader) } : {}),
        },
      },
    )}`,
    0o600,
  );

  // 4. Start in dependency order; stop what started if a later part fails.
  const stops: (() => Promise<void>)[] = [];
  const log = (name: string): Logger =>
    createLogger({ name, level: o.logLevel, destination: pino.destination(2) });
  const close = async () => {
    for (const stop of stops.reverse()) await stop().catch(() => {});
  };
  try {
    const collector: RunningCollector = await startCollector(loadAuditConfig(files.audit), {
      registry,
      logger: log('audit'),
    });
    stops.push(() => collector.close());
    const sts: RunningSts = await startSts(loadStsConfig(files.sts), {
      registry,
      masterKey,
      logger: log('sts'),
      tracer: activeTracer('portcullis-sts', MESH_SERVICES.sts),
    });
    stops.push(() => sts.close());
    // One-time join tokens for the demo workloads, through the admin API as an operator would
    // (portcullis join-token create); a sidecar that still holds a valid certificate ignores its token.
    await createJoinTokens(sts.url, dirs.certs, joinTokenFile);
    const ordersApp: DemoApp = await startDemoApp({
      kind: 'orders',
      port: P.ordersApp,
      tracer: activeTracer('portcullis-demo', MESH_SERVICES.ordersApp),
    });
    stops.push(() => ordersApp.close());
    const webApp: DemoApp = await startDemoApp({
      kind: 'web',
      port: P.webApp,
      proxy: `http://127.0.0.1:${P.webOutbound}`,
      tracer: activeTracer('portcullis-demo', MESH_SERVICES.webApp),
    });
    stops.push(() => webApp.close());
    const ordersConfig = loadSidecarConfig(files.orders);
    const orders: RunningSidecar = await startSidecar(ordersConfig, {
      logger: log('sidecar-orders'),
      defaultMetrics: false,
      tracer: activeTracer('portcullis-sidecar', sidecarServiceName(ordersConfig.service)),
    });
    stops.push(() => orders.close());
    const webConfig = loadSidecarConfig(files.web);
    const web: RunningSidecar = await startSidecar(webConfig, {
      logger: log('sidecar-web'),
      defaultMetrics: false,
      tracer: activeTracer('portcullis-sidecar', sidecarServiceName(webConfig.service)),
    });
    stops.push(() => web.close());
  } catch (err) {
    await close();
    throw err;
  }

  const banner = `
Portcullis mesh is up (trust domain ${td}; data in ${rel(o.dataDir)}/)

  STS               https://127.0.0.1:${P.sts}   keys: /.well-known/jwks.json
  audit collector   https://127.0.0.1:${P.audit}   checkpoint key: ${rel(join(o.dataDir, 'audit', 'checkpoint.vkey'))}
  web               app http://127.0.0.1:${P.webApp}   sidecar outbound http://127.0.0.1:${P.webOutbound}, inbound https://127.0.0.1:${P.webInbound}
  orders            app http://127.0.0.1:${P.ordersApp}   sidecar inbound https://127.0.0.1:${P.ordersInbound} (policy ${rel(join(o.policies, 'orders.yaml'))})

Try it (in another terminal, from ${rel(process.cwd())}):

  1. Call orders from web through both sidecars (web's outbound proxy → mTLS + bound token → orders):
     curl -s -x http://127.0.0.1:${P.webOutbound} http://orders.shop.internal/orders/1

  2. Read that call's audit record (as security-console, the audit-reader). orders runs with
     failMode closed: the decision is on disk before the app sees the call (so no status yet),
     and the app's answer follows in an authz.response record (same command, --type authz.response):
     npm run -s portcullis -- audit query --type authz.decision --limit 5 \\
       --url https://127.0.0.1:${P.audit} --collector-id ${id('audit')} \\
       --cert ${rel(join(dirs.certs, 'security-console.pem'))} --key ${rel(join(dirs.certs, 'security-console-key.pem'))} --trust ${rel(join(dirs.certs, 'root.pem'))}

  3. Verify the log is intact (hash chain and Merkle tree, offline):
     npm run -s portcullis -- audit verify --store file:${rel(join(o.dataDir, 'audit', 'log'))}

  A call the policy denies, for contrast (403, also in the log):
     curl -s -X POST -x http://127.0.0.1:${P.webOutbound} http://orders.shop.internal/orders/1

Ctrl-C stops the mesh (in-flight requests drain, audit events are flushed).`;
  return { banner, close };
}

/** Writes a config as YAML (serialized, so any path in it stays one value) and returns its path. */
function write(dir: string, name: string, config: object): string {
  const path = join(dir, name);
  writeFileAtomic(path, `# Written by portcullis up; regenerated on each start.\n${stringifyYaml(config)}`);
  return path;
}

function rel(path: string): string {
  return relative(process.cwd(), path) || '.';
}

/** One-time join tokens for the demo workloads, created through the admin API with the admin certificate. */
async function createJoinTokens(
  stsUrl: string,
  certsDir: string,
  tokenFile: (name: string) => string,
): Promise<void> {
  const admin = createStsAdminClient({
    url: stsUrl,
    cert: readFileSync(join(certsDir, 'admin-console.pem'), 'utf8'),
    key: readFileSync(join(certsDir, 'admin-console-key.pem'), 'utf8'),
    ca: readFileSync(join(certsDir, CA_FILES.rootCert), 'utf8'),
  });
  try {
    for (const name of ['web', 'orders']) {
      const { token } = await admin.createJoinToken({ workload: name, ttl: '15m' });
      writeFileAtomic(tokenFile(name), `${token}\n`, 0o600);
    }
  } finally {
    await admin.close();
  }
}
