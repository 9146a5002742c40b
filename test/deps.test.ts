import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

const ROOT = new URL('../', import.meta.url).pathname;
const DEPCRUISE = join(ROOT, 'node_modules/dependency-cruiser/bin/dependency-cruise.mjs');

/** Runs the project's dependency rules over a throwaway tree holding `files`. */
function cruise(files: Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-deps-'));
  try {
    copyFileSync(join(ROOT, '.dependency-cruiser.cjs'), join(dir, '.dependency-cruiser.cjs'));
    copyFileSync(join(ROOT, 'tsconfig.json'), join(dir, 'tsconfig.json'));
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(join(dir, dirname(path)), { recursive: true });
      writeFileSync(join(dir, path), text);
    }
    const dirs = [...new Set(Object.keys(files).map((p) => p.split('/')[0]!))];
    const r = spawnSync(process.execPath, [DEPCRUISE, '--config', '.dependency-cruiser.cjs', ...dirs], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 60_000,
    });
    return { code: r.status, out: r.stdout + r.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const pkg = (name: string) => ({ [`${name}/index.ts`]: `export const ${name.replace(/\W/g, '')} = 1;\n` });

test('the dependency rules fail when core/ or ca/ import a part above them', () => {
  const cases: [string, Record<string, string>, string][] = [
    [
      'core imports sts',
      { ...pkg('sts'), 'core/x.ts': "import { sts } from '../sts/index.ts';\nexport const x = sts;\n" },
      'core-imports-nothing-of-ours',
    ],
    [
      'core imports ca',
      { ...pkg('ca'), 'core/x.ts': "import { ca } from '../ca/index.ts';\nexport const x = ca;\n" },
      'core-imports-nothing-of-ours',
    ],
    [
      'ca imports sidecar',
      {
        ...pkg('sidecar'),
        'ca/x.ts': "import { sidecar } from '../sidecar/index.ts';\nexport const x = sidecar;\n",
      },
      'ca-imports-only-core',
    ],
    [
      'ca imports audit',
      { ...pkg('audit'), 'ca/x.ts': "import { audit } from '../audit/index.ts';\nexport const x = audit;\n" },
      'ca-imports-only-core',
    ],
    [
      'ca imports cli',
      {
        'cli/portcullis.ts': 'export const cli = 1;\n',
        'ca/x.ts': "import { cli } from '../cli/portcullis.ts';\nexport const x = cli;\n",
      },
      'ca-imports-only-core',
    ],
    [
      'sts imports sidecar',
      {
        ...pkg('sidecar'),
        'sts/x.ts': "import { sidecar } from '../sidecar/index.ts';\nexport const x = sidecar;\n",
      },
      'sts-and-sidecar-never-import-each-other',
    ],
    [
      'sidecar reaches into ca internals',
      {
        'ca/verify.ts': 'export const v = 1;\n',
        'sidecar/x.ts': "import { v } from '../ca/verify.ts';\nexport const x = v;\n",
      },
      'only-through-index',
    ],
  ];
  for (const [name, files, rule] of cases) {
    const r = cruise(files);
    assert.notEqual(r.code, 0, `${name}: passed\n${r.out}`);
    assert.match(r.out, new RegExp(rule), name);
  }
});

test('the allowed direction passes', () => {
  const r = cruise({
    ...pkg('core'),
    'ca/index.ts': "import { core } from '../core/index.ts';\nexport const ca = core;\n",
    'audit/index.ts': "import { ca } from '../ca/index.ts';\nexport const audit = ca;\n",
    'sts/index.ts': "import { audit } from '../audit/index.ts';\nexport const sts = audit;\n",
  });
  assert.equal(r.code, 0, r.out);
});
