// Every shell command block of README.md and docs/*.md runs as printed (issue 19): the test starts
// one mesh with `portcullis up` in a temporary working directory that looks like a checkout
// (the repository's files linked in, `.portcullis/` beside them, as after `npm start`), then runs
// each block with bash (`set -euo pipefail`) in a working directory of its own file, and fails
// on any non-zero exit. Blocks of one file run in order (later ones may use what earlier ones
// wrote); files run side by side. The mesh listens at a port offset, so the default ports the
// docs print (8443, 8444, 15001, …) are mapped to it. A block that cannot run here is preceded
// by `<!-- not-run: REASON -->`; the test lists how many were skipped and why. Every fenced block
// must name its language, so that no shell block escapes as plain text.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

const ROOT = new URL('../../', import.meta.url).pathname;
const CLI = join(ROOT, 'cli/portcullis.ts');
// Fixed ports below the kernel's ephemeral range (32768+); test/e2e/up.test.ts uses 10000.
const OFFSET = 11000;
/** `portcullis up`'s default ports (cli/commands/up.ts), as the docs print them. */
const UP_PORTS = [8443, 8444, 15443, 15444, 15001, 8081, 8082, 15091, 15090];
const SHELL = new Set(['sh', 'bash', 'shell']);
const BLOCK_TIMEOUT_MS = 90_000;

interface Block {
  readonly file: string;
  readonly line: number;
  readonly lang: string;
  readonly script: string;
  /** The reason of a `<!-- not-run: … -->` marker right before the block. */
  readonly skip?: string;
}

