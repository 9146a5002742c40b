import type { Server as HttpsServer } from 'node:https';
import { X509Certificate } from 'node:crypto';
import { availableParallelism } from 'node:os';

import type { FastifyInstance } from 'fastify';
import type { Registry as PromRegistry } from 'prom-client';
import { createAuditSink } from '../audit/index.ts';
import { chainIntermediatesPem, createPeerVerifier, followTrustBundle, watchTlsFiles } from '../ca/index.ts';
import type { TlsWatcher } from '../ca/index.ts';
import {
  activeTracer,
  applyConnectionBudgets,
  connectionServerOptions,
  createAccessLog,
  createLogger,
  registerConnectionMetrics,
  loadRegistry,
  readConfiguredFile,
  startOpsListener,
} from '../core/index.ts';
import type { AuditSink, Logger, OpsState, Registry, Tracer } from '../core/index.ts';
import type { StsConfig } from './config.ts';
import { keyringAuditEvents } from './http/audit-events.ts';
import { buildStsApp, refreshKeyAge, stsReadinessChecks } from './http/app.ts';
import { createSigningPool } from './token/sign-pool.ts';
import { Keyring } from './keyring/keyring.ts';
import type { KeyMaterial } from './keyring/key-material.ts';
import { createKeystore } from './keystore/create.ts';
import type { Keystore } from './keystore/keystore.ts';
import { createStsMetrics } from './metrics.ts';
import { createRateLimiter } from './rate-limit.ts';
import { createDenyList } from './revocations/deny-list.ts';
import { startCrlSource } from './revocations/crl-source.ts';
import type { DenyList } from './revocations/deny-list.ts';
import { openStateStore } from './state/create.ts';
import { followRevocations } from './state/follow.ts';
import type { StsStateStore } from './state/store.ts';
import { openOnlineCa } from './online-ca.ts';
import type { OnlineCa } from './online-ca.ts';
import { startIdentity } from '../ca/index.ts';

/** What {@link startSts} lets a caller replace; everything else comes from the config. */
export interface StartStsOverrides {
  /** Master key (base64 text or bytes) instead of the config's environment variable. */
  readonly masterKey?: string | Uint8Array;
  /** Environment to read secrets from; `process.env` by default. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly vaultToken?: string;
  /** Audit sink; by default the config's `audit.sink`. */
  readonly audit?: AuditSink;
  readonly logger?: Logger;
  readonly clock?: { now(): number };
  readonly keystore?: Keystore;
  readonly registry?: Registry;
  readonly metricsRegistry?: PromRegistry;
  readonly mintKey?: () => KeyMaterial;
  /** How often the keyring re-reads the keystore for other replicas' changes. */
  readonly keyringRefreshMs?: number;
  /** Tracer of the `sts.token` spans; the process's telemetry (`startTelemetry`) by default, none when it is off. */
  readonly tracer?: Tracer;
  /** State store (revocations, join tokens) instead of the config's `state`; the caller closes it. */
  readonly state?: StsStateStore;
}

/** A running STS. */
export interface RunningSts {
  /** `https://<host>:<port>` it listens on. */
  readonly url: string;
  readonly port: number;
  /** `http://<host>:<port>` of the ops listener (`/healthz`, `/readyz`, `/metrics`) when `metrics` is configured. */
  readonly opsUrl?: string;
  readonly app: FastifyInstance;
  readonly audit: AuditSink;
  /** Durable revocations and join tokens. */
  readonly state: StsStateStore;
  readonly keyring: Keyring;
  readonly denyList: DenyList;
  /**
   * Stops accepting, drains in-flight requests for up to `connections.drainTimeout` (then destroys
   * every connection left), stops the keyring, flushes audit events.
   */
  close(): Promise<void>;
}

/**
 * The composition root: reads the TLS files and the registry, opens the keystore and keyring
 * (refusing to start on a missing, short or wrong master key), builds the app and listens.
 * `config.listen.port` may be 0; the chosen port is returned.
 */
