// Issue #18's console: `portcullis console` as an operator runs it, against a real collector fed
// by a real mesh (STS, two sidecars, two apps), driven by a real headless Chromium (Debian's
// `chromium`, through playwright-core). Screenshots are kept under test-artifacts/console/.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { get as httpGet } from 'node:http';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import type { BrowserContext, Page } from 'playwright-core';
import { createAuditClient, startCollector } from '../../audit/index.ts';
import { certIssuedEvent } from '../../ca/index.ts';
import { createStsAdminClient } from '../../sts/index.ts';
import type { AuditClient, RunningCollector } from '../../audit/index.ts';
import { call as callCollector, collectorConfig, quiet, workloadAgent } from '../audit/collector-harness.ts';
import type { TestPki } from '../helpers/pki.ts';
import { ORDERS, STS_ID, WEB, startMesh, viaProxy } from './mesh.ts';
import type { Mesh } from './mesh.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const CLI = join(ROOT, 'cli/portcullis.ts');
const ARTIFACTS = join(ROOT, 'test-artifacts', 'console');
const COLLECTOR_ID = 'spiffe://example.org/ns/portcullis/sa/audit';
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// The proposed orders policy of the replay page: reads of one order flip to denied, placing
// orders flips to allowed (the same change as test/e2e/policy-replay.test.ts).
const PROPOSED = `service: ${ORDERS}
mode: enforce
roles:
  storefront: [${WEB}]
rules:
  - id: storefront-lists-orders
    role: storefront
    methods: [GET]
    paths: [/orders]
  - id: storefront-places-orders
    role: storefront
    methods: [POST]
    paths: [/orders]
`;

const work = mkdtempSync(join(tmpdir(), 'portcullis-console-'));
let mesh: Mesh;
let collector: RunningCollector;
let pki: TestPki;
const clients: AuditClient[] = [];
let child: ChildProcess;
let loginUrl: string;
let base: string;

async function call(method: string, path: string, status: number): Promise<void> {
  const res = await viaProxy(mesh.web.outbound!.port, method, `http://orders.shop.internal${path}`);
  assert.equal(res.status, status, `${method} ${path}: ${res.body}`);
}

/** Starts `portcullis console --context DIR` and resolves with the URL it prints. */
function startConsoleProcess(contextDir: string): Promise<{ child: ChildProcess; url: string }> {
  const c = spawn(process.execPath, [CLI, 'console', '--context', contextDir], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`console not ready in 20 s: ${out} ${err}`)), 20_000);
    c.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /(http:\/\/127\.0\.0\.1:\d+\/)\?token=[A-Za-z0-9_-]{43}/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child: c, url: m[0] });
      }
    });
    c.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`portcullis console exited ${code}: ${out} ${err}`));
    });
  });
}

before(async () => {
  mesh = await startMesh({
    async audit(p, dir) {
      pki = p;
      // Checkpoints every few records, so that a record's inclusion proof is soon available.
      collector = await startCollector(
        collectorConfig(p, work, { checkpoint: { everyRecords: 5, interval: '1s' } }),
        { logger: quiet },
      );
      const client = (name: string) => {
        const c = createAuditClient({
          url: collector.url,
          collectorId: COLLECTOR_ID,
          tls: { cert: p.leaf(name).certFile, key: p.leaf(name).keyFile, trustBundle: p.rootFile },
          spoolDir: join(dir, 'spool', name),
          spoolMaxBytes: 10_000_000,
          failMode: 'closed',
          batchIntervalMs: 20,
          logger: quiet,
        });
        clients.push(c);
        return c;
      };
      return { sts: client('sts'), web: client('web'), orders: client('orders') };
    },
  });
  for (let i = 0; i < 3; i++) await call('GET', '/orders', 200);
  await call('GET', '/orders/1', 200);
  await call('POST', '/orders', 403);
  // A signing key rotation through the STS admin API (the new key's admin.key_created event; it
  // becomes current, key.rotated, after the publication lead), and a certificate
  // issuance recorded by the STS's audit client (the cert.issued event of online enrolment).
  const admin = createStsAdminClient({
    url: mesh.sts.url,
    cert: pki.leaf('admin-console').certPem,
    key: pki.leaf('admin-console').keyPem,
    ca: pki.rootPem,
  });
  await admin.rotate();
  await admin.close();
  const [stsClient] = clients;
  await stsClient!.record(
    certIssuedEvent({
      certPem: pki.leaf('web').certPem,
      workload: 'web',
      auth: 'join-token',
      action: 'est.simpleenroll',
      time: new Date(),
    }),
  );
  for (const c of clients) await c.flush();
  // A fourth source in trouble: the admin console's client reports a spool that lost track of
  // events and cannot deliver (a real report, over mTLS, as its own identity).
  const troubled = workloadAgent(pki, pki.leaf('admin-console'));
  const reported = await callCollector(troubled, `${collector.url}/v1/sources/report`, {
    method: 'POST',
    body: {
      pending: 40,
      pendingBytes: 12_000,
      oldestPendingMs: 95_000,
      missing: 2,
      lost: 0,
      state: 'retrying',
      intervalMs: 30_000,
    },
  });
  assert.equal(reported.status, 200, reported.text);
  await troubled.close();

  // The context `portcullis up` would write, naming this collector and the audit-reader identity.
  const ctx = join(work, 'context');
  mkdirSync(ctx);
  writeFileSync(join(ctx, 'checkpoint.vkey'), `${collector.verifierKey}\n`);
  const reader = pki.leaf('security-console');
  writeFileSync(
    join(ctx, 'context.yaml'),
    `trustDomain: example.org
trustBundle: ${pki.rootFile}
sts: { url: '${mesh.sts.url}', spiffeId: '${STS_ID}' }
collector: { url: '${collector.url}', spiffeId: '${COLLECTOR_ID}', verifierKey: checkpoint.vkey }
operators:
  auditReader: { cert: ${reader.certFile}, key: ${reader.keyFile} }
`,
  );
  const started = await startConsoleProcess(ctx);
  child = started.child;
  loginUrl = started.url;
  base = new URL('/', loginUrl).href;
});

