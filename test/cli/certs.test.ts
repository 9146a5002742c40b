import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CLI = new URL('../../cli/portcullis.ts', import.meta.url).pathname;
const EXAMPLE = new URL('../../identities/example.yaml', import.meta.url).pathname;

function run(cwd: string, ...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every file under `dir` with its content hash, mode and mtime: "changes no file" means this is equal. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const st = statSync(p);
        out[p] =
          `${createHash('sha256').update(readFileSync(p)).digest('hex')} ${st.mode.toString(8)} ${st.mtimeMs}`;
      }
    }
  };
  try {
    walk(dir);
  } catch {
    // missing directory: empty snapshot
  }
  return out;
}

function workspace() {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-cli-'));
  mkdirSync(join(dir, 'identities'));
  copyFileSync(EXAMPLE, join(dir, 'identities', 'example.yaml'));
  return dir;
}

const ISSUE = [
  'certs',
  'issue',
  '--identities',
  'identities',
  '--ca',
  'certs/ca',
  '--out',
  'certs',
  '--init-ca',
  '--p12',
  '--passphrase-file',
  'certs/p12-passphrase',
];

test('npm run certs issues for every workload, and a second run changes no file', () => {
  const dir = workspace();
  try {
    const first = run(dir, ...ISSUE);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /created CA for trust domain example\.org/);
    assert.equal((first.stdout.match(/^issued /gm) ?? []).length, 6);
    assert.match(first.stdout, /6 issued, 0 renewed, 0 unchanged/);
    for (const f of ['root.pem', 'intermediate.pem', 'crl.pem', 'web.pem', 'web-key.pem', 'web.p12'])
      statSync(join(dir, 'certs', f));
    assert.equal(statSync(join(dir, 'certs', 'web-key.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'certs', 'p12-passphrase')).mode & 0o777, 0o600);
    const before = snapshot(join(dir, 'certs'));
    const second = run(dir, ...ISSUE);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /nothing to do: all 6 certificates are valid/);
    assert.deepEqual(snapshot(join(dir, 'certs')), before);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a changed registry entry or a short renewal horizon renews just what it must', () => {
  const dir = workspace();
  try {
    const short = [...ISSUE, '--validity', '2h', '--renew-within', '1h'];
    assert.equal(run(dir, ...short).code, 0);
    const path = join(dir, 'identities', 'example.yaml');
    writeFileSync(
      path,
      readFileSync(path, 'utf8').replace(
        'dnsNames: [orders.shop.internal, localhost]',
        'dnsNames: [orders.shop.internal]',
      ),
    );
    const webBefore = readFileSync(join(dir, 'certs', 'web.pem'), 'utf8');
    const r = run(dir, ...short);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^renewed\s+orders .*registry entry changed/m);
    assert.match(r.stdout, /0 issued, 1 renewed, 5 unchanged/);
    assert.equal(readFileSync(join(dir, 'certs', 'web.pem'), 'utf8'), webBefore);
    // 2h certificates fall within the default 8h renewal threshold of a 24h run.
    const all = run(dir, ...ISSUE);
    assert.match(all.stdout, /0 issued, 6 renewed, 0 unchanged/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad input gives one line naming the file and problem, a non-zero exit, and writes nothing', () => {
  const head = 'trustDomain: example.org\nworkloads:\n';
  const cases: {
    name: string;
    registry?: string;
    args?: string[];
    setup?: (dir: string) => void;
    expect: RegExp;
  }[] = [
    {
      name: 'misspelled key',
      registry: head + '  - name: a\n    spifeId: spiffe://example.org/a\n',
      expect: /identities\/bad\.yaml: workloads\[0\]\.spifeId: unknown key \(did you mean "spiffeId"\?\)/,
    },
    {
      name: 'malformed SPIFFE ID',
      registry: head + '  - name: a\n    spiffeId: spiffe://example.org/a//b\n',
      expect: /identities\/bad\.yaml: workloads\[0\]\.spiffeId: .*empty segments/,
    },
    {
      name: 'duplicate name',
      registry:
        head +
        '  - {name: a, spiffeId: "spiffe://example.org/a"}\n  - {name: a, spiffeId: "spiffe://example.org/b"}\n',
      expect: /identities\/bad\.yaml: workloads\[1\]\.name: duplicate name "a"/,
    },
    {
      name: 'missing identities directory',
      args: ['certs', 'issue', '--identities', 'nope', '--ca', 'certs/ca', '--out', 'certs', '--init-ca'],
      expect: /nope: no such file or directory/,
    },
    {
      name: 'CA directory that is not one',
      setup: (d) => mkdirSync(join(d, 'notca')),
      args: ['certs', 'issue', '--identities', 'identities', '--ca', 'notca', '--out', 'certs'],
      expect: /notca\/root\.pem: missing; notca is not a CA directory/,
    },
    {
      name: 'missing CA directory',
      args: ['certs', 'issue', '--identities', 'identities', '--ca', 'nowhere', '--out', 'certs'],
      expect: /nowhere: no such CA directory/,
    },
    {
      name: 'unknown flag',
      args: ['certs', 'issue', '--identites', 'identities'],
      expect: /certs issue: Unknown option '--identites'/,
    },
    {
      name: 'missing flag',
      args: ['certs', 'issue', '--identities', 'identities'],
      expect: /certs issue: --ca is required/,
    },
    {
      name: 'bad duration',
      args: [...ISSUE, '--renew-within', 'soon'],
      expect: /--renew-within: "soon" is not a duration/,
    },
    {
      name: 'bad key algorithm',
      args: [...ISSUE, '--key-algorithm', 'dsa'],
      expect: /--key-algorithm must be one of/,
    },
  ];
  for (const c of cases) {
    const dir = workspace();
    try {
      if (c.registry) {
        rmSync(join(dir, 'identities', 'example.yaml'));
        writeFileSync(join(dir, 'identities', 'bad.yaml'), c.registry);
      }
      c.setup?.(dir);
      const before = snapshot(dir);
      const r = run(dir, ...(c.args ?? ISSUE));
      assert.notEqual(r.code, 0, c.name);
      assert.equal(r.stdout, '', `${c.name}: stdout ${r.stdout}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${c.name}: ${r.stderr}`);
      assert.match(lines[0]!, c.expect, c.name);
      assert.doesNotMatch(r.stderr, /\n\s+at /, `${c.name}: stack trace`);
      assert.deepEqual(snapshot(dir), before, `${c.name}: wrote something`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('ca init refuses to overwrite an existing CA without --force', () => {
  const dir = workspace();
  try {
    assert.equal(run(dir, 'ca', 'init', '--trust-domain', 'example.org', '--out', 'ca').code, 0);
    const before = snapshot(join(dir, 'ca'));
    const again = run(dir, 'ca', 'init', '--trust-domain', 'example.org', '--out', 'ca');
    assert.equal(again.code, 1);
    assert.match(again.stderr, /a CA already exists here .* pass --force/);
    assert.deepEqual(snapshot(join(dir, 'ca')), before);
    assert.equal(run(dir, 'ca', 'init', '--trust-domain', 'example.org', '--out', 'ca', '--force').code, 0);
    assert.notDeepEqual(snapshot(join(dir, 'ca')), before);
    const bad = run(dir, 'ca', 'init', '--trust-domain', 'Bad_Domain!', '--out', 'ca2');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /trust domain characters/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('certs revoke adds the serial to the CRL and names the workload', () => {
  const dir = workspace();
  try {
    assert.equal(run(dir, ...ISSUE).code, 0);
    const serial = spawnSync(
      'openssl',
      ['x509', '-in', join(dir, 'certs', 'orders.pem'), '-noout', '-serial'],
      { encoding: 'utf8' },
    )
      .stdout.trim()
      .split('=')[1]!;
    const r = run(dir, 'certs', 'revoke', '--serial', serial, '--reason', 'keyCompromise');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /revoked serial [0-9a-f]+ \(orders\); CRL #2/);
    const crl = spawnSync('openssl', ['crl', '-in', join(dir, 'certs', 'crl.pem'), '-noout', '-text'], {
      encoding: 'utf8',
    }).stdout;
    assert.match(crl, new RegExp(serial.replace(/^0+/, '')));
    const bad = run(dir, 'certs', 'revoke', '--serial', 'not-hex');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /"not-hex" is not a certificate serial/);
    // A CRL that is there but unreadable is not "no CRL yet": revoking must not start a new,
    // empty CRL over it and so drop the revocation above.
    const crlFile = join(dir, 'certs', 'crl.pem');
    renameSync(crlFile, `${crlFile}.saved`);
    mkdirSync(crlFile);
    const unreadable = run(dir, 'certs', 'revoke', '--serial', '0a0b');
    assert.equal(unreadable.code, 1, unreadable.stdout);
    assert.match(unreadable.stderr, /crl\.pem: cannot be read \(EISDIR\)/);
    assert.equal(run(dir, ...ISSUE).code, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('with the root key moved offline, certs issue renews and certs revoke revokes', () => {
  const dir = workspace();
  try {
    assert.equal(run(dir, ...ISSUE).code, 0);
    renameSync(join(dir, 'certs', 'ca', 'root-key.pem'), join(dir, 'root-key.offline.pem'));
    const renew = run(dir, ...ISSUE, '--validity', '72h', '--renew-within', '48h');
    assert.equal(renew.code, 0, renew.stderr);
    assert.match(renew.stdout, /renewed/);
    const serial = new X509Certificate(readFileSync(join(dir, 'certs', 'web.pem'))).serialNumber;
    const revoke = run(dir, 'certs', 'revoke', '--serial', serial);
    assert.equal(revoke.code, 0, revoke.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--help works for every command and an unknown command exits 2', () => {
  const dir = workspace();
  try {
    for (const args of [
      ['--help'],
      ['ca', 'init', '--help'],
      ['certs', 'issue', '--help'],
      ['certs', 'revoke', '--help'],
    ]) {
      const r = run(dir, ...args);
      assert.equal(r.code, 0, args.join(' '));
      assert.match(r.stdout, /usage:/);
    }
    const r = run(dir, 'frobnicate');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown command "frobnicate"/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
