// The deployment files, checked without a Docker engine (none runs here): docker-compose.yml and the
// Dockerfile are parsed, every file, config and command they name is looked up in the repository and
// run or loaded with the real code, and the image's health probe is run against real servers.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { loadAuditConfig, parseAuditConfig, startCollector } from '../../audit/index.ts';
import { createLogger, loadRegistry } from '../../core/index.ts';
import type { Registry } from '../../core/index.ts';
import { loadSidecarConfig } from '../../sidecar/index.ts';
import type { SidecarConfig } from '../../sidecar/index.ts';
import { loadStsConfig } from '../../sts/index.ts';
import type { StsConfig } from '../../sts/index.ts';
import type { AuditConfig } from '../../audit/index.ts';

const ROOT = process.cwd();
const CLI = join(ROOT, 'cli', 'portcullis.ts');
/** The image's command: the build of the same sources (`npm run build`; `npm test` builds first). */
const BUILT_CLI = 'dist/cli/portcullis.js';
/** Where the image keeps the repository's files (Dockerfile WORKDIR). */
const APP = '/app';
/** The compose volumes' mount points: state that is not ours to find in the repository. */
const STATE = '/var/lib/portcullis';

// ───────────────────────── parsing ─────────────────────────

interface Instruction {
  readonly op: string;
  readonly args: string;
  readonly line: number;
  /** Heredoc bodies (`COPY <<'EOF' dest`), in order. */
  readonly heredocs: readonly string[];
}