export async function startSts(config: StsConfig, overrides: StartStsOverrides = {}): Promise<RunningSts> {
  // The ops listener comes up first: /readyz says 503 with the reasons while the certificate,
  // keystore, state store and keyring load, and 200 once the mTLS listener is open too.
  const ops = config.metrics ? await startOpsListener(config.metrics.listen, config.connections) : undefined;
  try {
    const sts = await startStsParts(config, overrides, ops?.state);
    if (!ops) return sts;
    return {
      ...sts,
      opsUrl: ops.url,
      async close() {
        await Promise.all([sts.close(), ops.close()]);
      },
    };
  } catch (err) {
    await ops?.close();
    throw err;
  }
}

async function startStsParts(
  config: StsConfig,
  overrides: StartStsOverrides,
  ops: OpsState | undefined,
): Promise<RunningSts> {
  const logger = overrides.logger ?? createLogger({ name: 'sts' });
  const clock = overrides.clock ?? { now: () => Date.now() };
  // What has loaded so far, for the ops listener's /readyz (the same checks as the mTLS listener's).
  const loaded: { tls?: TlsWatcher; keyring?: Keyring; audit?: AuditSink; listening?: boolean } = {};
  if (ops)
    ops.checks = {
      ...stsReadinessChecks({
        certificate: () => loaded.tls?.current().cert,
        certificatePending: () => !loaded.tls,
        keyring: () => loaded.keyring,
        audit: () => loaded.audit,
        clock,
      }),
      listener: () => (loaded.listening ? undefined : 'the mTLS listener is not open yet'),
    };
  // With identity: the certificate is enrolled and renewed over EST (ca/start-identity.ts); an STS
  // that is itself the CA renews through its own listener once it is up.
  const self: { url?: string } = {};
  const identity = await startIdentity({
    identity: config.identity,
    tls: config.tls,
    logger,
    defaultEst: () => {
      if (!self.url)
        throw new Error(
          'the STS is not listening yet: enrol it with identity.est naming another STS, or start it from files',
        );
      return self.url;
    },
  });
  // What start-up has opened so far, released in reverse order when a later step fails (an
  // identity's renewal timer, file watchers, a collector sink's loop and connections would
  // otherwise run on in the calling process) and by close().
  const opened: (() => unknown)[] = [() => identity?.stop()];
  // Every release runs, whatever the one before it did: a store that fails to close must not keep
  // the audit sink from flushing, nor replace the error that stopped the start.
  const releaseOpened = async () => {
    for (const release of [...opened].reverse())
      await Promise.resolve()
        .then(release)
        .catch((err: unknown) =>
          logger.error({ err: (err as Error).message }, 'releasing a part of the STS failed'),
        );
  };
  const failed = async (err: unknown): Promise<never> => {
    await releaseOpened();
    throw err;
  };
  /** Runs a start-up step; when it throws, what is open so far is released before the error goes on. */
  const step = <T>(run: () => T): Promise<T> => Promise.resolve().then(run).catch(failed);
  // Renewed certificates are picked up without a restart (new connections use the new leaf).
  const tlsFiles = await step(() => watchTlsFiles(config.tls, logger));
  opened.push(() => tlsFiles.close());
  loaded.tls = tlsFiles;
  const { cert, key, ca: trustBundle } = tlsFiles.current();
  const registry = overrides.registry ?? (await step(() => loadRegistry(config.identities)));
  const selfId = await step(() => ownSpiffeId(cert));
  const metrics = await step(() =>
    createStsMetrics(overrides.metricsRegistry, overrides.metricsRegistry === undefined),
  );
  // The audit client's queue and spool gauges are served on the STS's own /metrics.
  const audit =
    overrides.audit ??
    (await step(() =>
      createAuditSink(config.audit, {
        tls: tlsFiles,
        logger,
        metricsRegistry: metrics.registry,
        clockSkewMs: config.tls.clockSkew,
      }),
    ));
  // A sink the caller passed in is the caller's to close: it is only flushed.
  opened.push(() => (overrides.audit ? audit.flush() : audit.close()));
  loaded.audit = audit;
  if (ops)
    ops.metrics = {
      registry: metrics.registry,
      beforeScrape: () => loaded.keyring && refreshKeyAge(metrics, loaded.keyring, clock.now()),
    };
  const tracer = 'tracer' in overrides ? overrides.tracer : activeTracer('portcullis-sts');
  const denyList = createDenyList(clock);
  const isRevoked = (serial: string) => denyList.isSerialRevoked(serial);
  // Trust follows tls.trustBundle across reloads. The policy caches its verdicts per connection
  // and per leaf fingerprint, and checks expiry and the deny-list on every request.
  const peerVerifier = await step(() =>
    followTrustBundle(tlsFiles, (trustAnchorsPem, intermediatesPem) =>
      createPeerVerifier({
        trustAnchorsPem,
        intermediatesPem,
        trustDomain: registry.trustDomain,
        isRevoked,
        purpose: 'clientAuth',
        clockSkewMs: config.tls.clockSkew,
        clock: () => clock.now(),
      }),
    ),
  );
  let keystore: Keystore;
  try {
    keystore =
      overrides.keystore ??
      createKeystore(config.keystore, {
        ...(overrides.env ? { env: overrides.env } : {}),
        ...(overrides.masterKey !== undefined ? { masterKey: overrides.masterKey } : {}),
        ...(overrides.vaultToken !== undefined ? { vaultToken: overrides.vaultToken } : {}),
      });
  } catch (err) {
    return failed(err);
  }
  // Without revocation.crlIssuer, the CRL's issuer is our own leaf's: the first intermediate of
  // its chain (the CRL source reads the first certificate of what it is given).
  const crlFile = config.revocation.crl;
  const crlSource = crlFile
    ? await step(() =>
        startCrlSource({
          file: crlFile,
          issuerPem: config.revocation.crlIssuer
            ? readConfiguredFile(config.revocation.crlIssuer, 'revocation.crlIssuer')
            : chainIntermediatesPem(cert),
          denyList,
          logger,
          pollIntervalMs: config.revocation.pollInterval,
          entryLifetimeMs: config.revocation.entryLifetime,
        }),
      )
    : undefined;
  if (crlSource) opened.push(() => crlSource.stop());
  // Durable revocations and join tokens; the deny-list is their in-memory copy (state/follow.ts).
  let state: StsStateStore;
  try {
    state = overrides.state ?? (await openStateStore(config, overrides.env, logger));
  } catch (err) {
    return failed(err);
  }
  if (!overrides.state) opened.push(() => state.close());
  const follower = await step(() =>
    followRevocations({
      store: state,
      denyList,
      intervalMs: config.statePollInterval,
      clock,
      logger,
    }),
  );
  opened.push(() => follower.stop());
  let estCa: OnlineCa | undefined;
  try {
    await follower.sync();
    if (config.ca) {
      const onlineCa = await openOnlineCa({
        dir: config.ca.dir,
        svidTtlCapMs: config.ca.svidTtlCap,
        trustBundlePem: () => tlsFiles.current().ca,
        intervalMs: config.statePollInterval,
        logger,
      });
      opened.push(() => onlineCa.stop());
      estCa = onlineCa;
    }
  } catch (err) {
    return failed(err);
  }
  let keyring: Keyring;
  try {
    keyring = await Keyring.open({
      keystore,
      clock,
      logger,
      policy: {
        rotationPeriodMs: config.keys.rotationPeriod,
        // One cache period plus the skew allowance, so a verifier whose fetch was in flight at publication still sees the key in time.
        publishLeadMs: config.keys.jwksCachePeriod + config.keys.clockSkew,
        retainAfterRetireMs: config.tokens.ttlCap + config.keys.clockSkew,
      },
      ...(overrides.mintKey ? { mintKey: overrides.mintKey } : {}),
      ...(overrides.keyringRefreshMs ? { refreshIntervalMs: overrides.keyringRefreshMs } : {}),
      onChange: (changes) => {
        for (const event of keyringAuditEvents(changes, clock.now(), selfId)) audit.emit(event);
        metrics.rotations.inc(changes.filter((c) => c.kind === 'rotated').length);
      },
    });
  } catch (err) {
    return failed(err);
  }
  opened.push(() => keyring.stop());
  loaded.keyring = keyring;
  const rateLimiter = await step(() => createRateLimiter({ ...config.rateLimit, clock }));
  const signingWorker = config.tokens.signingWorker;
  const signingPool = await step(() =>
    createSigningPool({
      worker: signingWorker === 'on' || (signingWorker === 'auto' && availableParallelism() >= 2),
      onError: (err) => logger.error({ err }, 'signing worker failed; signing on the event loop from now on'),
    }),
  );
  opened.push(() => signingPool.close());
  const accessLog = createAccessLog(logger, config.accessLog);
  const app = await step(() =>
    buildStsApp({
      ownCertificate: () => tlsFiles.current().cert,
      ...(accessLog ? { accessLog } : {}),
      signingPool,
      config,
      registry,
      keyring,
      peerVerifier,
      audit,
      clock,
      logger,
      metrics,
      denyList,
      rateLimiter,
      state,
      ...(estCa ? { estCa } : {}),
      ...(selfId ? { selfId } : {}),
      ...(tracer ? { tracer } : {}),
      tls: {
        cert,
        key,
        // The trust bundle alone, as for every listener and dialer: the handshake's own check then
        // tells whether the client sent its intermediates (docs/decisions/0006); the peer verifier
        // judges the certificate.
        ca: trustBundle,
        requestCert: true,
        // The peer is checked in onRequest so that a refusal gets an RFC 6749 body and an audit event.
        rejectUnauthorized: false,
        minVersion: config.tls.minVersion,
        // Node checks its header and request timeouts at this interval (30 s unless told).
        ...connectionServerOptions(config.connections),
      },
    }),
  );
  const connections = await step(() =>
    applyConnectionBudgets(app.server, config.connections, {
      timeoutBody: (message) => JSON.stringify({ error: 'invalid_request', error_description: message }),
      onBodyTimeout: () => {
        if (!audit.accepting()) return;
        audit.emit({
          type: 'authz.decision',
          time: new Date(clock.now()).toISOString(),
          ...(selfId ? { source: selfId } : {}),
          decision: 'deny',
          reason: 'ERR_STS_REQUEST_INVALID',
          status: 408,
          attributes: { timeout: 'body' },
        });
      },
    }),
  );
  registerConnectionMetrics(metrics.registry, 'portcullis_sts', { main: connections });
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port });
  } catch (err) {
    return failed(err);
  }
  loaded.listening = true;
  keyring.start();
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
  self.url = `https://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`;
  return {
    url: `https://${host}:${port}`,
    port,
    app,
    audit,
    state,
    keyring,
    denyList,
    async close() {
      // Stops accepting; what is idle, half-open or still handshaking goes now, the rest after drainTimeout.
      await Promise.all([app.close(), connections.drain()]);
      // Then what start-up opened, in reverse: the audit sink (flushed, or closed if built here)
      // before the TLS files it sends with; a state store the caller passed in stays open.
      await releaseOpened();
    },
  };
}

function ownSpiffeId(pem: string): string | undefined {
  try {
    const san = new X509Certificate(pem).subjectAltName ?? '';
    return /URI:(spiffe:\/\/[^,\s]+)/.exec(san)?.[1];
  } catch {
    return undefined;
  }
}
