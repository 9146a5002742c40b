// The dependency direction of docs/architecture.md (package layout). `npm run deps` fails on any violation.
const pkgs = '(core|ca|audit|sts|sidecar)';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'core-imports-nothing-of-ours',
      comment: 'core/ holds shared contracts and plumbing; it may not depend on any other part.',
      severity: 'error',
      from: { path: '^core/' },
      to: { path: '^(ca|audit|sts|sidecar|cli|scripts|test|bench)/' },
    },
    {
      name: 'ca-imports-only-core',
      severity: 'error',
      from: { path: '^ca/' },
      to: { path: '^(audit|sts|sidecar|cli|scripts|test|bench)/' },
    },
    {
      name: 'audit-imports-core-and-ca',
      severity: 'error',
      from: { path: '^audit/' },
      to: { path: '^(sts|sidecar|cli|scripts|test|bench)/' },
    },
    {
      name: 'sts-and-sidecar-never-import-each-other',
      comment: 'They talk over HTTP; their shared contracts live in core/.',
      severity: 'error',
      from: { path: '^(sts|sidecar)/' },
      to: { path: '^(sts|sidecar)/', pathNot: '^$1/' },
    },
    {
      name: 'sts-and-sidecar-import-no-tooling',
      severity: 'error',
      from: { path: '^(sts|sidecar)/' },
      to: { path: '^(cli|scripts|test|bench)/' },
    },
    {
      name: 'only-through-index',
      comment: "Another package's internals are reached only through its index.ts.",
      severity: 'error',
      from: { path: `^${pkgs}/` },
      to: { path: `^${pkgs}/`, pathNot: ['^$1/', `^${pkgs}/index\\.ts$`] },
    },
    {
      name: 'tools-use-public-faces',
      comment: 'cli/, scripts/ and bench/ wire library parts through their index.ts only.',
      severity: 'error',
      from: { path: '^(cli|scripts|bench)/' },
      to: { path: `^${pkgs}/`, pathNot: `^${pkgs}/index\\.ts$` },
    },
    {
      name: 'nothing-imports-cli-scripts-test',
      severity: 'error',
      from: { path: '^(core|ca|audit|sts|sidecar|bench)/' },
      to: { path: '^(cli|scripts|test)/' },
    },
    {
      name: 'cli-scripts-test-stay-apart',
      severity: 'error',
      from: { path: '^(cli|scripts|test)/' },
      to: { path: '^(cli|scripts|test)/', pathNot: '^$1/' },
    },
    {
      name: 'demo-apps-stand-alone',
      comment:
        'The demo services are plain apps: they know nothing of Portcullis; only cli/ and test/ start them.',
      severity: 'error',
      from: { path: '^demo/' },
      to: { path: '^(core|ca|audit|sts|sidecar|cli|scripts|test|bench)/' },
    },
    {
      name: 'only-tools-start-demo-apps',
      severity: 'error',
      from: { path: '^(core|ca|audit|sts|sidecar|bench|scripts)/' },
      to: { path: '^demo/' },
    },
    {
      name: 'no-unresolvable',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)node_modules/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.json'] },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
