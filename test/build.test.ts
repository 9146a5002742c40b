// The build's trims (scripts/build.ts, decision 0100): what `npm run build` leaves out of the
// bundles must stay out, and what replaces it must behave as the package it stands for.
// `npm test` builds first; run alone, the tests on dist/ need `npm run build`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = new URL('../', import.meta.url).pathname;
const node = (args: string[]) =>
  spawnSync(process.execPath, args, { encoding: 'utf8', cwd: ROOT, timeout: 30_000 });

test("the built sidecar command loads neither undici's web parts nor Node's own undici", () => {
  const check = node(['scripts/build.ts', '--check']);
  assert.equal(check.status, 0, `dist/ is not a build of these sources (npm run build): ${check.stderr}`);
  const probe = [
    "await import('./dist/cli/commands/sidecar.js');",
    'console.log(JSON.stringify(process.moduleLoadList.filter((m) => /undici/.test(m))));',
  ].join('\n');
  const r = node(['--input-type=module', '-e', probe]);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), []);
  // The same probe on the sources shows what the build avoids (and that the probe can see it).
  const src = node([
    '--input-type=module',
    '-e',
    probe.replace('./dist/cli/commands/sidecar.js', './cli/commands/sidecar.ts'),
  ]);
  assert.equal(src.status, 0, src.stderr);
  assert.deepEqual(JSON.parse(src.stdout), ['NativeModule internal/deps/undici/undici']);
});

test('a config error reads the same from the built CLI as from the sources (zod keeps its English messages)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-build-'));
  try {
    const file = join(dir, 'sidecar.yaml');
    writeFileSync(file, 'service: 5\ntrustDomain: example.org\n');
    const built = node(['dist/cli/portcullis.js', 'sidecar', '--config', file]);
    const sources = node(['cli/portcullis.ts', 'sidecar', '--config', file]);
    assert.equal(built.status, 1);
    assert.match(built.stderr, /^portcullis: .*sidecar\.yaml: service: .+ \[ERR_CONFIG_INVALID\]\n$/);
    assert.equal(built.stderr, sources.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// Run in a process of its own that loads the lean module alone, as the bundles do: test/ imports
// nothing of scripts/, and the full package must not be there to add the request API for it.
test("scripts/undici-lean.mjs's request() sends what undici's does, its dispatchers stream, and a call without a dispatcher is refused", () => {
  const probe = `
    import { createServer } from 'node:http';
    import { Writable } from 'node:stream';
    import { Agent, Pool, request } from './scripts/undici-lean.mjs';
    const seen = [];
    const server = createServer((req, res) => {
      seen.push(req.method + ' ' + req.url);
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = 'http://127.0.0.1:' + server.address().port;
    const dispatcher = new Agent();
    const get = await request(new URL('/a/b?x=1&y=2', base), { dispatcher });
    const text = await get.body.text();
    await (await request(base + '/c', { dispatcher, method: 'POST', body: 'x' })).body.dump();
    await (await request(base + '/d', { dispatcher, body: 'x' })).body.dump();
    let refusal;
    try { request(base + '/e', {}); } catch (err) { refusal = err.name + ': ' + err.message; }
    // The sidecar forwards with Pool.stream(), which undici's index puts on the prototype.
    const pool = new Pool(base);
    const chunks = [];
    await pool.stream({ method: 'GET', path: '/f' }, () => new Writable({ write(c, _e, cb) { chunks.push(c); cb(); } }));
    await Promise.all([dispatcher.close(), pool.close()]);
    server.close();
    console.log(JSON.stringify({ status: get.statusCode, text, streamed: Buffer.concat(chunks).toString(), seen, refusal }));
  `;
  const r = node(['--input-type=module', '-e', probe]);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), {
    status: 200,
    text: 'ok',
    streamed: 'ok',
    seen: ['GET /a/b?x=1&y=2', 'POST /c', 'PUT /d', 'GET /f'],
    refusal: 'InvalidArgumentError: request() needs options.dispatcher',
  });
});

