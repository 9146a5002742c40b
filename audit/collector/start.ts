import type { Server as HttpsServer } from 'node:https';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { createLogger, loadRegistry } from '../../core/index.ts';
import type { Logger, Registry } from '../../core/index.ts';
import {
  createPeerVerifier,
  followTrustBundle,
  startIdentity,
  watchTlsFiles,
  writeFileAtomic,
} from '../../ca/index.ts';
import type { AuditStore } from '../store/store.ts';
import { openStore } from '../store/open.ts';
import { ConfigFileError } from './config-error.ts';
import type { AuditConfig } from './config.ts';
import { DATA_FILES, loadCheckpointKey } from './key-load.ts';
import { AuditLog } from './log.ts';
import { buildCollectorApp } from './app.ts';
import { createCollectorMetrics } from './metrics.ts';
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

/** A running collector. `close()` stops listening, signs a last checkpoint and closes the store. */
export interface RunningCollector {
  readonly url: string;
  readonly port: number;
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
  const logger = overrides.logger ?? createLogger({ name: 'audit' });
  const clock = overrides.clock ?? (() => new Date());
  const registry = overrides.registry ?? loadRegistry(config.identities);
  // With identity: the certificate is enrolled and renewed over EST (ca/start-identity.ts).
  const identity = await startIdentity({ identity: config.identity, tls: config.tls, logger });
  // Renewed certificates are picked up without a restart (new connections use the new leaf).
  const tlsFiles = watchTlsFiles(config.tls, logger);
  const { cert: certPem, key: keyPem, ca: trustPem } = tlsFiles.current();
  const selfId = spiffeIdOf(certPem, config.tls.cert);
  // Trust follows tls.trustBundle across reloads (a CA rotation needs no restart).
  const peerVerifier =
    overrides.peerVerifier ??
    followTrustBundle(tlsFiles, (trustAnchorsPem) =>
      createPeerVerifier({ trustAnchorsPem, trustDomain: registry.trustDomain, purpose: 'clientAuth' }),
    );

  const signer = loadCheckpointKey(config.dataDir, config.origin);
  const latestFile = join(config.dataDir, DATA_FILES.latest);
  let lastCheckpoint: string | undefined;
  try {
    lastCheckpoint = readFileSync(latestFile, 'utf8');
  } catch {
    lastCheckpoint = undefined;
  }
  const store = overrides.store ?? (await openStore(config.store, { clock, table: config.table }));
  let log: AuditLog | undefined;
  const metrics = createCollectorMetrics(
    { size: () => log?.size ?? 0, checkpointSize: () => log?.latest()?.body.size ?? 0 },
    undefined,
    overrides.defaultMetrics ?? true,
  );
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

  let sinceCheckpoint = 0;
  let checkpointing: Promise<unknown> = Promise.resolve();
  const checkpoint = () => {
    sinceCheckpoint = 0;
    checkpointing = checkpointing
      .then(() => log.checkpoint())
      .catch((err: unknown) => logger.error({ err }, 'checkpoint failed'));
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
    },
  });
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port });
  } catch (err) {
    tlsFiles.close();
    await store.close().catch(() => {});
    throw err;
  }
  identity?.attach(() => tlsFiles.reload(), metrics.registry);
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
        await app.close();
        await checkpointing;
        await checkpoint();
        if (!overrides.store) await store.close();
      })();
      return closed;
    },
  };
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