after(async () => {
  if (child && child.exitCode === null) {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }
  for (const c of clients) await c.close().catch(() => {});
  await mesh?.close();
  await collector?.close();
  rmSync(work, { recursive: true, force: true });
});

test('the session secret guards every page and API route; Host and Origin are checked', async () => {
  const get = (path: string, headers: Record<string, string> = {}) =>
    fetch(new URL(path, base), { headers, redirect: 'manual' });
  const secret = new URL(loginUrl).searchParams.get('token')!;

  for (const path of ['/', '/api/events', '/api/status', '/app/app.js', '/vendor/uPlot.esm.js']) {
    const res = await get(path);
    assert.equal(res.status, 401, `${path} without a session`);
    assert.match(await res.text(), /no session/);
  }
  const port = new URL(base).port;
  const wrongCookie = await get('/api/events', { cookie: `portcullis_console_${port}=not-the-secret` });
  assert.equal(wrongCookie.status, 403);
  assert.equal((await wrongCookie.json()).error, 'ERR_CONSOLE_SESSION');
  assert.equal((await get('/?token=not-the-secret')).status, 403);

  const login = await get(`/?token=${secret}`);
  assert.equal(login.status, 303);
  assert.equal(login.headers.get('location'), '/');
  const setCookie = login.headers.get('set-cookie')!;
  assert.match(setCookie, new RegExp(`^portcullis_console_${port}=${secret};`));
  assert.match(setCookie, /HttpOnly/);
  assert.match(setCookie, /SameSite=Strict/);
  const cookie = setCookie.split(';')[0]!;
  const ok = await get('/api/events?order=desc&limit=2', { cookie });
  assert.equal(ok.status, 200, await ok.clone().text());
  assert.equal(ok.headers.get('cache-control'), 'no-store');
  const first = (await ok.json()) as { records: { seq: number }[]; next: string | null };
  assert.equal(first.records.length, 2);
  // Paging newest first: the collector's cursor, passed back through the console.
  const older = await get(`/api/events?order=desc&limit=2&cursor=${encodeURIComponent(first.next!)}`, {
    cookie,
  });
  const second = (await older.json()) as { records: { seq: number }[] };
  assert.equal(second.records.length, 2);
  assert.ok(second.records[0]!.seq < first.records[1]!.seq, 'the next page is older');

  // DNS rebinding: the right cookie under another name is still refused.
  // (fetch() sends its own Host, so this one goes through node:http.)
  const rebound = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = httpGet(
      new URL('/api/events', base),
      { headers: { cookie, host: `evil.example:${port}` } },
      (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      },
    );
    req.on('error', reject);
  });
  assert.equal(rebound.status, 403);
  assert.match(rebound.body, /ERR_CONSOLE_HOST/);
  assert.equal((await get('/api/events', { cookie, origin: 'http://evil.example' })).status, 403);
  // A POST needs an Origin of this console.
  const post = await fetch(new URL('/api/replay', base), {
    method: 'POST',
    headers: { cookie, 'content-type': 'application/json' },
    body: JSON.stringify({ service: ORDERS, policy: PROPOSED }),
  });
  assert.equal(post.status, 403);
  // Bad input: a clear 4xx with a message, never a stack trace.
  const unknown = await get('/api/events?fromSeqq=1', { cookie });
  assert.equal(unknown.status, 400);
  assert.match((await unknown.json()).message, /unknown parameter "fromSeqq"/);
  const badPolicy = await fetch(new URL('/api/replay', base), {
    method: 'POST',
    headers: { cookie, 'content-type': 'application/json', origin: base.replace(/\/$/, '') },
    body: JSON.stringify({ service: ORDERS, policy: 'service: [' }),
  });
  assert.equal(badPolicy.status, 400);
  const body = (await badPolicy.json()) as { message: string };
  assert.match(body.message, /proposed policy/);
  assert.doesNotMatch(body.message, /\n\s+at /);
});

