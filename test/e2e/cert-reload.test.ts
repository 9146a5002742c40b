// Renewed certificates are served without a restart by the STS and the audit collector, and the
// audit client presents its renewed certificate: `certs issue` from cron is all an operator runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { createAuditClient } from '../../audit/index.ts';
import { issueWorkloadCertificates, normalizeSerial } from '../../ca/index.ts';
import { createLogger } from '../../core/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { servedSerial } from '../helpers/raw-http.ts';
import { startTestCollector } from '../audit/collector-harness.ts';
import { startTestSts } from '../sts/helpers.ts';

const serialOf = (pem: string) => normalizeSerial(new X509Certificate(pem).serialNumber);

test(
  'the STS, the collector and the audit client pick up renewed certificates without a restart',
  { timeout: 60_000 },
  async () => {
    const pki = await makeTestPki();
    const leaf = (n: string) => pki.leaf(n);
    const tls = (n: string) => ({
      cert: leaf(n).certFile,
      key: leaf(n).keyFile,
      trustBundle: pki.rootFile,
      reloadInterval: '100ms',
    });
    const sts = await startTestSts(pki, { tls: tls('sts') });
    const collector = await startTestCollector(pki, join(pki.dir, 'audit'), { tls: tls('audit') });
    const clientLines: string[] = [];
    const clientLog = createLogger({
      name: 'client',
      level: 'info',
      destination: { write: (l: string) => void clientLines.push(l) },
    });
    const client = createAuditClient({
      url: collector.url,
      collectorId: 'spiffe://example.org/ns/portcullis/sa/audit',
      tls: { cert: leaf('web').certFile, key: leaf('web').keyFile, trustBundle: pki.rootFile },
      spoolDir: join(pki.dir, 'spool'),
      spoolMaxBytes: 1_000_000,
      failMode: 'open',
      tlsReloadIntervalMs: 100,
      logger: clientLog,
    });
    const web = { cert: leaf('web').certPem, key: leaf('web').keyPem, ca: pki.rootPem };
    try {
      const before = {
        sts: await servedSerial(sts.port, web),
        audit: await servedSerial(collector.port, web),
      };
      assert.equal(before.sts, serialOf(leaf('sts').certPem));
      client.emit({ type: 'authz.decision', time: new Date().toISOString(), action: 'before' });
      await client.flush();

      // What cron does: renew everything (a horizon longer than the lifetime renews every leaf).
      await issueWorkloadCertificates({
        registry: pki.registry,
        ca: pki.ca,
        outDir: pki.certsDir,
        validityMs: 86_400_000,
        renewWithinMs: 2 * 86_400_000,
        keyAlgorithm: 'ecdsa-p256',
        deps: { now: () => new Date() },
      });
      const renewed = { sts: serialOf(leaf('sts').certPem), audit: serialOf(leaf('audit').certPem) };
      assert.notEqual(renewed.sts, before.sts);
      const until = Date.now() + 5_000;
      let served = before;
      while (Date.now() < until && (served.sts !== renewed.sts || served.audit !== renewed.audit)) {
        await new Promise((r) => setTimeout(r, 100));
        served = { sts: await servedSerial(sts.port, web), audit: await servedSerial(collector.port, web) };
      }
      assert.deepEqual(served, renewed);

      // The client reloads web's renewed certificate (its next connection presents it), and
      // delivery goes on.
      const reloaded = () => clientLines.some((l) => l.includes('certificate reloaded'));
      const clientUntil = Date.now() + 5_000;
      while (!reloaded() && Date.now() < clientUntil) await new Promise((r) => setTimeout(r, 50));
      assert.ok(reloaded(), `the audit client did not reload its certificate: ${clientLines.join('')}`);
      client.emit({ type: 'authz.decision', time: new Date().toISOString(), action: 'after' });
      await client.flush();
      assert.equal(client.metrics().delivered, 2);
      assert.equal(client.metrics().failures, 0);
    } finally {
      await client.close();
      await collector.close();
      await sts.close();
      pki.cleanup();
    }
  },
);
