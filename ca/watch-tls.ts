import { statSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import type { Logger } from '../core/index.ts';
import type { PeerVerifier } from './verify-peer.ts';
import { chainIntermediatesPem } from './pem.ts';
import { ConfigError, readConfiguredFile } from '../core/index.ts';

/** A workload's TLS material as PEM text: its chain (leaf first), its key, its trust bundle. */
export interface TlsMaterial {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
}

/** Watches the certificate, key and trust bundle files; `current()` changes identity only when they change. */
export interface TlsWatcher {
  current(): TlsMaterial;
  /** Re-reads the files now; true when the material changed. A half-written pair keeps the old one. */
  reload(): boolean;
  onChange(listener: (m: TlsMaterial) => void): void;
  readonly stats: { reloads: number; failures: number };
  close(): void;
}

/**
 * Loads the TLS files (throwing ConfigError at start) and polls their mtimes, so that a renewed
 * certificate (`certs issue` runs well before expiry) is picked up without a restart. A change
 * that does not load as a matching key pair keeps the previous material, logs and counts a
 * failure. Used by every server and client of Portcullis that holds a workload certificate.
 */
export function watchTlsFiles(
  /** A part's `tls:` config section (paths resolved); `reloadInterval` in ms. */
  tls: {
    readonly cert: string;
    readonly key: string;
    readonly trustBundle: string;
    readonly reloadInterval: number;
  },
  logger: Logger,
): TlsWatcher {
  const load = (): TlsMaterial => {
    const m = Object.freeze({
      cert: readConfiguredFile(tls.cert, 'tls.cert'),
      key: readConfiguredFile(tls.key, 'tls.key'),
      ca: readConfiguredFile(tls.trustBundle, 'tls.trustBundle'),
    });
    // Throws (and so keeps the previous material) unless the key matches the chain.
    try {
      createSecureContext({ cert: m.cert, key: m.key, ca: m.ca });
    } catch (err) {
      throw new ConfigError(
        'ERR_CONFIG_INVALID',
        tls.cert,
        'tls',
        `the certificate, its key (${tls.key}) and the trust bundle do not load together (${(err as Error).message})`,
        { cause: err },
      );
    }
    return m;
  };
  const stamp = () =>
    [tls.cert, tls.key, tls.trustBundle]
      .map((f) => {
        try {
          const s = statSync(f, { bigint: true });
          return `${s.mtimeNs}:${s.size}:${s.ino}`;
        } catch {
          return 'missing';
        }
      })
      .join('|');
  let material = load();
  let last = stamp();
  const listeners: ((m: TlsMaterial) => void)[] = [];
  const stats = { reloads: 0, failures: 0 };
  const reload = () => {
    try {
      const next = load();
      if (next.cert === material.cert && next.key === material.key && next.ca === material.ca) return false;
      material = next;
      stats.reloads++;
      logger.info({ file: tls.cert }, 'certificate reloaded');
      for (const l of listeners) l(next);
      return true;
    } catch (err) {
      stats.failures++;
      logger.error(
        { err: (err as Error).message },
        'certificate files unusable; keeping the previous certificate',
      );
      return false;
    }
  };
  const timer = setInterval(() => {
    const s = stamp();
    if (s === last) return;
    last = s;
    reload();
  }, tls.reloadInterval);
  timer.unref();
  return {
    current: () => material,
    reload,
    onChange: (l) => void listeners.push(l),
    stats,
    close: () => clearInterval(timer),
  };
}

/**
 * A peer verifier that follows the watched trust bundle and the intermediates of the part's own
 * chain: built from the current ones, and built again when a reload changes either, so that a CA
 * rotation (new anchors in `tls.trustBundle`, a renewed chain under a new intermediate) needs no
 * restart. `make` receives the bundle and the own chain's intermediates (for
 * `createPeerVerifier`'s `trustAnchorsPem` and `intermediatesPem`).
 */
export function followTrustBundle(
  tls: TlsWatcher,
  make: (trustPem: string, intermediatesPem: string) => PeerVerifier,
): PeerVerifier {
  let trust = tls.current().ca;
  let intermediates = chainIntermediatesPem(tls.current().cert);
  let inner = make(trust, intermediates);
  tls.onChange((m) => {
    const nextIntermediates = chainIntermediatesPem(m.cert);
    if (m.ca === trust && nextIntermediates === intermediates) return;
    trust = m.ca;
    intermediates = nextIntermediates;
    inner = make(trust, intermediates);
  });
  return {
    verifySocket: (socket) => inner.verifySocket(socket),
    verifyChain: (chain) => inner.verifyChain(chain),
  };
}
