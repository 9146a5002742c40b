// Offline issuance is audited too: `certs issue` appends a cert.issued event per new certificate to
// OUT/issued.jsonl and, with --collector, sends them at once; `audit import` sends a kept file
// later; `audit query --type cert.issued --subject ID` lists every certificate of a workload.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAuditEvent } from '../../core/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { startTestCollector } from '../audit/collector-harness.ts';

const CLI = new URL('../../cli/portcullis.ts', import.meta.url).pathname;
const run = (args: string[]) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
const WEB = 'spiffe://example.org/ns/shop/sa/web';
const AUDIT_ID = 'spiffe://example.org/ns/portcullis/sa/audit';

test(
  'certs issue records cert.issued events locally and at the collector; audit import sends a kept file',
  { timeout: 60_000 },
  async () => {
    const pki = await makeTestPki();
    const collector = await startTestCollector(pki, join(pki.dir, 'audit'));
    const admin = pki.leaf('admin-console');
    const remote = ['--url', collector.url, '--collector-id', AUDIT_ID, '--trust', pki.rootFile];
    try {
      // A renewal horizon beyond the leaves' life renews every one of them.
      const issue = await run([
        'certs',
        'issue',
        '--identities',
        pki.identitiesDir,
        '--ca',
        pki.ca.dir,
        '--out',
        pki.certsDir,
        '--renew-within',
        '25h',
        '--validity',
        '26h',
        '--collector',
        collector.url,
        '--collector-id',
        AUDIT_ID,
        '--audit-cert',
        admin.certFile,
        '--audit-key',
        admin.keyFile,
      ]);
      assert.equal(issue.code, 0, issue.stderr);
      assert.match(issue.stdout, /6 cert\.issued audit events sent to/);
      const file = join(pki.certsDir, 'issued.jsonl');
      const events = readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .map((l) => parseAuditEvent(JSON.parse(l)));
      assert.equal(events.length, 6);
      const web = events.find((e) => e.subject === WEB)!;
      assert.equal(web.attributes!.auth, 'offline');
      assert.equal(web.reason, 'renewed');
      assert.equal(web.target, pki.leaf('web').serial);
      assert.equal(
        web.attributes!.notAfter,
        new Date(new X509Certificate(pki.leaf('web').certPem).validTo).toISOString(),
      );
      assert.equal(collector.log.size, 6);

      // Later, the kept file goes to the collector with audit import (then it is renamed).
      const imported = await run([
        'audit',
        'import',
        '--file',
        file,
        '--cert',
        admin.certFile,
        '--key',
        admin.keyFile,
        ...remote,
      ]);
      assert.equal(imported.code, 0, imported.stderr);
      assert.equal(collector.log.size, 12);
      assert.ok(!existsSync(file) && existsSync(`${file}.imported`));

      // Every certificate web ever had, by subject.
      const reader = pki.leaf('security-console');
      const query = await run([
        'audit',
        'query',
        '--type',
        'cert.issued',
        '--subject',
        WEB,
        '--json',
        '--cert',
        reader.certFile,
        '--key',
        reader.keyFile,
        ...remote,
      ]);
      assert.equal(query.code, 0, query.stderr);
      const rows = query.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      assert.equal(rows.length, 2);
      assert.ok(
        rows.every(
          (r) => r.event.subject === WEB && r.event.source === 'spiffe://example.org/ns/ops/sa/admin-console',
        ),
      );

      // A file with a bad line is refused before anything is sent, naming the line.
      writeFileSync(join(pki.dir, 'bad.jsonl'), `${JSON.stringify(web)}\n{"type":"nope"}\n`);
      const bad = await run([
        'audit',
        'import',
        '--file',
        join(pki.dir, 'bad.jsonl'),
        '--cert',
        admin.certFile,
        '--key',
        admin.keyFile,
        ...remote,
      ]);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /bad\.jsonl:2: not an audit event/);
      assert.equal(collector.log.size, 13, 'the 12 events and the audited query; nothing from the bad file');
    } finally {
      await collector.close();
      pki.cleanup();
    }
  },
);
