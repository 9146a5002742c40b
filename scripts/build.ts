// `npm run build`: the deployable build (decision 0091). esbuild bundles our TypeScript and the npm
// packages it uses (but those in EXTERNAL) into plain ES modules under dist/, so that a deployed
// process strips no types at run time and parses one file instead of ~700. The entry points keep
// their place in the tree: dist/cli/portcullis.js, one file per command group in
// dist/cli/commands/, and the packages' public faces (dist/sidecar/index.js, …) for library use.
// `node file.ts` stays the way to run the sources in development; bin/portcullis runs dist/ when it
// is current (dist/build-info.json lists its inputs) and the sources otherwise.
// Usage: node scripts/build.ts [--check | --harness DIR]. `--check` builds nothing and exits 1 when
// dist/ is missing or older than one of its inputs; `--harness DIR` bundles the sidecar benchmark's
// process (bench/sidecar/sidecar-proc.ts) the same way into DIR.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative } from 'node:path';
import { build } from 'esbuild';
import type { BuildOptions, Plugin } from 'esbuild';

const root = new URL('../', import.meta.url).pathname;
const nodeRequire = createRequire(import.meta.url);
const dist = join(root, 'dist');
const infoFile = join(dist, 'build-info.json');

/** The sources the build reads, relative to the repository root, with their modification times. */
interface BuildInfo {
  readonly builtAt: string;
  readonly esbuild: string;
  readonly inputs: Record<string, number>;
  /** The Node that ran the build: the built-ins' export names the bundles bind come from it. */
  readonly node?: string;
}

/** Why dist/ is not a build of the current sources, or undefined when it is. */
export function staleReason(): string | undefined {
  if (!existsSync(infoFile)) return 'dist/ has not been built (npm run build)';
  let info: BuildInfo;
  try {
    info = JSON.parse(readFileSync(infoFile, 'utf8')) as BuildInfo;
  } catch {
    return 'dist/build-info.json is unreadable';
  }
  if (info.node !== process.version)
    return `dist/ was built by Node ${info.node ?? '(unknown)'}, this is ${process.version}`;
  for (const [file, mtime] of Object.entries(info.inputs)) {
    let now: number;
    try {
      now = statSync(join(root, file)).mtimeMs;
    } catch {
      return `${file} is gone since the build`;
    }
    if (now !== mtime) return `${file} changed since the build`;
  }
  // A new command group is a new entry point the build has not seen.
  for (const f of readdirSync(join(root, 'cli/commands')))
    if (f.endsWith('.ts') && !(`cli/commands/${f}` in info.inputs)) return `cli/commands/${f} is new`;
  return undefined;
}

/** Whether a directory is inside an npm package (wherever node_modules is: a link, a parent's). */
const inPackage = (dir: string): boolean => dir.split('/').includes('node_modules');

/**
 * Our modules have no side effects at import (none registers, starts or patches anything when
 * imported; test/e2e/sidecar-built.test.ts runs the e2e sidecar tests on the bundle), so a module
 * that nothing uses is left out of a bundle although a package's index re-exports it. Without this
 * the sidecar command would load the collector (fastify), the PostgreSQL store (pg) and the rest
 * of audit/ and ca/ through their index files (decision 0091).
 */
const oursArePure: Plugin = {
  name: 'ours-are-pure',
  setup(b) {
    b.onResolve({ filter: /^\.\.?\// }, (args) =>
      inPackage(args.resolveDir) ? undefined : { path: join(args.resolveDir, args.path), sideEffects: false },
    );
  },
};

/**
 * Node's built-in modules reach the bundles through require(), not as ES imports. Importing a
 * built-in as an ES module makes Node build its ES face by reading every export, and node:http's
 * exports include lazy getters (WebSocket, CloseEvent, MessageEvent) that load Node's own copy of
 * undici: ~20 ms of every sidecar start (decision 0100). Each `import … from 'node:x'` in the
 * bundled code binds the names it uses, and only those, to the module object require() returns:
 * every name is offered behind a pure call, which esbuild drops where nothing imports it.
 */
const builtinsByRequire: Plugin = {
  name: 'builtins-by-require',
  setup(b) {
    b.onResolve({ filter: /^node:/ }, (args) =>
      args.kind === 'import-statement' ? { path: args.path, namespace: 'builtin' } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'builtin' }, (args) => {
      const names = Object.keys(nodeRequire(args.path) as object).filter(
        (n) => /^[A-Za-z_$][\w$]*$/.test(n) && n !== 'default',
      );
      const lines = [
        `const m = require(${JSON.stringify(args.path)});`,
        'const pick = (name) => m[name];',
        'export default m;',
        ...names.map((n) => `export const ${n} = /* @__PURE__ */ pick('${n}');`),
      ];
      return { contents: `${lines.join('\n')}\n`, loader: 'js' };
    });
  },
};

/**
 * Our sources' `from 'undici'` resolves to scripts/undici-lean.mjs, undici's dispatchers and request
 * API without its index (fetch, WebSocket, EventSource, caches, mocks; decision 0100). A package
 * that imports undici itself gets the package.
 */
const undiciLean: Plugin = {
  name: 'undici-lean',
  setup(b) {
    b.onResolve({ filter: /^undici$/ }, (args) =>
      inPackage(args.resolveDir) ? undefined : { path: join(root, 'scripts/undici-lean.mjs') },
    );
  },
};