/** Line-based Dockerfile parse: comments, `\` continuations and heredocs. */
function parseDockerfile(text: string): Instruction[] {
  const lines = text.split('\n');
  const out: Instruction[] = [];
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    while (line.endsWith('\\') && i + 1 < lines.length) line = `${line.slice(0, -1)} ${lines[++i]!.trim()}`;
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    assert.ok(m, `Dockerfile:${start + 1}: not an instruction: ${line}`);
    const heredocs: string[] = [];
    for (const h of m[2]!.matchAll(/<<-?(['"]?)([A-Za-z_]+)\1/g)) {
      const body: string[] = [];
      while (++i < lines.length && lines[i] !== h[2]) body.push(lines[i]!);
      assert.ok(i < lines.length, `Dockerfile:${start + 1}: heredoc ${h[2]} is not closed`);
      heredocs.push(`${body.join('\n')}\n`);
    }
    out.push({ op: m[1]!.toUpperCase(), args: m[2]!.trim(), line: start + 1, heredocs });
  }
  return out;
}

/** Exec form (`["a", "b"]`) as a list; shell form is refused, because it needs a shell as PID 1. */
function execForm(args: string, where: string): string[] {
  const parsed: unknown = JSON.parse(args.replace(/^CMD\s+/, ''));
  assert.ok(Array.isArray(parsed) && parsed.every((x) => typeof x === 'string'), `${where}: not exec form`);
  return parsed;
}

type Service = Record<string, unknown> & {
  image?: string;
  build?: unknown;
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  healthcheck?: { test?: string[]; disable?: boolean };
  depends_on?: Record<string, { condition: string }>;
  restart?: string;
  profiles?: string[];
  network_mode?: string;
};

const composeText = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8');
const compose = parseYaml(composeText, { merge: true }) as Record<string, unknown> & {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
};
const services = Object.entries(compose.services);
const dockerfile = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
const entrypoint = execForm(dockerfile.findLast((i) => i.op === 'ENTRYPOINT')!.args, 'ENTRYPOINT');
const defaultCmd = execForm(dockerfile.findLast((i) => i.op === 'CMD')!.args, 'CMD');

/** Services built from this repository's Dockerfile. */
const ours = services.filter(([, s]) => {
  const b = s.build as { context?: string; dockerfile_inline?: string } | string | undefined;
  return b === '.' || (typeof b === 'object' && b.context === '.' && !b.dockerfile_inline);
});
/** A service's command line, without Node's own flags (`node --liftoff-only dist/…` reads as `node dist/…`). */
const argvOf = (s: Service) => {
  const argv = [...(s.entrypoint ?? entrypoint), ...(s.command ?? defaultCmd)];
  if (argv[0] !== 'node') return argv;
  let i = 1;
  while (argv[i]?.startsWith('--')) i++;
  return ['node', ...argv.slice(i)];
};
const isOneShot = (s: Service) => s.restart === 'no';
const isCli = (argv: string[]) =>
  argv[0] === 'node' && (argv[1] === BUILT_CLI || argv[1] === 'cli/portcullis.ts');
const repoPath = (containerPath: string) => join(ROOT, posix.relative(APP, containerPath));
const configOf = (s: Service) => {
  const argv = argvOf(s);
  const i = argv.indexOf('--config');
  return i < 0 ? undefined : argv[i + 1];
};

function run(args: string[], timeout = 20_000) {
  return spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', timeout });
}

// Configs of the compose stack, loaded by the same loaders the commands use.
const composeConfigs = readdirSync(join(ROOT, 'config', 'compose')).filter((f) => /\.ya?ml$/.test(f));
const registry: Registry = loadRegistry(join(ROOT, 'config/compose/identities.yaml'));
const stsConfig: StsConfig = loadStsConfig(join(ROOT, 'config/compose/sts.yaml'));
const auditConfig: AuditConfig = loadAuditConfig(join(ROOT, 'config/compose/audit.yaml'));
const sidecarConfigs = new Map<string, SidecarConfig>(
  composeConfigs
    .filter((f) => f.startsWith('sidecar-'))
    .map((f) => [f, loadSidecarConfig(join(ROOT, 'config/compose', f))]),
);

// ───────────────────────── Dockerfile ─────────────────────────

describe('Dockerfile', () => {
  it('builds on the official Node 24 image: a build stage, then the image', () => {
    const from = dockerfile.filter((i) => i.op === 'FROM');
    assert.equal(from.length, 2, 'build stage and image');
    assert.match(from[0]!.args, /^node:24(\.\d+)*-[a-z]+(-slim)?\s+AS build$/);
    assert.match(from[1]!.args, /^node:24(\.\d+)*-[a-z]+(-slim)?$/);
    const build = dockerfile.filter(
      (i) => i.op === 'RUN' && dockerfile.indexOf(i) < dockerfile.indexOf(from[1]!),
    );
    assert.ok(
      build.some((i) => i.args === 'node scripts/build.ts'),
      'the build stage runs npm run build',
    );
    assert.ok(
      dockerfile.some((i) => i.op === 'COPY' && i.args === '--from=build /app/dist/ dist/'),
      'the image takes dist/ from the build stage',
    );
  });

  it('the build stage holds every file the build reads: its COPYs alone make a tree that builds', () => {
    // The build context as the build stage sees it: only what its COPY lines bring, with the
    // dependencies `npm ci` installs there (here: the checkout's node_modules).
    const image = dockerfile.findIndex((i, n) => i.op === 'FROM' && n > 0);
    const copies = dockerfile
      .slice(0, image)
      .filter((i) => i.op === 'COPY' && i.heredocs.length === 0 && !i.args.startsWith('--from='));
    const stage = mkdtempSync(join(tmpdir(), 'portcullis-build-stage-'));
    try {
      for (const c of copies) {
        const parts = c.args.split(/\s+/).filter((p) => !p.startsWith('--'));
        const dest = parts.at(-1)!;
        for (const src of parts.slice(0, -1)) {
          // As COPY does: a directory's contents into the destination; files into a destination
          // ending in '/' keep their names.
          const into =
            dest.endsWith('/') && !statSync(join(ROOT, src)).isDirectory()
              ? join(dest, posix.basename(src))
              : dest;
          cpSync(join(ROOT, src), join(stage, into), { recursive: true });
        }
      }
      symlinkSync(join(ROOT, 'node_modules'), join(stage, 'node_modules'));
      const build = dockerfile
        .slice(0, image)
        .find((i) => i.op === 'RUN' && i.args === 'node scripts/build.ts');
      assert.ok(build, 'the build stage runs node scripts/build.ts');
      const r = spawnSync(process.execPath, ['scripts/build.ts'], {
        cwd: stage,
        encoding: 'utf8',
        timeout: 120_000,
      });
      assert.equal(r.status, 0, `the build stage's build fails:\n${r.stderr}`);
      assert.ok(existsSync(join(stage, 'dist/cli/commands/sidecar.js')));
    } finally {
      rmSync(stage, { recursive: true, force: true });
    }
  });

  it('runs as the unprivileged node user, set before the entrypoint', () => {
    const users = dockerfile.filter((i) => i.op === 'USER');
    assert.equal(users.at(-1)?.args, 'node');
    const last = dockerfile.findIndex((i) => i === users.at(-1));
    assert.ok(
      dockerfile.slice(last).every((i) => i.op !== 'RUN'),
      'nothing runs as root after USER node',
    );
    for (const [name, s] of services) assert.notEqual(s.user, 'root', `${name} must not run as root`);
  });

  it('starts the built portcullis command with Node', () => {
    // --liftoff-only keeps WebAssembly on V8's baseline compiler (decision 0097).
    assert.deepEqual(entrypoint, ['node', '--liftoff-only', BUILT_CLI]);
    assert.ok(existsSync(join(ROOT, BUILT_CLI)), `${BUILT_CLI} is missing: npm run build`);
    const r = run([BUILT_CLI, ...defaultCmd]);
    assert.equal(r.status, 0, r.stderr);
  });

  it("writes V8's compile cache of every command bundle as the node user with the ENTRYPOINT's flags, then leaves it read-only", () => {
    // Node names the cache directory after the user id and the flags that change code generation
    // (--liftoff-only), so the warm-up must run as the user and with the flags of the ENTRYPOINT.
    const image = dockerfile.findIndex((i, n) => i.op === 'FROM' && n > 0);
    const stage = dockerfile.slice(image);
    const warm = stage.findIndex((i) => i.op === 'RUN' && /dist\/cli\/portcullis\.js --help\b/.test(i.args));
    assert.ok(warm > 0, 'the image runs the built CLI once to write its compile cache');
    const [nodeBin, ...warmArgs] = stage[warm]!.args.replace(/\s*>\s*\/dev\/null$/, '').split(/\s+/);
    assert.deepEqual(
      [nodeBin, ...warmArgs.slice(0, -1)],
      entrypoint,
      'the warm-up runs as the ENTRYPOINT does',
    );
    assert.equal(stage.slice(0, warm).findLast((i) => i.op === 'USER')?.args, 'node');
    const after = stage.slice(warm + 1);
    assert.ok(
      after.some(
        (i) =>
          i.op === 'RUN' && /chown -R root:root dist\/\.compile-cache/.test(i.args) && /go=rX/.test(i.args),
      ),
      'the cache is then owned by root and only readable by node',
    );
    // The same command here writes one cache entry per command bundle and the CLI itself.
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-warm-'));
    try {
      const r = spawnSync(process.execPath, [...entrypoint.slice(1), ...warmArgs.slice(-1)], {
        cwd: ROOT,
        encoding: 'utf8',
        timeout: 60_000,
        env: { ...process.env, PORTCULLIS_COMPILE_CACHE: dir, NODE_DEBUG_NATIVE: 'COMPILE_CACHE' },
      });
      assert.equal(r.status, 0, r.stderr);
      const written = new Set(
        [...r.stderr.matchAll(/writing cache for ESM \S+\/dist\/cli\/commands\/([a-z-]+)\.js /g)].map(
          (m) => m[1],
        ),
      );
      const groups = readdirSync(join(ROOT, 'dist/cli/commands')).filter((f) => f.endsWith('.js'));
      assert.deepEqual([...written].sort(), groups.map((f) => f.slice(0, -3)).sort());
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('installs from the lockfile without install scripts, production dependencies only in the image', () => {
    const runs = dockerfile.filter((i) => i.op === 'RUN').map((i) => i.args);
    const installs = runs.filter((r) => r.includes('npm '));
    assert.equal(installs.length, 2, 'npm runs in the build stage and in the image');
    // The build stage needs esbuild (a devDependency); the image only what the bundles leave external.
    assert.match(installs[1]!, /npm ci\b.*--omit=dev/);
    for (const install of installs) assert.match(install, /npm ci\b.*--ignore-scripts/);
  });

  it('copies only paths that exist and that .dockerignore lets into the build context', () => {
    const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    assert.equal(ignore[0], '*', '.dockerignore is an allow-list');
    const allowed = new Set(
      ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, '')),
    );
    for (const a of allowed)
      assert.ok(existsSync(join(ROOT, a)), `.dockerignore allows ${a}, which is missing`);
    // COPY --from=build takes the build stage's output, not the build context.
    const copies = dockerfile.filter(
      (i) => i.op === 'COPY' && i.heredocs.length === 0 && !i.args.startsWith('--from='),
    );
    assert.ok(copies.length > 0);
    for (const c of copies) {
      const parts = c.args.split(/\s+/).filter((p) => !p.startsWith('--'));
      for (const src of parts.slice(0, -1)) {
        const clean = src.replace(/\/$/, '');
        assert.ok(existsSync(join(ROOT, clean)), `Dockerfile:${c.line}: COPY ${src} does not exist`);
        assert.ok(
          allowed.has(clean),
          `Dockerfile:${c.line}: COPY ${src} is not in .dockerignore's allow-list`,
        );
      }
    }
    // Everything the command imports at run time must be in the image.
    for (const dir of ['core', 'ca', 'audit', 'sts', 'sidecar', 'cli', 'demo'])
      assert.ok(allowed.has(dir), dir);
    for (const secret of ['certs', '.portcullis', 'data', 'node_modules', 'test'])
      assert.ok(!allowed.has(secret), `${secret} must stay out of the image`);
  });

  it('declares a HEALTHCHECK that runs the probe it installs', () => {
    const hc = dockerfile.find((i) => i.op === 'HEALTHCHECK');
    assert.ok(hc);
    assert.match(hc.args, /--interval=\d+s/);
    const cmd = execForm(hc.args.replace(/^(--[a-z-]+=\S+\s+)*/, ''), 'HEALTHCHECK');
    assert.deepEqual(cmd, ['portcullis-healthcheck']);
    assert.ok(
      dockerfile.some(
        (i) =>
          i.op === 'COPY' &&
          i.heredocs.length === 1 &&
          /\/usr\/local\/bin\/portcullis-healthcheck$/.test(i.args),
      ),
    );
  });

  it('creates every volume mount point owned by node, so that new volumes are writable', () => {
    const mk = dockerfile.find((i) => i.op === 'RUN' && i.args.includes('mkdir'));
    assert.ok(mk);
    assert.match(mk.args, /chown -R node:node \/var\/lib\/portcullis/);
    for (const [name, s] of ours) {
      for (const v of s.volumes ?? []) {
        const [source, target] = v.split(':');
        if (source!.startsWith('.')) continue; // bind mounts of repository files
        assert.ok(mk.args.includes(target!), `${name}: ${target} is not created in the image`);
      }
    }
  });
});

// ───────────────────────── the health probe ─────────────────────────

describe('the image health probe (portcullis-healthcheck)', () => {
  let dir: string;
  let probe: string;
  const servers: Server[] = [];
  const listen = async (server: Server) => {
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    return (server.address() as { port: number }).port;
  };
  const check = (args: string[], env: Record<string, string> = {}) =>
    new Promise<{ status: number | null; out: string }>((resolve) => {
      const child = spawn(process.execPath, [probe, ...args], {
        env: { ...process.env, ...env },
        timeout: 10_000,
      });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      child.on('close', (status) => resolve({ status, out }));
    });

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'portcullis-deploy-'));
    const copy = dockerfile.find((i) => i.op === 'COPY' && /portcullis-healthcheck$/.test(i.args))!;
    probe = join(dir, 'portcullis-healthcheck.cjs');
    writeFileSync(probe, copy.heredocs[0]!);
  });
  after(async () => {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    rmSync(dir, { recursive: true, force: true });
  });

  it('exits 0 on 200 and 1 on any other status, a closed port or no URL at all', async () => {
    const port = await listen(
      createHttpServer((req, res) => res.writeHead(req.url === '/ok' ? 200 : 503).end()),
    );
    const closed = await listen(createHttpServer());
    await new Promise((r) => servers.pop()!.close(r));
    const cases: [string, string[], Record<string, string>, number, RegExp][] = [
      ['200', [`http://127.0.0.1:${port}/ok`], {}, 0, /HTTP 200/],
      ['503', [`http://127.0.0.1:${port}/readyz`], {}, 1, /HTTP 503/],
      [
        'URL from the environment',
        [],
        { PORTCULLIS_HEALTHCHECK_URL: `http://127.0.0.1:${port}/ok` },
        0,
        /200/,
      ],
      ['closed port', [`http://127.0.0.1:${closed}/`], {}, 1, /ECONNREFUSED/],
      ['no URL', [], { PORTCULLIS_HEALTHCHECK_URL: '' }, 1, /no URL/],
      ['not a URL', ['nope'], {}, 1, /not a URL/],
      ['another scheme', ['ftp://127.0.0.1/'], {}, 1, /only http and https/],
    ];
    for (const [name, args, env, status, out] of cases) {
      const r = await check(args, env);
      assert.equal(r.status, status, `${name}: ${r.out}`);
      assert.match(r.out, out, name);
    }
  });

  describe('over https with the certificates the compose `certs` service issues', () => {
    let certs: string;
    before(() => {
      // The certs service's own command, container paths mapped into a temp dir.
      const [, certsService] = services.find(([n]) => n === 'certs')!;
      const argv = argvOf(certsService)
        .slice(2)
        .map((a) => a.replace(STATE, dir).replace(APP, ROOT));
      const r = run([CLI, ...argv], 60_000);
      assert.equal(r.status, 0, r.stderr);
      certs = join(dir, 'certs');
      for (const w of registry.workloads) assert.ok(existsSync(join(certs, `${w.name}.pem`)), w.name);
    });

    it("accepts the STS's certificate for 127.0.0.1 against the trust bundle, and refuses another CA", async () => {
      const port = await listen(
        createHttpsServer(
          { cert: readFileSync(join(certs, 'sts.pem')), key: readFileSync(join(certs, 'sts-key.pem')) },
          (_req, res) => res.writeHead(200).end(),
        ),
      );
      const ok = await check([`https://127.0.0.1:${port}/readyz`], {
        PORTCULLIS_HEALTHCHECK_CA: join(certs, 'root.pem'),
      });
      assert.equal(ok.status, 0, ok.out);
      // A real CA of the same trust domain that did not issue the STS's certificate.
      const other = join(dir, 'other-ca');
      const init = run([CLI, 'ca', 'init', '--trust-domain', registry.trustDomain, '--out', other], 60_000);
      assert.equal(init.status, 0, init.stderr);
      const wrong = await check([`https://127.0.0.1:${port}/readyz`], {
        PORTCULLIS_HEALTHCHECK_CA: join(other, 'root.pem'),
      });
      assert.equal(wrong.status, 1, wrong.out);
      const notCa = await check([`https://127.0.0.1:${port}/readyz`], {
        PORTCULLIS_HEALTHCHECK_CA: join(ROOT, 'node_modules/undici/package.json'),
      });
      assert.equal(notCa.status, 1, notCa.out);
      const missing = await check([`https://127.0.0.1:${port}/readyz`], {
        PORTCULLIS_HEALTHCHECK_CA: join(dir, 'nope.pem'),
      });
      assert.equal(missing.status, 1);
      assert.match(missing.out, /nope\.pem: ENOENT/);
    });

    it("reaches the real audit collector's probe path (/readyz) without a client certificate", async () => {
      const collector = await startCollector(
        parseAuditConfig({
          ...(parseYaml(readFileSync(join(ROOT, 'config/compose/audit.yaml'), 'utf8')) as object),
          listen: { host: '127.0.0.1', port: 0 },
          identities: join(ROOT, 'config/compose/identities.yaml'),
          tls: {
            cert: join(certs, 'audit.pem'),
            key: join(certs, 'audit-key.pem'),
            trustBundle: join(certs, 'root.pem'),
          },
          dataDir: join(dir, 'audit-state'),
          store: `file:${join(dir, 'audit-log')}`,
        }),
        { logger: createLogger({ name: 'audit', level: 'silent' }) },
      );
      try {
        const [, audit] = services.find(([n]) => n === 'audit')!;
        const path = new URL(audit.healthcheck!.test!.at(-1)!).pathname;
        const r = await check([`https://127.0.0.1:${collector.port}${path}`], {
          PORTCULLIS_HEALTHCHECK_CA: join(certs, 'root.pem'),
        });
        assert.equal(r.status, 0, r.out);
      } finally {
        await collector.close();
      }
    });
  });
});

