// The audit client SIGKILLed with its collector away (a real child process, fixtures/emit-child.ts),
// then a new client on the same spool with the collector back: what the crash may lose and what
// the restart reports, in both fail modes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import { appendFileSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { createLogger } from '../../core/index.ts';
import { Spool, createAuditClient, openFileStore, verifyStore } from '../../audit/index.ts';
import type { AuditClient } from '../../audit/index.ts';
import { makeTestPki } from '../helpers/pki.ts';
import type { TestPki } from '../helpers/pki.ts';
import { startTestCollector } from './collector-harness.ts';
import { decision, tempDir } from './helpers.ts';

const CHILD = new URL('./fixtures/emit-child.ts', import.meta.url).pathname;
let pki: TestPki;
before(async () => {
  pki = await makeTestPki();
});
after(() => pki.cleanup());

/** Runs the child until `enough(lines)` holds, SIGKILLs it, and returns what it printed. */
async function runAndKill(args: string[], enough: (lines: string[]) => boolean): Promise<string[]> {
  const web = pki.leaf('web');
  const child = spawn(
    process.execPath,
    [CHILD, ...args.slice(0, 3), web.certFile, web.keyFile, pki.rootFile, args[3]!],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const lines: string[] = [];
  let buffered = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`child too slow: ${lines.at(-1)}`)), 20_000);
    child.on('exit', (code) => reject(new Error(`child exited early with ${code}`)));
    child.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const parts = buffered.split('\n');
      buffered = parts.pop()!;
      lines.push(...parts);
      if (enough(lines)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  child.removeAllListeners('exit');
  const exited = new Promise((r) => child.on('exit', r));
  child.kill('SIGKILL');
  await exited;
  return lines;
}

/** A new client on `spoolDir`, with the collector up, run until its spool is empty. */
async function restart(collectorUrl: string, spoolDir: string, failMode: 'open' | 'closed') {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  const metricsRegistry = new Registry();
  const web = pki.leaf('web');
  const client: AuditClient = createAuditClient({
    url: collectorUrl,
    collectorId: 'spiffe://example.org/ns/portcullis/sa/audit',
    tls: { cert: web.certFile, key: web.keyFile, trustBundle: pki.rootFile },
    spoolDir,
    spoolMaxBytes: 50_000_000,
    failMode,
    logger: createLogger({ name: 'restart', level: 'info', destination }),
    metricsRegistry,
  });
  await client.flush();
  const metrics = client.metrics();
  const text = await metricsRegistry.metrics();
  await client.close();
  return { metrics, lines, text };
}

async function loggedActions(dir: string): Promise<string[]> {
  const store = await openFileStore({ dir: join(dir, 'log'), readOnly: true });
  const out: string[] = [];
  for await (const r of store.read(0)) out.push(r.event.action!);
  const verdict = await verifyStore(store);
  assert.ok(verdict.ok, JSON.stringify(verdict));
  await store.close();
  return out;
}

test(
  'client: failMode open loses at most the loss window on a SIGKILL, and the restart reports the count in a log line and a metric',
  { timeout: 60_000 },
  async () => {
    const tmp = tempDir();
    const spool = join(tmp.dir, 'spool');
    const total = 1010;
    const window = 200;
    try {
      await runAndKill([spool, 'open', String(window), String(total)], (l) => l.at(-1) === 'done');
      const collector = await startTestCollector(pki, tmp.dir);
      const { metrics, lines, text } = await restart(collector.url, spool, 'open');
      await collector.close();
      const logged = await loggedActions(tmp.dir);
      const lost = total - logged.length;
      assert.ok(lost >= 0 && lost <= window, `${lost} events lost, window ${window}`);
      // What arrived is the first events, in order, once each.
      assert.deepEqual(
        logged,
        Array.from({ length: logged.length }, (_, i) => `GET /orders/${i}`),
      );
      assert.equal(metrics.possiblyLostAtRestart, window);
      assert.equal(metrics.delivered, logged.length);
      assert.match(text, new RegExp(`portcullis_audit_events_possibly_lost_at_restart ${window}\\b`));
      const report = lines.find((l) => l.possiblyLost === window);
      assert.ok(report && report.level === 50, JSON.stringify(lines));
      assert.match(String(report.msg), /stopped without closing it in failMode open; up to 200 audit events/);

      // A clean stop leaves nothing to report.
      const again = await restart('https://127.0.0.1:1', spool, 'open');
      assert.equal(again.metrics.possiblyLostAtRestart, 0);
    } finally {
      tmp.cleanup();
    }
  },
);

