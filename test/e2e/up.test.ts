// `portcullis up` as a newcomer runs it: start, paste the banner's three commands, Ctrl-C, start again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = new URL('../../', import.meta.url).pathname;
const CLI = join(ROOT, 'cli/portcullis.ts');
// Fixed ports below the kernel's ephemeral range (32768+), where port-0 listeners of other tests live.
const OFFSET = '10000';

/** Starts `portcullis up` and resolves with its banner once it is ready (or rejects after 30 s). */
function up(
  dataDir: string,
  env: Record<string, string> = {},
): Promise<{ child: ChildProcess; banner: string }> {
  // `npm start` as a newcomer types it, in a process group of its own as a terminal's foreground job.
  const child = spawn('npm', ['start', '--', '--data-dir', dataDir, '--port-offset', OFFSET], {
    cwd: ROOT,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let out = '';
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      process.kill(-child.pid!, 'SIGKILL');
      reject(new Error(`mesh not ready within 30 s\nstdout: ${out}\nstderr: ${err}`));
    }, 30_000);
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('Ctrl-C stops the mesh')) {
        clearTimeout(timer);
        resolve({ child, banner: out });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`portcullis up exited ${code}\nstdout: ${out}\nstderr: ${err}`));
    });
  });
}

/** The numbered commands of the banner, continuation lines joined. */
function bannerCommands(banner: string): string[] {
  const joined = banner.replace(/\\\n\s*/g, '');
  return [...joined.matchAll(/^\s+(curl .+|npm run -s portcullis -- .+)$/gm)].map((m) => m[1]!.trim());
}

/** Runs one banner command the way a shell would, with `npm run -s portcullis --` as our CLI. */
function runCommand(cmd: string) {
  const words = cmd.split(/\s+/);
  const [bin, args] =
    words[0] === 'curl' ? ['curl', words.slice(1)] : [process.execPath, [CLI, ...words.slice(5)]];
  const r = spawnSync(bin, args as string[], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Ctrl-C: SIGINT to every process of the job (npm and node), as a terminal sends it. */
function stop(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve(code));
    process.kill(-child.pid!, 'SIGINT');
  });
}

test(
  'portcullis up: ready within 30 s, the banner commands work, Ctrl-C exits 0 and nothing is lost',
  { timeout: 150_000 },
  async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'portcullis-up-'));
    let child: ChildProcess | undefined;
    try {
      const first = await up(dataDir);
      child = first.child;
      const commands = bannerCommands(first.banner);
      assert.equal(commands.length, 4, first.banner);
      const [call, query, verify, denied] = commands as [string, string, string, string];

      const answer = runCommand(call);
      assert.equal(answer.code, 0, answer.stderr);
      const body = JSON.parse(answer.stdout);
      assert.equal(body.service, 'orders');
      assert.equal(body.caller, 'spiffe://example.org/ns/shop/sa/web');
      assert.match(runCommand(denied).stdout, /ERR_SIDECAR_POLICY_DENIED/);

      // The call's decision reaches the collector within a loss window; allow a few seconds. orders
      // runs failMode closed: its decision is recorded before the call (no status), the answer's
      // status in an authz.response record.
      const rowsOf = async (command: string, want: RegExp) => {
        let rows = '';
        for (let i = 0; i < 50 && !want.test(rows); i++) {
          await new Promise((r) => setTimeout(r, 100));
          const q = runCommand(command);
          assert.equal(q.code, 0, q.stderr);
          rows = q.stdout;
        }
        return rows;
      };
      const decided =
        /authz\.decision\s+spiffe:\/\/example\.org\/ns\/shop\/sa\/orders\s+spiffe:\/\/example\.org\/ns\/shop\/sa\/web\s+allow\s+-\s+GET \/orders\/1/;
      assert.match(await rowsOf(query, decided), decided);
      const answered =
        /authz\.response\s+spiffe:\/\/example\.org\/ns\/shop\/sa\/orders\s+spiffe:\/\/example\.org\/ns\/shop\/sa\/web\s+allow\s+200\s+GET \/orders\/1/;
      const responses = query.replace('--type authz.decision', '--type authz.response');
      assert.match(await rowsOf(responses, answered), answered);

      const v = runCommand(verify);
      assert.equal(v.code, 0, v.stderr);
      assert.match(v.stdout, /^intact: \d+ records/);

      // Every admin command finds the mesh through the context up wrote: no flags.
      const keys = spawnSync(process.execPath, [CLI, 'keys', 'list'], {
        cwd: ROOT,
        encoding: 'utf8',
        timeout: 30_000,
        env: { ...process.env, PORTCULLIS_CONTEXT: dataDir },
      });
      assert.equal(keys.status, 0, keys.stderr);
      assert.match(keys.stdout, /^current\s+\S+\s+ES256/m);

      // Calls right before Ctrl-C must still be in the log after a restart.
      for (let i = 0; i < 10; i++)
        assert.equal(runCommand(call.replace('/orders/1', `/orders/late-${i}`)).code, 0);
      assert.equal(await stop(child), 0);
      child = undefined;

      const second = await up(dataDir);
      child = second.child;
      assert.match(second.banner, /certificates: reusing/);
      const after = runCommand(
        `npm run -s portcullis -- audit query --store file:${join(dataDir, 'audit', 'log')} --type authz.decision --limit 1000 --json`,
      );
      assert.equal(after.code, 0, after.stderr);
      const actions = after.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).event.action);
      for (let i = 0; i < 10; i++) assert.ok(actions.includes(`GET /orders/late-${i}`), `late-${i} lost`);
      assert.equal(runCommand(verify).code, 0);
      assert.equal(await stop(child), 0);
      child = undefined;
    } finally {
      if (child?.exitCode === null) process.kill(-child.pid!, 'SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
    }
  },
);

test(
  "portcullis up exports each part's spans under its own service name (OTLP)",
  { timeout: 60_000 },
  async () => {
    // A real OTLP/HTTP receiver (JSON encoding, to read the resource attributes back).
    const services = new Set<string>();
    const receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
          resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] } }[];
        };
        for (const rs of body.resourceSpans)
          for (const a of rs.resource.attributes)
            if (a.key === 'service.name') services.add(a.value.stringValue!);
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const dataDir = mkdtempSync(join(tmpdir(), 'portcullis-up-otel-'));
    let child: ChildProcess | undefined;
    try {
      const started = await up(dataDir, {
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`,
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      });
      child = started.child;
      // web's app calls orders through both sidecars (the sidecar fetches a token from the STS).
      const webApp = /web\s+app (http:\/\/127\.0\.0\.1:\d+)/.exec(started.banner)![1]!;
      const r = spawnSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `${webApp}/orders/1`], {
        encoding: 'utf8',
        timeout: 10_000,
      });
      assert.equal(r.stdout, '200');
      assert.equal(await stop(child), 0, 'Ctrl-C flushes the spans and exits 0');
      child = undefined;
      assert.deepEqual([...services].sort(), [
        'orders',
        'orders-sidecar',
        'portcullis-sts',
        'web',
        'web-sidecar',
      ]);
    } finally {
      if (child?.exitCode === null) process.kill(-child.pid!, 'SIGKILL');
      receiver.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  },
);