test('a non-loopback address is refused before anything listens', async () => {
  const refused = (host: string) =>
    new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const c = spawn(process.execPath, [CLI, 'console', '--host', host, '--port', '0'], {
        cwd: ROOT,
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      c.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      c.once('exit', (code) => resolve({ code, stderr }));
    });
  const hosts = ['0.0.0.0', '192.0.2.1', '::'];
  for (const [i, r] of (await Promise.all(hosts.map(refused))).entries()) {
    assert.equal(r.code, 2, `${hosts[i]}: ${r.stderr}`);
    assert.match(r.stderr, /not a loopback address/);
  }
});

test(
  'in Chromium: the pages load without errors, filters narrow, the live tail shows a new denial within 2 s, the service graph shows web → orders',
  { timeout: 120_000 },
  async (t) => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (see .ci/run)`);
    mkdirSync(ARTIFACTS, { recursive: true });
    const profile = mkdtempSync(join(tmpdir(), 'portcullis-chromium-'));
    let browser: BrowserContext | undefined;
    const problems: string[] = [];
    try {
      browser = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        args: CHROMIUM_FLAGS,
        viewport: { width: 1280, height: 900 },
      });
      const page: Page = await browser.newPage();
      page.on('console', (msg) => {
        if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
      });
      page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
      const shot = (name: string) =>
        page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
      const rows = () => page.locator('#events tbody tr');

      // The audit log, newest first.
      await page.goto(loginUrl);
      assert.equal(new URL(page.url()).search, '', 'the secret leaves the address bar');
      await page.waitForSelector('#events tbody tr');
      const all = await rows().count();
      const seqs = await rows().evaluateAll((trs) =>
        trs.map((tr) => Number((tr as HTMLElement).dataset.seq)),
      );
      assert.deepEqual(
        seqs,
        [...seqs].sort((a, b) => b - a),
        'newest first',
      );
      await shot('audit-log');

      // Filtering narrows the table: only the denial is left.
      await page.selectOption('#filters select[name=decision]', 'deny');
      await page.fill('#filters input[name=type]', 'authz.decision');
      const loaded = await page.evaluate(() => document.body.dataset.eventsLoaded);
      await page.click('#filters button[type=submit]');
      await page.waitForFunction((before) => document.body.dataset.eventsLoaded !== before, loaded);
      const decisions = await rows().evaluateAll((trs) =>
        trs.map((tr) => (tr as HTMLElement).dataset.decision),
      );
      assert.ok(decisions.length >= 1 && decisions.length < all, `${decisions.length} of ${all}`);
      assert.ok(
        decisions.every((d) => d === 'deny'),
        decisions.join(),
      );
      await shot('audit-log-denials');

      // Live tail: a denial made now shows up within 2 s.
      await page.check('#tail');
      await page.waitForFunction(() => document.querySelector('#tail-state')?.textContent === 'live');
      const t0 = performance.now();
      await call('DELETE', '/orders/9', 403);
      await page.waitForSelector('#events tbody tr.live', { timeout: 2_000 });
      const shownAfterMs = performance.now() - t0;
      const live = page.locator('#events tbody tr.live').first();
      assert.match(await live.innerText(), /DELETE \/orders\/9/);
      assert.ok(shownAfterMs < 2_000, `shown after ${shownAfterMs} ms`);
      t.diagnostic(`live tail: the denial was on the page ${Math.round(shownAfterMs)} ms after the call`);
      await shot('live-tail');
      await page.uncheck('#tail');

      // An event's detail: its inclusion proof, checked against the latest signed checkpoint.
      await rows().last().click();
      await page.waitForFunction(
        () => /Included|newer than/.test(document.querySelector('#proof-result')?.textContent ?? ''),
        undefined,
        { timeout: 10_000 },
      );
      assert.match(await page.locator('#proof-result').innerText(), /Included: the inclusion proof/);
      await shot('event-detail');

      // The service graph: the web → orders edge with its volume and deny rate.
      await page.goto(new URL('/#graph', base).href);
      const edge = page.locator('#edges tbody tr[data-caller=web][data-service=orders]');
      await edge.waitFor();
      const cells = await edge.locator('td').allInnerTexts();
      assert.equal(cells[0], 'web');
      assert.equal(cells[1], 'orders');
      assert.ok(Number(cells[2]) >= 6, `calls ${cells[2]}`);
      assert.ok(Number(cells[3]) >= 2, `denied ${cells[3]}`);
      assert.match((await page.locator('#graph').getAttribute('data-edges')) ?? '', /web->orders/);
      await page.waitForSelector('#graph canvas');
      await shot('service-graph');

      // Integrity, decisions over time, certificates and keys.
      await page.goto(new URL('/#integrity', base).href);
      await page.waitForFunction(() =>
        /signature verified/.test(document.querySelector('#integrity')?.textContent ?? ''),
      );
      // Consistency: once the collector has signed another checkpoint (every second here), the
      // console checks the proof that the latest extends the one it saw before.
      const integrity = () => page.locator('#integrity').innerText();
      for (let i = 0; i < 20 && !/extends the previous one/.test(await integrity()); i++) {
        await new Promise((r) => setTimeout(r, 300));
        await page.click('#integrity-refresh');
        await page.waitForLoadState('networkidle');
      }
      assert.match(await integrity(), /extends the previous one \(size \d+\): proof of \d+ hashes checked/);
      assert.match(await integrity(), /chain\.ok\s+true/);
      // The audit clients' spools (decision 0096): the mesh's three clients are healthy, the
      // troubled source is highlighted with its reasons.
      await page.waitForSelector('#sources tbody tr[data-source$="/sa/admin-console"]');
      const spoolRow = (name: string) => page.locator(`#sources tbody tr[data-source$="/sa/${name}"]`);
      for (const name of ['sts', 'web', 'orders']) {
        const cells = await spoolRow(name).locator('td').allInnerTexts();
        assert.deepEqual(
          [cells[0], cells[2], cells[4], cells[5], cells[6], cells[7]],
          [name, '0', '0', '0', 'idle', 'ok'],
          `${name}: ${cells.join(' | ')}`,
        );
        assert.equal(await spoolRow(name).getAttribute('class'), null);
      }
      const troubled = await spoolRow('admin-console').locator('td').allInnerTexts();
      assert.deepEqual(
        [troubled[0], troubled[2], troubled[3], troubled[4], troubled[6], troubled[7]],
        ['admin-console', '40', '1 min', '2', 'retrying', '2 missing, spool retrying'],
        troubled.join(' | '),
      );
      assert.equal(await spoolRow('admin-console').getAttribute('class'), 'attention');
      assert.match(await page.locator('#sources-note').innerText(), /4 source\(s\) heard from/);
      await shot('integrity');
      await page.goto(new URL('/#decisions', base).href);
      await page.waitForSelector('#chart-source canvas');
      await page.waitForSelector('#decision-totals tbody tr');
      await shot('decisions');
      await page.goto(new URL('/#identity', base).href);
      await page.waitForSelector('#certs tbody tr');
      await page.waitForSelector('#keys tbody tr');
      await page.waitForSelector('#chart-certs canvas');
      assert.match(
        await page.locator('#certs tbody tr').first().innerText(),
        /spiffe:\/\/example\.org\/ns\/shop\/sa\/web/,
      );
      await page.waitForLoadState('networkidle');
      await shot('certificates-and-keys');

      // Policy replay as a page: the flips of the proposed policy.
      await page.goto(new URL('/#replay', base).href);
      await page.waitForSelector(`#replay-form select[name=service] option[value="${ORDERS}"]`, {
        state: 'attached',
      });
      await page.selectOption('#replay-form select[name=service]', ORDERS);
      await page.selectOption('#replay-form select[name=since]', '');
      await page.fill('#replay-form textarea', PROPOSED);
      await page.click('#replay-form button[type=submit]');
      await page.waitForSelector('#replay-groups tbody tr');
      const flips = await page.locator('#replay-groups tbody tr').allInnerTexts();
      assert.equal(flips.length, 2, flips.join('\n'));
      assert.ok(
        flips.some((f) => /denied→allowed\s+1\s+web\s+POST\s+\/orders/.test(f)),
        flips.join('\n'),
      );
      assert.ok(
        flips.some((f) => /allowed→denied\s+1\s+web\s+GET\s+\/orders\/1/.test(f)),
        flips.join('\n'),
      );
      await shot('policy-replay');

      assert.deepEqual(problems, [], 'no console errors');
    } finally {
      await browser?.close();
      rmSync(profile, { recursive: true, force: true });
    }
  },
);

test('SIGTERM (Ctrl-C) stops the console with exit 0', async () => {
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
});