test(
  'client: failMode closed loses no event whose record() resolved, across a SIGKILL mid-stream; the replay sends each once, in order',
  { timeout: 60_000 },
  async () => {
    const tmp = tempDir();
    const spool = join(tmp.dir, 'spool');
    try {
      const printed = await runAndKill([spool, 'closed', '1', '100000'], (l) => l.length >= 600);
      const durable = printed.filter((l) => l.startsWith('durable ')).map((l) => Number(l.slice(8)));
      assert.ok(durable.length >= 300);
      const collector = await startTestCollector(pki, tmp.dir);
      const { metrics } = await restart(collector.url, spool, 'closed');
      await collector.close();
      assert.equal(metrics.possiblyLostAtRestart, 0);
      const logged = await loggedActions(tmp.dir);
      const have = new Set(logged);
      assert.deepEqual(
        durable.filter((i) => !have.has(`GET /orders/${i}`)),
        [],
      );
      assert.deepEqual(
        logged,
        Array.from({ length: logged.length }, (_, i) => `GET /orders/${i}`),
      );
    } finally {
      tmp.cleanup();
    }
  },
);

test(
  'client: a spool line that is not an event (junk from a disk fault or a hand edit) does not block delivery: it is sent alone, the collector refuses it with 400, it is set aside on disk with its bytes, and the events around it are delivered',
  { timeout: 30_000 },
  async () => {
    const tmp = tempDir();
    const spoolDir = join(tmp.dir, 'spool');
    const web = pki.leaf('web');
    const make = (url: string) =>
      createAuditClient({
        url,
        collectorId: 'spiffe://example.org/ns/portcullis/sa/audit',
        tls: { cert: web.certFile, key: web.keyFile, trustBundle: pki.rootFile },
        spoolDir,
        spoolMaxBytes: 1_000_000,
        failMode: 'closed',
        retryMinMs: 20,
        retryMaxMs: 100,
        logger: createLogger({ name: 'junk', level: 'silent' }),
      });
    try {
      const first = make('https://127.0.0.1:1');
      for (let i = 0; i < 3; i++) await first.record(decision(i));
      await first.close();
      const [file] = readdirSync(spoolDir).filter((n) => n.startsWith('spool-'));
      appendFileSync(join(spoolDir, file!), 'not json {\n');
      const collector = await startTestCollector(pki, tmp.dir);
      const second = make(collector.url);
      try {
        for (let i = 3; i < 6; i++) await second.record(decision(i));
        const end = Date.now() + 10_000;
        while (second.metrics().delivered < 6 && Date.now() < end)
          await new Promise((r) => setTimeout(r, 20));
        assert.equal(second.metrics().delivered, 6, 'the events before and after the junk are delivered');
        assert.equal(second.metrics().rejected, 1, 'the junk line alone is set aside');
      } finally {
        await second.close();
        await collector.close();
      }
      const aside = readdirSync(spoolDir).filter((n) => n.startsWith('rejected-'));
      assert.equal(aside.length, 1);
      const kept = JSON.parse(readFileSync(join(spoolDir, aside[0]!), 'utf8')) as {
        why: string;
        body: unknown;
      };
      assert.match(kept.why, /^400 ERR_AUDIT_BAD_REQUEST/);
      assert.match(JSON.stringify(kept.body), /not json \{/);
      assert.deepEqual(
        await loggedActions(tmp.dir),
        Array.from({ length: 6 }, (_, i) => `GET /orders/${i}`),
      );
    } finally {
      tmp.cleanup();
    }
  },
);

test(
  'client: a second process on a spool directory in use is refused with ERR_AUDIT_SPOOL_LOCKED naming the holder; once the holder is SIGKILLed the next one takes over and delivers everything once',
  { timeout: 30_000 },
  async () => {
    const tmp = tempDir();
    const spoolDir = join(tmp.dir, 'spool');
    const web = pki.leaf('web');
    const child = spawn(
      process.execPath,
      [CHILD, spoolDir, 'closed', '1', web.certFile, web.keyFile, pki.rootFile, '20'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const exited = new Promise((r) => child.on('exit', r));
    try {
      let out = '';
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`child too slow: ${out}`)), 20_000);
        child.stdout.on('data', (c: Buffer) => {
          out += c.toString();
          if (out.includes('done\n')) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      const spoolFiles = () => readdirSync(spoolDir).filter((n) => n.startsWith('spool-'));
      const before = spoolFiles().map((n) => readFileSync(join(spoolDir, n), 'utf8'));
      await assert.rejects(Spool.open(spoolDir, 1_000_000), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_AUDIT_SPOOL_LOCKED');
        assert.match(err.message, new RegExp(`process ${child.pid}\\b`));
        return true;
      });
      const second = createAuditClient({
        url: 'https://127.0.0.1:1',
        collectorId: 'spiffe://example.org/ns/portcullis/sa/audit',
        tls: { cert: web.certFile, key: web.keyFile, trustBundle: pki.rootFile },
        spoolDir,
        spoolMaxBytes: 1_000_000,
        failMode: 'closed',
        logger: createLogger({ name: 'second', level: 'silent' }),
      });
      await assert.rejects(second.record(decision(99)), { code: 'ERR_AUDIT_SPOOL_LOCKED' });
      await second.close();
      assert.deepEqual(
        spoolFiles().map((n) => readFileSync(join(spoolDir, n), 'utf8')),
        before,
        'the refused process wrote nothing',
      );
      child.kill('SIGKILL');
      await exited;
      const collector = await startTestCollector(pki, tmp.dir);
      const { metrics } = await restart(collector.url, spoolDir, 'closed');
      await collector.close();
      assert.equal(metrics.delivered, 20);
      assert.deepEqual(
        await loggedActions(tmp.dir),
        Array.from({ length: 20 }, (_, i) => `GET /orders/${i}`),
      );
    } finally {
      child.kill('SIGKILL');
      await exited;
      tmp.cleanup();
    }
  },
);

test(
  'client: in failMode closed, a disk that fills during a spool write (a file-size limit stands for ENOSPC) never has record() resolve for an event that is not whole on disk',
  { timeout: 30_000 },
  async () => {
    const tmp = tempDir();
    const spoolDir = join(tmp.dir, 'spool');
    const web = pki.leaf('web');
    try {
      // The child may write files of at most 40 KiB; it records until the spool refuses.
      const child = spawn(
        'bash',
        [
          '-c',
          'ulimit -f 40 && exec "$0" "$@"',
          process.execPath,
          CHILD,
          spoolDir,
          'closed',
          '1',
          web.certFile,
          web.keyFile,
          pki.rootFile,
          '2000',
        ],
        { stdio: ['ignore', 'pipe', 'ignore'] },
      );
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await new Promise((r) => child.on('exit', r));
      clearTimeout(timer);
      const durable = out
        .split('\n')
        .filter((l) => l.startsWith('durable '))
        .map((l) => `GET /orders/${l.slice(8)}`);
      assert.ok(durable.length > 50, `${durable.length} events recorded before the disk filled`);
      assert.ok(!out.includes('done'), 'the spool refused before the end');
      const onDisk = new Set<string>();
      for (const name of readdirSync(spoolDir).filter((n) => n.startsWith('spool-'))) {
        const text = readFileSync(join(spoolDir, name), 'utf8');
        for (const line of text.slice(0, text.lastIndexOf('\n') + 1).split('\n')) {
          try {
            onDisk.add((JSON.parse(line) as { action: string }).action);
          } catch {
            // a torn or glued line holds no whole event
          }
        }
        // The failed write was cut off: the file ends on a whole line.
        assert.ok(text === '' || text.endsWith('\n'), `${name} ends with a torn line`);
      }
      assert.deepEqual(
        durable.filter((a) => !onDisk.has(a)),
        [],
      );
    } finally {
      tmp.cleanup();
    }
  },
);