/** Every fenced block of `file` (relative to the repository) with its language and marker. */
function fencedBlocks(file: string, text: string): Block[] {
  const lines = text.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([^\s`]*)/.exec(lines[i]!);
    if (!open) continue;
    const [, indent, fence, lang] = open;
    const body: string[] = [];
    let j = i + 1;
    while (j < lines.length && !new RegExp(`^\\s*${fence}\\s*$`).test(lines[j]!)) {
      body.push(lines[j]!.startsWith(indent!) ? lines[j]!.slice(indent!.length) : lines[j]!);
      j++;
    }
    let k = i - 1;
    while (k >= 0 && lines[k]!.trim() === '') k--;
    const marker = k >= 0 ? /^\s*<!--\s*not-run:\s*(.+?)\s*-->\s*$/.exec(lines[k]!) : null;
    blocks.push({
      file,
      line: i + 1,
      lang: lang!,
      script: body.join('\n'),
      ...(marker ? { skip: marker[1]! } : {}),
    });
    i = j;
  }
  return blocks;
}

function docFiles(): string[] {
  return [
    'README.md',
    ...readdirSync(join(ROOT, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .sort()
      .map((f) => `docs/${f}`),
  ];
}

/** A directory that looks like a checkout: every top-level entry of the repository linked in. */
function checkoutLike(dir: string, mesh?: string): string {
  mkdirSync(dir, { recursive: true });
  const tracked = execFileSync('git', ['ls-files'], { cwd: ROOT, encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .map((f) => f.split('/')[0]!);
  for (const name of new Set([...tracked, 'node_modules'])) symlinkSync(join(ROOT, name), join(dir, name));
  if (mesh) symlinkSync(mesh, join(dir, '.portcullis'));
  return dir;
}

/** The docs' default ports, moved by the mesh's offset. */
function mapPorts(script: string): string {
  return script.replace(
    new RegExp(`\\b(127\\.0\\.0\\.1|localhost):(${UP_PORTS.join('|')})\\b`, 'g'),
    (_m, host: string, port: string) => `${host}:${Number(port) + OFFSET}`,
  );
}

function run(
  script: string,
  cwd: string,
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', ['-euo', 'pipefail', '-c', script], { cwd, env, detached: true });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const timer = setTimeout(() => {
      out += `\n[killed after ${BLOCK_TIMEOUT_MS} ms]`;
      process.kill(-child.pid!, 'SIGKILL');
    }, BLOCK_TIMEOUT_MS);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** Starts `portcullis up` in `cwd` and resolves once it prints its banner. */
function up(cwd: string): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [CLI, 'up', '--data-dir', '.portcullis', '--port-offset', String(OFFSET)],
    { cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      process.kill(-child.pid!, 'SIGKILL');
      reject(new Error(`mesh not ready within 60 s: ${out}`));
    }, 60_000);
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('Ctrl-C stops the mesh')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`portcullis up exited ${code}: ${out}`));
    });
  });
}

test('every fenced block of the docs names its language', () => {
  const bare = docFiles().flatMap((f) =>
    fencedBlocks(f, readFileSync(join(ROOT, f), 'utf8'))
      .filter((b) => b.lang === '')
      .map((b) => `${b.file}:${b.line}`),
  );
  assert.deepEqual(bare, [], 'a block without a language: sh (run by the test below), text, yaml, json…');
});

test(
  'every shell block of README.md and docs/*.md runs against a mesh from `portcullis up`',
  { timeout: 600_000 },
  async (t) => {
    const base = mkdtempSync(join(tmpdir(), 'portcullis-docs-'));
    let mesh: ChildProcess | undefined;
    try {
      const main = checkoutLike(join(base, 'main'));
      mesh = await up(main);
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        // `portcullis` (bin/, on Node 24) and `node` as a shell in the checkout has them.
        PATH: `${join(ROOT, 'bin')}:${join(ROOT, 'node_modules/.bin')}:${process.env.PATH}`,
        PORTCULLIS_CONTEXT: '',
      };
      // As a reader would, in another terminal a moment after the banner: the collector signs its
      // first checkpoint over the mesh's records within its interval (5 s under up). The docs
      // save that checkpoint and prove records against it, so the blocks start once it exists.
      for (let i = 0; ; i++) {
        const probe = await run('portcullis audit checkpoint --out "$(mktemp -u)"', main, env);
        if (probe.code === 0 && !/ at size 0 /.test(probe.out)) break;
        if (i >= 20) assert.fail(`the mesh's collector signed no checkpoint over its records: ${probe.out}`);
        await new Promise((r) => setTimeout(r, 1000));
      }
      const blocks = docFiles().flatMap((f) =>
        fencedBlocks(f, readFileSync(join(ROOT, f), 'utf8')).filter((b) => SHELL.has(b.lang)),
      );
      const skipped = blocks.filter((b) => b.skip);
      const byFile = new Map<string, Block[]>();
      for (const b of blocks.filter((x) => !x.skip)) byFile.set(b.file, [...(byFile.get(b.file) ?? []), b]);
      const failures: string[] = [];
      let ran = 0;
      // One file at a time per worker, two workers (the machine has two cores).
      const queue = [...byFile.entries()];
      const worker = async () => {
        for (let next = queue.shift(); next; next = queue.shift()) {
          const [file, list] = next;
          const cwd = checkoutLike(join(base, file.replace(/[/.]/g, '_')), join(main, '.portcullis'));
          for (const b of list) {
            const started = performance.now();
            const r = await run(mapPorts(b.script), cwd, env);
            ran++;
            t.diagnostic(
              `${b.file}:${b.line} exit ${r.code} in ${((performance.now() - started) / 1000).toFixed(1)} s`,
            );
            if (r.code !== 0) {
              failures.push(
                `${b.file}:${b.line} exit ${r.code}:\n${b.script}\n--- output:\n${r.out.slice(-3000)}`,
              );
              break; // later blocks of the file may depend on this one
            }
          }
        }
      };
      await Promise.all([worker(), worker()]);
      const reasons = new Map<string, string[]>();
      for (const b of skipped) reasons.set(b.skip!, [...(reasons.get(b.skip!) ?? []), `${b.file}:${b.line}`]);
      t.diagnostic(`ran ${ran} shell blocks; skipped ${skipped.length}:`);
      for (const [why, where] of reasons) t.diagnostic(`  ${where.length} × ${why}: ${where.join(', ')}`);
      assert.deepEqual(failures, []);
      assert.ok(ran >= 15, `only ${ran} blocks ran`);
      assert.equal(ran + skipped.length, blocks.length);
      // The mesh is still serving after everything the docs did to it, and stops cleanly.
      const stopped = new Promise<number | null>((r) => mesh!.once('exit', (code) => r(code)));
      process.kill(-mesh.pid!, 'SIGINT');
      assert.equal(await stopped, 0);
      mesh = undefined;
    } finally {
      if (mesh?.exitCode === null) process.kill(-mesh.pid!, 'SIGKILL');
      rmSync(base, { recursive: true, force: true });
    }
  },
);
