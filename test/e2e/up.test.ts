// `portcullis up` as a newcomer runs it: start, paste the banner's three commands, Ctrl-C, start again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = new URL('../../', import.meta.url).pathname;
const CLI = join(ROOT, 'cli/portcullis.ts');
// Fixed ports below the kernel's ephemeral range (32768+), where port-0 listeners of other tests live.
const OFFSET = '10000';

/** Starts `portcullis up` and resolves with its banner once it is ready (or rejects after 30 s). */
function up(dataDir: string): Promise<{ child: ChildProcess; banner: string }> {
  const child = spawn(process.execPath, [CLI, 'up', '--data-dir', dataDir, '--port-offset', OFFSET], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
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

function stop(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.kill('SIGINT');
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
      child?.kill('SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
    }
  },
);