/**
 * zod's `z.locales` namespace holds its error messages in ~50 languages (~300 KB of the sidecar's
 * bundle, parsed and evaluated at every start); we configure none but the default English, which
 * zod imports on its own. In the bundles `z.locales` holds `en` only (decision 0100).
 */
const zodEnglishOnly: Plugin = {
  name: 'zod-english-only',
  setup(b) {
    b.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
      args.importer.includes('/node_modules/zod/')
        ? { path: join(args.resolveDir, args.path), namespace: 'zod-locales' }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'zod-locales' }, (args) => ({
      contents: `export { default as en } from ${JSON.stringify(join(args.path, '../en.js'))};\n`,
      loader: 'js',
      resolveDir: join(args.path, '..'),
    }));
  },
};

/**
 * npm packages left out of the bundles and loaded from node_modules at run time: what only the STS
 * and the collector use (fastify, PostgreSQL, Vault), the OpenTelemetry SDK and exporters (loaded
 * only when tracing is on) and node-forge (PKCS#12 export, loaded on use). Each is imported
 * lazily or by parts the sidecar does not run; bundling them would gain the sidecar nothing.
 */
const EXTERNAL = [
  'fastify',
  '@fastify/*',
  'pg',
  'pg-*',
  'node-vault',
  'node-forge',
  '@opentelemetry/sdk-node',
  '@opentelemetry/exporter-*',
  '@grpc/*',
];

/** How every entry is bundled (the benchmark's harness too: `--harness DIR`). */
const BUNDLE_OPTIONS = {
  bundle: true,
  // One file per entry, each self-contained: esbuild's shared chunks are cut coarsely (a command
  // would load every module some other entry shares with it), and a process runs one command.
  splitting: false,
  format: 'esm',
  platform: 'node',
  target: 'node24',
  external: EXTERNAL,
  // npm packages written as CommonJS call require() for Node's modules; ES module output has none.
  banner: {
    js: "import { createRequire as __portcullisRequire } from 'node:module'; const require = __portcullisRequire(import.meta.url);",
  },
  // Less source text for V8 to hold and parse; names are kept, so profiles and stack traces
  // still name our functions.
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: false,
  legalComments: 'none',
  metafile: true,
  logLevel: 'warning',
  plugins: [oursArePure, builtinsByRequire, undiciLean, zodEnglishOnly],
} satisfies BuildOptions;

async function main(): Promise<void> {
  if (process.argv.includes('--check')) {
    const why = staleReason();
    if (why) {
      console.error(`build: ${why}`);
      process.exit(1);
    }
    return;
  }
  const harness = process.argv.indexOf('--harness');
  if (harness !== -1) {
    const outdir = process.argv[harness + 1];
    if (!outdir) throw new Error('--harness needs an output directory');
    await build({ ...BUNDLE_OPTIONS, entryPoints: [join(root, 'bench/sidecar/sidecar-proc.ts')], outdir });
    return;
  }
  const commands = readdirSync(join(root, 'cli/commands'))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => `cli/commands/${f}`);
  const entryPoints = [
    'cli/portcullis.ts',
    ...commands,
    // The packages' public faces, for library use (bench/, the test harness) of the built code.
    'core/index.ts',
    'ca/index.ts',
    'audit/index.ts',
    'sts/index.ts',
    'sidecar/index.ts',
    // Loaded by URL (new Worker), not imported: an entry of its own at its own place.
    'sts/token/sign-worker.ts',
  ].map((f) => join(root, f));
  rmSync(dist, { recursive: true, force: true });
  mkdirSync(dist);
  const result = await build({
    ...BUNDLE_OPTIONS,
    entryPoints,
    outdir: dist,
    outbase: root,
    entryNames: '[dir]/[name]',
  });
  const inputs: Record<string, number> = {};
  for (const file of Object.keys(result.metafile.inputs).sort()) {
    const rel = relative(root, join(root, file));
    // The packages bundled are the lockfile's: package-lock.json stands for them.
    if (rel.startsWith('node_modules/') || /^[a-z-]+:/.test(file)) continue;
    inputs[rel] = statSync(join(root, rel)).mtimeMs;
  }
  inputs['package-lock.json'] = statSync(join(root, 'package-lock.json')).mtimeMs;
  // How the bundles are made is an input too (its plugins change what they hold).
  inputs['scripts/build.ts'] = statSync(join(root, 'scripts/build.ts')).mtimeMs;
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
  // dist/package.json: ES modules, and the version `portcullis --version` prints.
  writeFileSync(
    join(dist, 'package.json'),
    `${JSON.stringify({ name: 'portcullis-dist', version: pkg.version, type: 'module', private: true }, null, 2)}\n`,
  );
  const { version } = JSON.parse(readFileSync(join(root, 'node_modules/esbuild/package.json'), 'utf8')) as {
    version: string;
  };
  const info: BuildInfo = {
    builtAt: new Date().toISOString(),
    esbuild: version,
    node: process.version,
    inputs,
  };
  writeFileSync(infoFile, `${JSON.stringify(info, null, 1)}\n`);
  const outputs = Object.entries(result.metafile.outputs);
  const bytes = outputs.reduce((n, [, o]) => n + o.bytes, 0);
  console.log(
    `build: ${Object.keys(inputs).length} sources → ${outputs.length} files in dist/ (${Math.round(bytes / 1024)} KiB)`,
  );
}

if (import.meta.main) await main();
