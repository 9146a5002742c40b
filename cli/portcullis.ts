#!/usr/bin/env node
// The `portcullis` command: finds the subcommand, runs it, maps errors to one line and an exit code.
// Each subcommand lives in cli/commands/<group>.ts and only wires library parts together.
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { enableCompileCache } from 'node:module';
import type { CliCommand } from './lib/command.ts';
import { UsageError, describeError, isUsageError } from './lib/command.ts';

/** What a cli/commands/<group>.ts module exports. */
interface CommandModule {
  readonly summary: string;
  readonly commands: readonly CliCommand[];
}

const COMMANDS_DIR = new URL('./commands/', import.meta.url);
/** `.ts` when run from the sources, `.js` when run from the build (dist/cli/, `npm run build`). */
const EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';

/** Command groups are the files in cli/commands/, so that each part adds its own without editing this one. */
function groupNames(): string[] {
  return readdirSync(COMMANDS_DIR)
    .filter((f) => f.endsWith(EXT))
    .map((f) => f.slice(0, -EXT.length))
    .sort();
}

/**
 * The build's command bundles are 0.5-2 MB each; V8 parses the whole file before running it. Node's
 * compile cache keeps what V8 compiled (checked against the file's contents, so an edited or
 * rebuilt file is compiled afresh) in dist/.compile-cache/, written at exit by any run that may
 * write there and read by the next (the image writes it at build time: Dockerfile). Decision 0107.
 * PORTCULLIS_COMPILE_CACHE names another directory (relative to the working directory), or `off`.
 * The sources (development) run without it.
 */
function startCompileCache(): void {
  const setting = process.env.PORTCULLIS_COMPILE_CACHE?.trim() ?? '';
  if (EXT !== '.js' || setting.toLowerCase() === 'off') return;
  let dir: string;
  try {
    dir = resolve(setting || fileURLToPath(new URL('../.compile-cache', import.meta.url)));
    if (!cacheDirUsable(dir)) return;
  } catch {
    // Whatever the check could not look at (a deleted working directory, a path it may not
    // search): the command runs without the cache.
    return;
  }
  enableCompileCache(dir);
}

/**
 * Whether Node may be given `dir` for its compile cache. What it holds is code the next start runs,
 * so the directory must be owned by this user or root and writable by no one else; a missing one is
 * made, a level at a time, with mode 0700. Then a directory must be makable in it, or it must be
 * merely read-only (a cache written before, as in the image). Node makes its cache directories with
 * its recursive mkdir, which loops for ever where mkdir answers ENOENT under an existing parent
 * (in /proc, say); this check makes no such call. Throws what it cannot look at.
 */
function cacheDirUsable(dir: string): boolean {
  const code = (err: unknown) => (err as NodeJS.ErrnoException).code ?? '';
  const make = (d: string): void => {
    try {
      mkdirSync(d, 0o700);
    } catch (err) {
      if (code(err) === 'EEXIST') return;
      const parent = dirname(d);
      if (code(err) !== 'ENOENT' || parent === d) throw err;
      make(parent);
      try {
        mkdirSync(d, 0o700);
      } catch (again) {
        // Another process starting at the same moment made it first.
        if (code(again) !== 'EEXIST') throw again;
      }
    }
  };
  make(dir);
  const st = statSync(dir);
  const uid = process.getuid?.();
  if (!st.isDirectory() || (st.mode & 0o022) !== 0 || (uid !== undefined && st.uid !== uid && st.uid !== 0))
    return false;
  try {
    rmdirSync(mkdtempSync(join(dir, '.probe-')));
    return true;
  } catch (err) {
    return ['EACCES', 'EPERM', 'EROFS'].includes(code(err));
  }
}

async function loadGroup(name: string): Promise<CommandModule> {
  return (await import(new URL(`${name}${EXT}`, COMMANDS_DIR).href)) as CommandModule;
}

async function usage(): Promise<string> {
  const lines: string[] = [];
  for (const name of groupNames()) lines.push(`  ${name.padEnd(9)} ${(await loadGroup(name)).summary}`);
  return `usage: portcullis <command> [flags]\n       portcullis --version\n\ncommands:\n${lines.join('\n')}\n\nRun 'portcullis <command> --help' for a command's flags.`;
}

/** `portcullis <version> (node <version>)`: the project's package version and the runtime it runs on. */
function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return `portcullis ${pkg.version} (node ${process.version})`;
}

async function main(argv: string[]): Promise<number> {
  const [group, ...rest] = argv;
  if (!group || group === '--help' || group === '-h' || group === 'help') {
    console.log(await usage());
    return group ? 0 : 2;
  }
  if (group === '--version' || group === '-V') {
    console.log(version());
    return 0;
  }
  const names = groupNames();
  if (!names.includes(group))
    throw new UsageError(`unknown command "${group}" (commands: ${names.join(', ')})`);
  const mod = await loadGroup(group);
  // A group either is one command (`portcullis sts`) or has subcommands (`portcullis certs issue`).
  const single = mod.commands.find((c) => c.name === group);
  const sub = rest[0];
  const command = single ?? mod.commands.find((c) => c.name === `${group} ${sub}`);
  if (!command) {
    const list = mod.commands.map((c) => `  portcullis ${c.name.padEnd(18)} ${c.summary}`).join('\n');
    if (!sub || sub === '--help' || sub === '-h') {
      console.log(`usage:\n${list}`);
      return sub ? 0 : 2;
    }
    throw new UsageError(`unknown subcommand "${group} ${sub}"; one of:\n${list}`);
  }
  const args = single ? rest : rest.slice(1);
  if (args.includes('--help') || args.includes('-h')) {
    console.log(command.usage);
    return 0;
  }
  return command.run(args);
}

startCompileCache();
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(`portcullis: ${describeError(err)}`);
    process.exitCode = isUsageError(err) ? 2 : 1;
  },
);