// ───────────────────────── docker-compose.yml ─────────────────────────

describe('docker-compose.yml', () => {
  it('is YAML with only known top-level keys and known service keys', () => {
    const top = new Set([
      'name',
      'services',
      'networks',
      'volumes',
      'configs',
      'secrets',
      'include',
      'models',
    ]);
    for (const key of Object.keys(compose))
      assert.ok(top.has(key) || key.startsWith('x-'), `unknown top-level key ${key}`);
    // prettier-ignore
    const serviceKeys = new Set(['annotations', 'attach', 'build', 'blkio_config', 'cap_add', 'cap_drop', 'cgroup', 'cgroup_parent', 'command', 'configs', 'container_name', 'cpu_count', 'cpu_percent', 'cpu_period', 'cpu_quota', 'cpu_rt_period', 'cpu_rt_runtime', 'cpu_shares', 'cpus', 'cpuset', 'credential_spec', 'depends_on', 'deploy', 'develop', 'device_cgroup_rules', 'devices', 'dns', 'dns_opt', 'dns_search', 'domainname', 'entrypoint', 'env_file', 'environment', 'expose', 'extends', 'external_links', 'extra_hosts', 'group_add', 'healthcheck', 'hostname', 'image', 'init', 'ipc', 'isolation', 'labels', 'links', 'logging', 'mac_address', 'mem_limit', 'mem_reservation', 'mem_swappiness', 'memswap_limit', 'network_mode', 'networks', 'oom_kill_disable', 'oom_score_adj', 'pid', 'pids_limit', 'platform', 'ports', 'privileged', 'profiles', 'pull_policy', 'read_only', 'restart', 'runtime', 'scale', 'secrets', 'security_opt', 'shm_size', 'stdin_open', 'stop_grace_period', 'stop_signal', 'storage_opt', 'sysctls', 'tmpfs', 'tty', 'ulimits', 'user', 'userns_mode', 'uts', 'volumes', 'volumes_from', 'working_dir']);
    for (const [name, s] of services)
      for (const key of Object.keys(s)) assert.ok(serviceKeys.has(key), `${name}: unknown key ${key}`);
  });

  it('has the parts docs/operations.md names', () => {
    const names = new Set(services.map(([n]) => n));
    for (const n of [
      'vault',
      'postgres',
      'certs',
      'sts',
      'audit',
      'web',
      'orders',
      'sidecar-web',
      'sidecar-orders',
    ])
      assert.ok(names.has(n), n);
    const byCommand = (words: string[]) =>
      ours.filter(([, s]) => words.every((w, i) => argvOf(s)[2 + i] === w)).map(([n]) => n);
    assert.deepEqual(byCommand(['sts']), ['sts']);
    assert.deepEqual(byCommand(['audit', 'serve']), ['audit']);
    assert.deepEqual(byCommand(['sidecar']).sort(), ['sidecar-orders', 'sidecar-web']);
    assert.equal(stsConfig.keystore.type, 'vault', 'the STS runs on the Vault keystore');
    assert.match(
      auditConfig.store,
      /^postgres:\/\/[^:@]+@postgres:5432\//,
      'the collector runs on PostgreSQL, no password in the file',
    );
  });

  it('runs only real portcullis subcommands, with flags their --help lists', () => {
    for (const [name, s] of ours) {
      const argv = argvOf(s);
      if (!isCli(argv)) continue;
      const args = argv.slice(2);
      const words = args.slice(
        0,
        Math.max(
          0,
          args.findIndex((a) => a.startsWith('-')),
        ),
      );
      const r = run([CLI, ...words, '--help']);
      assert.equal(r.status, 0, `${name}: portcullis ${words.join(' ')} --help: ${r.stderr}`);
      for (const flag of args.filter((a) => a.startsWith('--') && a !== '--help'))
        assert.ok(r.stdout.includes(flag), `${name}: portcullis ${words.join(' ')} has no ${flag}`);
    }
  });

  it('starts the demo apps with the flags they accept', async () => {
    for (const [name, s] of ours) {
      const argv = argvOf(s);
      if (isCli(argv)) continue;
      assert.equal(argv[0], 'node', name);
      assert.ok(existsSync(join(ROOT, argv[1]!)), `${name}: ${argv[1]} does not exist`);
      // Same flags, but a free loopback port here.
      const args = argv
        .slice(1)
        .map((a, i, all) => (all[i - 1] === '--port' ? '0' : all[i - 1] === '--host' ? '127.0.0.1' : a));
      const child = spawn(process.execPath, args, { cwd: ROOT, timeout: 10_000 });
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d) => {
          out += d;
          if (out.includes('\n')) resolve(out);
        });
        child.stderr.on('data', (d) => (out += d));
        child.on('exit', (code) => reject(new Error(`${name} exited ${code}: ${out}`)));
      });
      assert.match(line, /^demo (orders|web) listening on http:\/\/127\.0\.0\.1:\d+/);
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  });

  it('loads every config/compose file with the real loaders', () => {
    const dir = join(ROOT, 'config/compose');
    const loaders: Record<string, (file: string) => unknown> = {
      'identities.yaml': loadRegistry,
      'sts.yaml': loadStsConfig,
      'audit.yaml': loadAuditConfig,
      'otel-collector.yaml': (file) => parseYaml(readFileSync(file, 'utf8')),
    };
    for (const file of composeConfigs) {
      const load = file.startsWith('sidecar-') ? loadSidecarConfig : loaders[file];
      assert.ok(load, `config/compose/${file}: no loader known for it; add one to this test`);
      assert.ok(load(join(dir, file)), file);
    }
  });

  it('would refuse a compose config with a misspelled key, naming file and key', () => {
    const tmp = mkdtempSync(join(tmpdir(), 'portcullis-deploy-'));
    try {
      const cases: [string, (file: string) => unknown, RegExp][] = [
        ['sts.yaml', loadStsConfig, /sts\.yaml: keystore\.mont: unknown key \(did you mean "mount"\?\)/],
        ['audit.yaml', loadAuditConfig, /audit\.yaml: stor: unknown key \(did you mean "store"\?\)/],
        ['sidecar-web.yaml', loadSidecarConfig, /sidecar-web\.yaml: inbound\.polciy: unknown key/],
      ];
      for (const [file, load, message] of cases) {
        const text = readFileSync(join(ROOT, 'config/compose', file), 'utf8')
          .replace('mount: secret', 'mont: secret')
          .replace('store: postgres', 'stor: postgres')
          .replace('policy: /app', 'polciy: /app');
        writeFileSync(join(tmp, file), text);
        assert.throws(
          () => load(join(tmp, file)),
          (err: Error & { code?: string }) => {
            assert.equal(err.code, 'ERR_CONFIG_INVALID', err.message);
            assert.match(err.message, message);
            return true;
          },
        );
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('runs each config/compose file in some service', () => {
    // Each config file is used by a service, and each service's --config is one of them.
    const used = ours.map(([, s]) => configOf(s)).filter(Boolean);
    for (const file of composeConfigs.filter((f) => f !== 'identities.yaml' && f !== 'otel-collector.yaml'))
      assert.ok(
        used.includes(`${APP}/config/compose/${file}`),
        `config/compose/${file} is used by no service`,
      );
    for (const c of used) assert.ok(existsSync(repoPath(c!)), `${c} is not in the repository`);
  });

  it('names only files that exist: repository paths in configs, bind mounts, volumes', () => {
    const repoFiles = [
      stsConfig.identities,
      auditConfig.identities,
      ...[...sidecarConfigs.values()].map((c) => c.inbound.policy),
    ];
    for (const p of repoFiles) {
      assert.ok(p.startsWith(`${APP}/`), `${p}: a repository file is named by its /app path`);
      assert.ok(existsSync(repoPath(p)), `${p} is not in the repository`);
    }
    for (const [name, s] of services) {
      for (const v of s.volumes ?? []) {
        const [source] = v.split(':');
        if (source!.startsWith('.'))
          assert.ok(existsSync(join(ROOT, source!)), `${name}: ${source} does not exist`);
        else assert.ok(source! in compose.volumes, `${name}: volume ${source} is not declared`);
      }
    }
  });

  it('mounts what each part reads, and writable where it writes', () => {
    const mounts = (s: Service) =>
      (s.volumes ?? []).map((v) => {
        const [, target, mode] = v.split(':');
        return { target: target!, ro: mode === 'ro' };
      });
    const need = (service: string, path: string, write: boolean) => {
      const s = compose.services[service]!;
      const m = mounts(s).find((x) => path === x.target || path.startsWith(`${x.target}/`));
      assert.ok(m, `${service}: ${path} is on no volume`);
      if (write) assert.equal(m.ro, false, `${service}: ${path} must be writable`);
      return m;
    };
    const check = (
      service: string,
      tls: { cert: string; key: string; trustBundle: string },
      spool: string | undefined,
    ) => {
      for (const p of [tls.cert, tls.key, tls.trustBundle]) need(service, p, false);
      if (spool) need(service, spool, true);
    };
    check('sts', stsConfig.tls, stsConfig.audit.spoolDir);
    need('sts', stsConfig.revocation.crl!, false);
    check('audit', auditConfig.tls, undefined);
    need('audit', auditConfig.dataDir, true);
    for (const [file, c] of sidecarConfigs) {
      const [service] = ours.find(([, s]) => configOf(s) === `${APP}/config/compose/${file}`)!;
      check(service, c.tls, c.audit.spoolDir);
      // The policy is bind-mounted read-only from the repository, so edits reload live.
      const policy = mounts(compose.services[service]!).find((m) =>
        c.inbound.policy.startsWith(`${m.target}/`),
      );
      assert.ok(policy?.ro, `${service}: policies are mounted read-only`);
    }
    // The CA keys are in one volume, mounted by the certs service only.
    const caUsers = services
      .filter(([, s]) => (s.volumes ?? []).some((v) => v.startsWith('ca:')))
      .map(([n]) => n);
    assert.deepEqual(caUsers, ['certs']);
  });

  it('uses host names that are compose services and that the certificates name', () => {
    const serviceNames = new Set(services.map(([n]) => n));
    const dnsOf = (spiffeId: string) => registry.byId(spiffeId)?.dnsNames ?? [];
    const expectName = (url: string, spiffeId: string, where: string) => {
      const host = new URL(url.includes('://') ? url : `tls://${url}`).hostname;
      assert.ok(serviceNames.has(host), `${where}: ${host} is not a compose service`);
      assert.ok(
        dnsOf(spiffeId).includes(host),
        `${where}: the certificate of ${spiffeId} does not name ${host}`,
      );
    };
    const stsId = registry.byName('sts')!.spiffeId.uri;
    const auditId = registry.byName('audit')!.spiffeId.uri;
    expectName(stsConfig.audit.collector!, stsConfig.audit.collectorId!.uri, 'sts.yaml audit.collector');
    assert.equal(stsConfig.audit.collectorId!.uri, auditId);
    expectName(stsConfig.issuer, stsId, 'sts.yaml issuer');
    for (const [file, c] of sidecarConfigs) {
      expectName(c.sts.url, c.sts.spiffeId, `${file} sts.url`);
      assert.equal(c.sts.spiffeId, stsId, `${file}: sts.spiffeId`);
      assert.equal(c.sts.issuer, stsConfig.issuer, `${file}: sts.issuer must equal the STS issuer`);
      expectName(c.audit.collector!, c.audit.collectorId!.uri, `${file} audit.collector`);
      for (const r of c.outbound?.routes ?? []) {
        expectName(r.address, r.spiffeId, `${file} route ${r.name}`);
        const [host, port] = r.address.split(':');
        const peer = [...sidecarConfigs.values()].find((p) => p.service === r.spiffeId);
        assert.ok(peer, `${file}: route ${r.name} leads to no sidecar of the stack`);
        assert.equal(Number(port), peer.inbound.listen.port, `${file}: route ${r.name} port`);
        const [peerService] = ours.find(
          ([, s]) => configOf(s) === `${APP}/config/compose/sidecar-${r.name}.yaml`,
        )!;
        assert.equal(host, peerService);
      }
      assert.ok(registry.byId(c.service), `${file}: ${c.service} is not registered`);
    }
    // The probes use 127.0.0.1 over https: the STS and collector certificates must name it.
    for (const n of ['sts', 'audit']) assert.ok(registry.byName(n)!.ipAddresses.includes('127.0.0.1'), n);
  });

  it('gives every long-running service a healthcheck that probes its own listener', () => {
    for (const [name, s] of services) {
      if (isOneShot(s)) {
        assert.ok(s.healthcheck?.disable, `${name}: a one-shot service disables the image healthcheck`);
        continue;
      }
      const test = s.healthcheck?.test;
      assert.ok(
        Array.isArray(test) && test[0] === 'CMD' && !s.healthcheck!.disable,
        `${name}: no healthcheck`,
      );
    }
    const probePort = (service: string) => {
      const test = compose.services[service]!.healthcheck!.test!;
      assert.equal(test[1], 'portcullis-healthcheck', service);
      return Number(new URL(test[2]!).port);
    };
    // The STS and the collector are probed on their ops listeners, which answer 503 while they load.
    assert.equal(probePort('sts'), stsConfig.metrics?.listen.port, 'sts probes its ops listener');
    assert.equal(probePort('audit'), auditConfig.metrics?.listen.port, 'audit probes its ops listener');
    for (const service of ['sts', 'audit']) {
      const probe = new URL(compose.services[service]!.healthcheck!.test![2]!);
      assert.deepEqual([probe.protocol, probe.pathname], ['http:', '/readyz'], service);
    }
    for (const [file, c] of sidecarConfigs) {
      const [service] = ours.find(([, s]) => configOf(s) === `${APP}/config/compose/${file}`)!;
      assert.equal(probePort(service), c.metrics?.listen.port, `${service} probes its metrics listener`);
      const probe = compose.services[service]!.healthcheck!.test!;
      assert.equal(new URL(probe[2]!).pathname, '/readyz', `${service} probes its readiness`);
      // The app shares the sidecar's network namespace, where the sidecar expects it.
      const [app] = ours.find(([, s]) => s.network_mode === `service:${service}`)!;
      assert.equal(
        probePort(app),
        Number(new URL(c.inbound.app).port),
        `${app} listens where ${service} forwards`,
      );
    }
  });

  it('waits on health: every dependency is healthy or a completed one-shot, and every one-shot is awaited', () => {
    const adopted = new Set<string>();
    for (const [name, s] of services) {
      for (const [dep, { condition }] of Object.entries(s.depends_on ?? {})) {
        const target = compose.services[dep];
        assert.ok(target, `${name} depends on unknown ${dep}`);
        if (condition === 'service_completed_successfully') {
          assert.ok(isOneShot(target), `${name}: ${dep} is not a one-shot`);
          if (!isOneShot(s)) adopted.add(dep);
        } else {
          assert.equal(condition, 'service_healthy', `${name} → ${dep}`);
          assert.ok(target.healthcheck?.test, `${name} waits for ${dep}, which has no healthcheck`);
        }
        // A default-profile service cannot depend on a service of an optional profile.
        if (!s.profiles) assert.equal(target.profiles, undefined, `${name} depends on profiled ${dep}`);
      }
    }
    // `docker compose up --wait` exits 0 only when each one-shot is awaited by a long-running service.
    for (const [name, s] of services)
      if (isOneShot(s) && !s.profiles) assert.ok(adopted.has(name), `${name} is awaited by no service`);
  });

  it('has an otel profile with an OpenTelemetry collector forwarding to Jaeger, and every part can export to it', () => {
    const otel = services.filter(([, s]) => s.profiles?.includes('otel')).map(([n]) => n);
    assert.deepEqual(otel.sort(), ['jaeger', 'otel-collector']);
    const collector = compose.services['otel-collector']!;
    assert.match(JSON.stringify(collector.build), /otel\/opentelemetry-collector-contrib:\d/);
    assert.match(JSON.stringify(compose.services.jaeger!.build), /jaegertracing\/jaeger:2\./);
    const mount = collector.volumes!.find((v) => v.startsWith('./config/compose/otel-collector.yaml:'))!;
    assert.ok(collector.command!.includes(mount.split(':')[1]!), 'the collector reads the mounted config');
    const cfg = parseYaml(readFileSync(join(ROOT, 'config/compose/otel-collector.yaml'), 'utf8')) as {
      receivers: Record<string, unknown>;
      exporters: Record<string, { endpoint: string }>;
      extensions: Record<string, { endpoint: string }>;
      service: {
        extensions: string[];
        pipelines: Record<string, { receivers: string[]; exporters: string[] }>;
      };
    };
    const traces = cfg.service.pipelines.traces!;
    assert.ok(traces.receivers.includes('otlp') && 'otlp' in cfg.receivers);
    for (const e of traces.exporters) {
      assert.ok(cfg.exporters[e], `exporter ${e} is not defined`);
      assert.equal(cfg.exporters[e].endpoint.split(':')[0], 'jaeger');
    }
    assert.ok(cfg.service.extensions.includes('health_check'));
    assert.equal(
      new URL(collector.healthcheck!.test!.at(-1)!).port,
      cfg.extensions.health_check!.endpoint.split(':')[1],
    );
    for (const [name, s] of ours) {
      const argv = argvOf(s);
      if (!isCli(argv) || isOneShot(s)) continue;
      assert.ok(
        s.environment && 'OTEL_EXPORTER_OTLP_ENDPOINT' in s.environment,
        `${name} has no OTLP endpoint variable`,
      );
    }
    assert.match(composeText, /OTEL_EXPORTER_OTLP_ENDPOINT: \$\{OTEL_EXPORTER_OTLP_ENDPOINT:-\}/);
  });

  it('runs the sidecars under their memory bound and keeps secrets out of the files', () => {
    for (const [file] of sidecarConfigs) {
      const [service, s] = ours.find(([, x]) => configOf(x) === `${APP}/config/compose/${file}`)!;
      assert.match(
        s.environment?.NODE_OPTIONS ?? '',
        /--max-semi-space-size=8 --max-old-space-size=80/,
        service,
      );
    }
    assert.equal(compose.services.sts!.environment!.VAULT_TOKEN, '${VAULT_TOKEN:-portcullis-dev-root-token}');
    assert.equal(
      compose.services.vault!.environment!.VAULT_DEV_ROOT_TOKEN_ID,
      '${VAULT_TOKEN:-portcullis-dev-root-token}',
    );
    assert.equal(stsConfig.keystore.type === 'vault' && stsConfig.keystore.tokenEnv, 'VAULT_TOKEN');
    assert.ok(
      !('PORTCULLIS_MASTER_KEY' in (compose.services.sts!.environment ?? {})),
      'no master key with Vault',
    );
    for (const f of composeConfigs) {
      const text = readFileSync(join(ROOT, 'config/compose', f), 'utf8');
      assert.doesNotMatch(text, /:\/\/[^/@\s]+:[^/@\s]+@/, `${f}: a password in a URL`);
      assert.doesNotMatch(text, /portcullis-dev-(root-token|password)/, `${f}: a secret`);
    }
  });

  it('is accepted by `docker compose config` when the compose plugin is installed', (t) => {
    const version = spawnSync('docker', ['compose', 'version'], { encoding: 'utf8', timeout: 10_000 });
    if (version.status !== 0) return t.skip('docker compose is not installed here');
    const r = spawnSync(
      'docker',
      ['compose', '--profile', 'otel', '--profile', 'tools', 'config', '--quiet'],
      {
        cwd: ROOT,
        encoding: 'utf8',
        timeout: 30_000,
      },
    );
    assert.equal(r.status, 0, r.stderr);
  });
});

// ───────────────────────── docs ─────────────────────────

describe('operator docs', () => {
  it('the README links architecture, operations, threat model and the part guides, and every link resolves', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const section = /^## Documentation\n([\s\S]*?)(?=^## )/m.exec(readme)?.[1];
    assert.ok(section, 'README.md has a Documentation section');
    const links = [...section.matchAll(/\]\(([^)#]+)\)/g)].map((m) => m[1]!);
    for (const doc of ['architecture', 'operations', 'threat-model', 'sts', 'sidecar', 'audit'])
      assert.ok(links.includes(`docs/${doc}.md`), `README links docs/${doc}.md`);
    for (const l of links) assert.ok(existsSync(join(ROOT, l)), `README links ${l}, which does not exist`);
  });

  it('every relative link of operations.md and threat-model.md resolves', () => {
    for (const doc of ['operations.md', 'threat-model.md']) {
      const text = readFileSync(join(ROOT, 'docs', doc), 'utf8');
      for (const m of text.matchAll(/\]\(([^)#:]+)(#[^)]*)?\)/g))
        assert.ok(existsSync(join(ROOT, 'docs', m[1]!)), `docs/${doc} links ${m[1]}, which does not exist`);
    }
  });
});
