// The docs are checked against the code and the repository: the metrics they name exist, and they
// cite and link only what the repository holds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, posix, relative } from 'node:path';

const ROOT = new URL('../', import.meta.url).pathname;

function files(dir: string, ext: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(ext))
    .map((e) => join(e.parentPath, e.name));
}

test('every portcullis_* metric the docs name is defined in the code', () => {
  const code = ['core', 'ca', 'audit', 'sts', 'sidecar']
    .flatMap((d) => files(d, '.ts'))
    .map((f) => readFileSync(f, 'utf8'))
    .join('\n');
  const docs = [...files('docs', '.md'), join(ROOT, 'README.md')];
  const missing: string[] = [];
  let checked = 0;
  for (const file of docs) {
    for (const [, name] of readFileSync(file, 'utf8').matchAll(
      /`(portcullis_[a-z0-9_]+?)(?:_bucket|_sum|_count)?(?:\{[^`]*)?`/g,
    )) {
      // Series are registered by their full name or by a part prefix plus the rest.
      checked++;
      const rest = name!.replace(/^portcullis_(sts|sidecar|audit)_/, '');
      if (
        !code.includes(name!) &&
        !code.includes(`'${rest}'`) &&
        !code.includes(`\`${rest}\``) &&
        !code.includes(`_${rest}'`)
      ) {
        missing.push(`${file.slice(ROOT.length)}: ${name}`);
      }
    }
  }
  assert.deepEqual(missing, []);
  // The docs' metrics tables name dozens of series: finding none means the pattern broke.
  assert.ok(checked > 20, `only ${checked} metric names found in the docs`);
});

// The repository's docs stand alone: nothing cites a document outside it, and every relative link
// in the Markdown files lands on a file (and heading) that exists.

/** Text that points outside the repository: the founders' design page or the folder beside it. */
const OUTSIDE = [/DESIGN\.md/i, /\.\.\/shared\b/];

/** Files the citation rule covers: every tracked file (a walk of the tree without a git checkout). */
function trackedFiles(): string[] {
  try {
    return execFileSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8' })
      .split('\0')
      .filter((f) => f !== '' && !f.startsWith('node_modules/') && existsSync(join(ROOT, f)));
  } catch {
    return readdirSync(ROOT, { withFileTypes: true, recursive: true })
      .filter((e) => e.isFile())
      .map((e) => relative(ROOT, join(e.parentPath, e.name)))
      .filter((f) => !/^(?:node_modules|\.git)\//.test(f) && !f.includes('/node_modules/'));
  }
}

/** `file:line: text` of every line of `text` that cites a document outside the repository. */
function outsideCitations(file: string, text: string): string[] {
  const found: string[] = [];
  text.split('\n').forEach((line, i) => {
    if (OUTSIDE.some((re) => re.test(line))) found.push(`${file}:${i + 1}: ${line.trim()}`);
  });
  return found;
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes, repeats numbered. */
function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const [, heading] of stripCode(markdown).matchAll(/^#{1,6}[ \t]+(.+?)[ \t#]*$/gm)) {
    const base = heading!
      .replace(/`/g, '')
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

/** The Markdown without fenced code blocks and inline code spans (links there are not links). */
function stripCode(markdown: string): string {
  return markdown.replace(/^( {0,3})(```|~~~)[^\n]*\n[\s\S]*?^\1\2[^\n]*$/gm, '').replace(/`[^`\n]*`/g, '');
}

/** How {@link brokenLinks} sees the repository: which paths exist and what a Markdown file holds. */
interface RepoView {
  /** 'file', 'dir', or undefined when nothing is there; `path` is relative to the repository. */
  kind(path: string): 'file' | 'dir' | undefined;
  read(path: string): string;
}

/**
 * Every relative link of the Markdown file `file` (inline `](target)` or a `[ref]: target`
 * definition) whose target is missing, leaves the repository, or names a heading the target
 * Markdown file does not have. Web, mail and other scheme links are not checked.
 */
function brokenLinks(file: string, markdown: string, repo: RepoView): string[] {
  const text = stripCode(markdown);
  const targets = [
    ...[...text.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)/g)].map((m) => m[1]!),
    ...[...text.matchAll(/^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/gm)].map((m) => m[1]!),
  ];
  const broken: string[] = [];
  for (const target of targets) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:, …
    const hash = target.indexOf('#');
    const pathPart = decodeURI(hash === -1 ? target : target.slice(0, hash)).replace(/\?.*$/, '');
    const anchor = hash === -1 ? undefined : target.slice(hash + 1);
    if (pathPart === '') {
      if (anchor && !headingAnchors(markdown).has(decodeURIComponent(anchor).toLowerCase()))
        broken.push(`${file}: ${target} (no heading #${anchor})`);
      continue;
    }
    const resolved = posix.normalize(posix.join(posix.dirname(file), pathPart));
    if (resolved.startsWith('../') || resolved === '..' || posix.isAbsolute(resolved)) {
      broken.push(`${file}: ${target} (outside the repository)`);
      continue;
    }
    const kind = repo.kind(resolved.replace(/\/$/, '') || '.');
    if (!kind) {
      broken.push(`${file}: ${target} (no such file)`);
      continue;
    }
    if (anchor && kind === 'file' && resolved.endsWith('.md')) {
      if (!headingAnchors(repo.read(resolved)).has(decodeURIComponent(anchor).toLowerCase())) {
        broken.push(`${file}: ${target} (no heading #${anchor})`);
      }
    }
  }
  return broken;
}

