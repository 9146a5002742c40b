// Supply chain: `npm run sbom` writes a CycloneDX SBOM of the runtime dependencies
// (@cyclonedx/cyclonedx-npm, validated against the CycloneDX schema as it is written).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

const ROOT = new URL('../../', import.meta.url).pathname;

interface Component {
  readonly group?: string;
  readonly name: string;
  readonly version: string;
  readonly purl?: string;
  readonly components?: readonly Component[];
}

function* walk(components: readonly Component[] | undefined): Generator<Component> {
  for (const c of components ?? []) {
    yield c;
    yield* walk(c.components);
  }
}

test(
  'npm run sbom writes a CycloneDX SBOM naming every runtime dependency at its installed version, and no dev dependency',
  { timeout: 60_000 },
  () => {
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-sbom-'));
    try {
      const out = join(dir, 'sbom.cdx.json');
      const r = spawnSync('npm', ['run', '-s', 'sbom', '--', '--output-file', out], {
        cwd: ROOT,
        encoding: 'utf8',
        timeout: 50_000,
      });
      assert.equal(r.status, 0, r.stderr);
      const bom = JSON.parse(readFileSync(out, 'utf8')) as {
        bomFormat: string;
        specVersion: string;
        metadata: { component: { name: string; version: string; type: string } };
        components: Component[];
      };
      const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
        name: string;
        version: string;
        dependencies: Record<string, string>;
        devDependencies: Record<string, string>;
      };
      assert.equal(bom.bomFormat, 'CycloneDX');
      assert.equal(bom.specVersion, '1.6');
      assert.deepEqual(
        {
          name: bom.metadata.component.name,
          version: bom.metadata.component.version,
          type: bom.metadata.component.type,
        },
        { name: pkg.name, version: pkg.version, type: 'application' },
      );
      const listed = new Map<string, Set<string>>();
      for (const c of walk(bom.components)) {
        const name = c.group ? `${c.group}/${c.name}` : c.name;
        listed.set(name, (listed.get(name) ?? new Set()).add(c.version));
      }
      for (const dep of Object.keys(pkg.dependencies)) {
        const installed = (
          JSON.parse(readFileSync(join(ROOT, 'node_modules', dep, 'package.json'), 'utf8')) as {
            version: string;
          }
        ).version;
        assert.ok(listed.get(dep)?.has(installed), `${dep}@${installed} is in the SBOM`);
      }
      // Dev-only tools are not shipped, so they are not in the runtime SBOM.
      for (const dev of [
        'typescript',
        'eslint',
        'prettier',
        'dependency-cruiser',
        '@cyclonedx/cyclonedx-npm',
      ])
        assert.equal(listed.has(dev), false, `${dev} (dev) is not in the SBOM`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