test("the built CLI keeps V8's compile cache: written at exit, accepted on the next start, refused when damaged, none with PORTCULLIS_COMPILE_CACHE=off", () => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-cache-'));
  const run = (env: Record<string, string>) =>
    spawnSync(process.execPath, ['dist/cli/portcullis.js', 'keys', '--help'], {
      encoding: 'utf8',
      cwd: ROOT,
      timeout: 30_000,
      env: { ...process.env, NODE_DEBUG_NATIVE: 'COMPILE_CACHE', ...env },
    });
  const cacheFiles = () =>
    readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name));
  try {
    const off = run({ PORTCULLIS_COMPILE_CACHE: 'off' });
    assert.equal(off.status, 0, off.stderr);
    assert.doesNotMatch(off.stderr, /compile cache/);
    assert.deepEqual(cacheFiles(), []);

    const first = run({ PORTCULLIS_COMPILE_CACHE: dir });
    assert.equal(first.status, 0, first.stderr);
    assert.match(first.stderr, /writing cache for ESM file:\/\/\S+\/dist\/cli\/commands\/keys\.js .*success/);
    const [file, ...others] = cacheFiles();
    assert.ok(file, 'a cache file was written');
    assert.deepEqual(others, []);

    const second = run({ PORTCULLIS_COMPILE_CACHE: dir });
    assert.equal(second.status, 0, second.stderr);
    assert.match(
      second.stderr,
      /code cache for ESM file:\/\/\S+\/dist\/cli\/commands\/keys\.js was accepted/,
    );
    assert.equal(second.stdout, first.stdout);

    // A damaged entry (a flipped byte past the header) is refused and compiled afresh, same output.
    const bytes = readFileSync(file);
    bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0xff;
    writeFileSync(file, bytes);
    const damaged = run({ PORTCULLIS_COMPILE_CACHE: dir });
    assert.equal(damaged.status, 0, damaged.stderr);
    assert.match(damaged.stderr, /keys\.js\.\.\.\[[\d ]+\]\.\.\.cache hash mismatch/);
    assert.doesNotMatch(damaged.stderr, /keys\.js was accepted/);
    assert.equal(damaged.stdout, first.stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the built CLI runs without the compile cache where it cannot keep one or should not trust it, and never hangs or fails for it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-cache-'));
  const run = (cache: string, cwd = ROOT, cli = 'dist/cli/portcullis.js') =>
    spawnSync(process.execPath, [join(ROOT, cli), 'keys', '--help'], {
      encoding: 'utf8',
      cwd,
      timeout: 20_000,
      env: { ...process.env, PORTCULLIS_COMPILE_CACHE: cache },
    });
  try {
    const plain = run('off');
    assert.equal(plain.status, 0, plain.stderr);
    const file = join(dir, 'a-file');
    writeFileSync(file, 'x');
    const shared = join(dir, 'shared');
    mkdirSync(shared);
    chmodSync(shared, 0o777);
    // Under /proc, mkdir answers ENOENT although the parent exists: Node's recursive mkdir, which
    // makes the cache directory, loops there for ever (the first case hung before decision 0107's
    // check); a file and a path under it are not directories; a directory others may write is not
    // trusted; a relative path from a deleted working directory cannot be resolved.
    const cases: [string, string][] = [
      ['/proc/self/no-such-dir', ROOT],
      ['/proc/self', ROOT],
      [file, ROOT],
      [join(file, 'sub'), ROOT],
      [shared, ROOT],
    ];
    for (const [cache, cwd] of cases) {
      const r = run(cache, cwd);
      assert.equal(r.status, 0, `${cache}: ${r.error?.message ?? r.stderr}`);
      assert.equal(r.stdout, plain.stdout, cache);
      assert.equal(r.stderr, '', cache);
    }
    assert.deepEqual(readdirSync(shared), [], 'nothing written where others may write');
    const gone = spawnSync(
      'sh',
      [
        '-c',
        'mkdir gone && cd gone && rmdir ../gone && exec "$0" "$1" keys --help',
        process.execPath,
        join(ROOT, 'dist/cli/portcullis.js'),
      ],
      {
        encoding: 'utf8',
        cwd: dir,
        timeout: 20_000,
        env: { ...process.env, PORTCULLIS_COMPILE_CACHE: 'relative' },
      },
    );
    assert.equal(gone.status, 0, gone.stderr);
    assert.equal(gone.stdout, plain.stdout);
    // `off` in any case, with spaces around it, is off: no directory of that name appears.
    const cwd = join(dir, 'cwd');
    mkdirSync(cwd);
    for (const off of ['OFF', ' off ', 'Off']) assert.equal(run(off, cwd).status, 0);
    assert.deepEqual(readdirSync(cwd), []);
    // A missing directory several levels down is made, private to the user, and the cache written.
    const deep = join(dir, 'a', 'b', 'c');
    assert.equal(run(deep).status, 0);
    assert.equal(readdirSync(deep, { recursive: true }).length, 2, 'one version directory, one entry');
    assert.equal(statSync(join(dir, 'a')).mode & 0o077, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the default compile cache sits beside the bundles wherever they are installed, a path with a space or a non-ASCII letter too', () => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-cache-'));
  try {
    const home = join(dir, 'sp ace', 'é');
    cpSync(join(ROOT, 'dist'), join(home, 'dist'), {
      recursive: true,
      filter: (src) => !src.includes('.compile-cache'),
    });
    const r = spawnSync(process.execPath, [join(home, 'dist/cli/portcullis.js'), 'keys', '--help'], {
      encoding: 'utf8',
      cwd: dir,
      timeout: 20_000,
      env: { ...process.env, PORTCULLIS_COMPILE_CACHE: '' },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readdirSync(join(home, 'dist/.compile-cache'), { recursive: true }).length, 2);
    assert.deepEqual(readdirSync(dir).sort(), ['sp ace'], 'no percent-encoded twin of the path');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