const diskRepo: RepoView = {
  kind(path) {
    const full = join(ROOT, path);
    if (!existsSync(full)) return undefined;
    return statSync(full).isDirectory() ? 'dir' : 'file';
  },
  read: (path) => readFileSync(join(ROOT, path), 'utf8'),
};

test('no tracked file cites a document outside the repository', () => {
  const files = trackedFiles();
  assert.ok(files.length > 100, `only ${files.length} files listed`);
  const found = files.flatMap((f) => outsideCitations(f, readFileSync(join(ROOT, f), 'utf8')));
  assert.deepEqual(found, []);
});

test('the citation check finds the design page and the folder beside the repository', () => {
  const sample = ['// fine: docs/architecture.md', `// see ${'DESIGN'}.md § STS`, `cp ..${'/'}shared/x .`];
  assert.deepEqual(outsideCitations('x.ts', sample.join('\n')), [
    `x.ts:2: // see ${'DESIGN'}.md § STS`,
    `x.ts:3: cp ..${'/'}shared/x .`,
  ]);
});

test('every relative link in README.md and docs/ lands on a file and heading that exist', () => {
  const markdown = trackedFiles().filter((f) => f === 'README.md' || /^docs\/.+\.md$/.test(f));
  assert.ok(markdown.length > 10, `only ${markdown.length} Markdown files found`);
  const broken = markdown.flatMap((f) => brokenLinks(f, diskRepo.read(f), diskRepo));
  assert.deepEqual(broken, []);
});

test('the link check refuses missing files, missing headings and links out of the repository', () => {
  const files: Record<string, string> = {
    'docs/a.md': '# A\n\n## Keys: rotation\n\n## Keys: rotation\n',
    'docs/decisions/0001-x.md': '# 0001\n',
  };
  const repo: RepoView = {
    kind: (p) => (p in files ? 'file' : p === 'docs' || p === 'docs/decisions' ? 'dir' : undefined),
    read: (p) => files[p]!,
  };
  const sample = [
    '[ok](a.md) [ok](a.md#keys-rotation) [ok](a.md#keys-rotation-1) [ok](decisions/)',
    '## Local',
    '[ok](./decisions/0001-x.md "title") [ok](https://example.org/missing.md) [ok](#local)',
    '`[code](nope.md)`',
    '```',
    '[fenced](nope.md)',
    '```',
    '[missing](b.md) [anchor](a.md#keys-rotation-2) [out](../../etc/passwd) [here](#nowhere)',
    '[ref]: decisions/0002-y.md',
  ].join('\n');
  assert.deepEqual(brokenLinks('docs/guide.md', sample, repo), [
    'docs/guide.md: b.md (no such file)',
    'docs/guide.md: a.md#keys-rotation-2 (no heading #keys-rotation-2)',
    'docs/guide.md: ../../etc/passwd (outside the repository)',
    'docs/guide.md: #nowhere (no heading #nowhere)',
    'docs/guide.md: decisions/0002-y.md (no such file)',
  ]);
});

test('every command the architecture page lists is a command of the CLI', () => {
  const page = readFileSync(join(ROOT, 'docs/architecture.md'), 'utf8');
  const section = page.slice(page.indexOf('### Command line'), page.indexOf('### Operations'));
  const listed = [...section.matchAll(/^\| (.+?) \|/gm)].flatMap(([, cell]) =>
    [...cell!.matchAll(/`([a-z]+(?: [a-z]+)?)`/g)].map((m) => m[1]!),
  );
  assert.ok(listed.length > 15, `only ${listed.length} commands found in the table`);
  const cli = files('cli/commands', '.ts')
    .map((f) => readFileSync(f, 'utf8'))
    .join('\n');
  assert.deepEqual(
    listed.filter((c) => !cli.includes(`name: '${c}'`)),
    [],
  );
});
