import type { Server as HttpsServer } from 'node:https';
import { X509Certificate } from 'node:crypto';
import { accessSync, constants as fsConstants, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import {
  applyConnectionBudgets,
  connectionServerOptions,
  createLogger,
  loadRegistry,
  registerConnectionMetrics,
  startOpsListener,
} from '../../core/index.ts';
import type { Logger, OpsState, Registry } from '../../core/index.ts';
import {
  createPeerVerifier,
  followTrustBundle,
  leafValidityProblem,
  startIdentity,
  watchTlsFiles,
  writeFileAtomic,
} from '../../ca/index.ts';
import type { TlsWatcher } from '../../ca/index.ts';
import type { AuditStore } from '../store/store.ts';
import { openStore } from '../store/open.ts';
import { ConfigFileError } from './config-error.ts';
import type { AuditConfig } from './config.ts';
import { DATA_FILES, loadCheckpointKey } from './key-load.ts';
import { AuditLog } from './log.ts';
import { buildCollectorApp } from './app.ts';
import { createCollectorMetrics } from './metrics.ts';
import { parseVerifierKey } from '../checkpoint.ts';
import { createSealer } from '../seal.ts';
import type { CollectorPeerVerifier } from './app.ts';

/** What tests and embedders may replace when starting a collector. */
export interface CollectorOverrides {
  readonly store?: AuditStore;
  readonly registry?: Registry;
  readonly logger?: Logger;
  readonly clock?: () => Date;
  readonly peerVerifier?: CollectorPeerVerifier;
  /** Include Node process metrics on `/metrics` (default true; tests running several servers in one process turn it off). */
  readonly defaultMetrics?: boolean;
}

/**
 * A running collector. `close()` stops listening, drains in-flight requests for up to
 * `connections.drainTimeout`, signs a last checkpoint and closes the store.
 */
export interface RunningCollector {
  readonly url: string;
  readonly port: number;
  /** `http://<host>:<port>` of the ops listener (`/healthz`, `/readyz`, `/metrics`) when `metrics` is configured. */
  readonly opsUrl?: string;
  readonly app: FastifyInstance;
  readonly log: AuditLog;
  /** The signed-note verifier key of the collector's checkpoint key. */
  readonly verifierKey: string;
  close(): Promise<void>;
}

/**
 * Starts the collector from a parsed config (see `loadAuditConfig` / `parseAuditConfig`):
 * opens the store, loads or creates the checkpoint key, rebuilds the Merkle tree, listens over
 * mTLS (port 0 picks a free port), and signs checkpoints every N records or T seconds.
 */
export async function startCollector(
  config: AuditConfig,
  overrides: CollectorOverrides = {},
): Promise<RunningCollector> {
  // The ops listener comes up first: /readyz says 503 with the reasons while the certificate,
  // checkpoint key and store load and the Merkle tree is rebuilt, and 200 once the mTLS listener is open.
  const ops = config.metrics ? await startOpsListener(config.metrics.listen, config.connections) : undefined;
  try {
    const collector = await startCollectorParts(config, overrides, ops?.state);
    if (!ops) return collector;
    return {
      ...collector,
      opsUrl: ops.url,
      async close() {
        await Promise.all([collector.close(), ops.close()]);
      },
    };
  } catch (err) {
    await ops?.close();
    throw err;
  }
}

async function startCollectorParts(
  config: AuditConfig,
  overrides: CollectorOverrides,
  ops: OpsState | undefined,
): Promise<RunningCollector> {
  const logger = overrides.logger ?? createLogger({ name: 'audit' });
  const clock = overrides.clock ?? (() => new Date());
  // What has loaded so far; the readiness checks (docs/audit.md, Health) read it on both listeners.
  const loaded: {
    tls?: TlsWatcher;
    verifierKey?: string;
    store?: 'opening' | 'open' | 'closed';
    checkpointProblem?: string;
    listening?: boolean;
  } = {};
  const readiness = {
    certificate: () =>
      loaded.tls
        ? leafValidityProblem(loaded.tls.current().cert, clock().getTime())
        : 'the certificate is not loaded yet',
    store: () =>
      loaded.store === 'open'
        ? undefined
        : loaded.store === 'closed'
          ? 'the store is closed'
          : loaded.store === 'opening'
            ? 'the store is opening (rebuilding the Merkle tree)'
            : 'the store is not open yet',
    signingKey: () => (loaded.verifierKey ? undefined : 'no checkpoint signing key'),
    checkpoint: () => loaded.checkpointProblem ?? dirWritable(config.dataDir),
  };
  if (ops)
    ops.checks = {
      ...readiness,
      listener: () => (loaded.listening ? undefined : 'the mTLS listener is not open yet'),
    };
  const registry = overrides.registry ?? loadRegistry(config.identities);
  // With identity: the certificate is enrolled and renewed over EST (ca/start-identity.ts).
  const identity = await startIdentity({ identity: config.identity, tls: config.tls, logger });
  // Renewed certificates are picked up without a restart (new connections use the new leaf).
  const tlsFiles = watchTlsFiles(config.tls, logger);
  loaded.tls = tlsFiles;
  const { cert: certPem, key: keyPem, ca: trustPem } = tlsFiles.current();
  const selfId = spiffeIdOf(certPem, config.tls.cert);
  // Trust follows tls.trustBundle across reloads (a CA rotation needs no restart).
  const peerVerifier =
    overrides.peerVerifier ??
    followTrustBundle(tlsFiles, (trustAnchorsPem, intermediatesPem) =>
      createPeerVerifier({
        trustAnchorsPem,
        intermediatesPem,
        trustDomain: registry.trustDomain,
        purpose: 'clientAuth',
        clockSkewMs: config.tls.clockSkew,
      }),
    );

  const signer = loadCheckpointKey(config.dataDir, config.origin);
  loaded.verifierKey = signer.verifierKey;
  const latestFile = join(config.dataDir, DATA_FILES.latest);
  let lastCheckpoint: string | undefined;
  try {
    lastCheckpoint = readFileSync(latestFile, 'utf8');
  } catch {
    lastCheckpoint = undefined;
  }
  let log: AuditLog | undefined;
  const metrics = createCollectorMetrics(
    { size: () => log?.size ?? 0, checkpointSize: () => log?.latest()?.body.size ?? 0 },
    undefined,
    overrides.defaultMetrics ?? true,
  );
  if (ops) ops.metrics = { registry: metrics.registry };
  const trusted = config.trustedKeys.map((k, i) => {
    try {
      return parseVerifierKey(k);
    } catch (err) {
      throw new ConfigFileError('<audit config>', `trustedKeys[${i}]`, (err as Error).message, err);
    }
  });
  // Every group commit is sealed with this collector's key; only what a trusted key sealed is
  // adopted (docs/decisions/0025).
  const sealer = createSealer(signer, config.origin, trusted);
  loaded.store = 'opening';
  const store =
    overrides.store ??
    (await openStore(config.store, {
      clock,
      table: config.table,
      sealer,
      // A log written before seals is adopted as far as this collector's last checkpoint covers it.
      adopt: lastCheckpoint,
      segmentRecords: config.segments.records,
      segmentBytes: config.segments.bytes,
      idempotency: { retentionMs: config.idempotency.retention, maxKeys: config.idempotency.maxKeys },
      onUncovered: (tail) => {
        const count = Math.max(0, tail.to - tail.from + 1);
        metrics.uncovered.inc(count);
        logger.error(
          { from: tail.from, to: tail.to, records: count, keptIn: tail.keptIn },
          count
            ? `refused records ${tail.from}..${tail.to}: no trusted seal covers them (kept in ${tail.keptIn}, never signed)`
            : `refused bytes after record ${tail.from - 1} that no trusted seal covers (kept in ${tail.keptIn})`,
        );
      },
      onRecover: (info) => {
        metrics.tornTails.inc();
        logger.warn(
          { segment: info.segment, droppedBytes: info.droppedBytes, keptIn: info.keptIn },
          `moved a torn or junk tail of ${info.droppedBytes} bytes aside (kept in ${info.keptIn})`,
        );
      },
    }));
  try {
    log = await AuditLog.open({
      store,
      signer,
      origin: config.origin,
      lastCheckpoint,
      onCheckpoint: (note, body) => {
        writeFileAtomic(latestFile, note, 0o644);
        metrics.checkpoints.inc();
        logger.info({ size: body.size }, 'checkpoint signed');
      },
    });
  } catch (err) {
    await store.close().catch(() => {});
    throw err;
  }

  loaded.store = 'open';
  let sinceCheckpoint = 0;
  let checkpointing: Promise<unknown> = Promise.resolve();
  const checkpoint = () => {
    sinceCheckpoint = 0;
    checkpointing = checkpointing
      .then(() => log.checkpoint())
      .then(
        // Why the last checkpoint could not be signed or saved; undefined once one succeeds.
        () => (loaded.checkpointProblem = undefined),
        (err: unknown) => {
          loaded.checkpointProblem = `the last checkpoint failed: ${(err as { code?: string }).code ?? (err as Error).message.split('\n')[0]!.slice(0, 120)}`;
          logger.error({ err }, 'checkpoint failed');
        },
      );
    return checkpointing;
  };
  await checkpoint();
  const timer = setInterval(() => {
    if (log.size !== log.latest()?.body.size || store.kind === 'postgres') void checkpoint();
  }, config.checkpoint.interval);
  timer.unref();

  const app = buildCollectorApp({
    log,
    registry,
    peerVerifier,
    logger,
    clock,
    selfId,
    verifierKey: signer.verifierKey,
    limits: config.limits,
    metrics,
    // Readiness (docs/audit.md, Health): the certificate it serves, the store, the signing key and
    // a checkpoint that could be written; the ops listener serves the same checks.
    readiness,
    onAppended: (n) => {
      metrics.appended.inc(n);
      sinceCheckpoint += n;
      if (sinceCheckpoint >= config.checkpoint.everyRecords) void checkpoint();
    },
    tls: {
      key: keyPem,
      cert: certPem,
      ca: trustPem,
      requestCert: true,
      // The peer is checked in onRequest (ca/ peer verifier) so that a refusal gets an error body.
      rejectUnauthorized: false,
      minVersion: config.tls.minVersion,
      // Node checks its header and request timeouts at this interval (30 s unless told).
      ...connectionServerOptions(config.connections),
    },
  });
  const connections = applyConnectionBudgets(app.server, config.connections, {
    timeoutBody: (message) => JSON.stringify({ error: 'ERR_AUDIT_BAD_REQUEST', message }),
    onBodyTimeout: (req) =>
      logger.warn({ peer: req.socket?.remoteAddress, url: req.url?.slice(0, 256) }, 'request body timed out'),
  });
  registerConnectionMetrics(metrics.registry, 'portcullis_audit', { main: connections });
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port });
  } catch (err) {
    tlsFiles.close();
    await store.close().catch(() => {});
    throw err;
  }
  loaded.listening = true;
  identity?.attach(() => tlsFiles.reload(), metrics.registry);
  // The file store's writer keeps the query index as it appends and saves it beside the segments
  // (decision 0095): in the background, read back what is saved and build only what no index file
  // covers, within the index cache's memory bound. A failure is logged; queries build what they need.
  store.prepareQueries?.().catch((err: unknown) => logger.warn({ err }, 'preparing the query index failed'));
  tlsFiles.onChange((m) =>
    (app.server as unknown as HttpsServer).setSecureContext({
      cert: m.cert,
      key: m.key,
      ca: m.ca,
      minVersion: config.tls.minVersion,
    }),
  );
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.listen.port;
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
  let closed: Promise<void> | undefined;
  return {
    url: `https://${host}:${port}`,
    port,
    app,
    log,
    verifierKey: signer.verifierKey,
    close() {
      closed ??= (async () => {
        clearInterval(timer);
        identity?.stop();
        tlsFiles.close();
        // Stops accepting; idle, half-open and handshaking connections go now, the rest after drainTimeout.
        await Promise.all([app.close(), connections.drain()]);
        await checkpointing;
        await checkpoint();
        loaded.store = 'closed';
        if (!overrides.store) await store.close();
      })();
      return closed;
    },
  };
}

/** undefined when the process may create files in `dir` (where checkpoints are saved). */
function dirWritable(dir: string): string | undefined {
  try {
    accessSync(dir, fsConstants.W_OK);
    return undefined;
  } catch (err) {
    return `the data directory is not writable (${(err as NodeJS.ErrnoException).code ?? 'error'})`;
  }
}

function spiffeIdOf(certPem: string, file: string): string {
  let san: string | undefined;
  try {
    san = new X509Certificate(certPem).subjectAltName;
  } catch (err) {
    throw new ConfigFileError(file, 'tls.cert', 'not a PEM certificate', err);
  }
  const uris = (san ?? '').split(', ').filter((s) => s.startsWith('URI:'));
  if (uris.length !== 1)
    throw new ConfigFileError(file, 'tls.cert', 'must carry exactly one SPIFFE ID URI SAN');
  return uris[0]!.slice(4);
}
