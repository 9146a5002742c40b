import { KEY_ALGORITHMS, createNextIntermediate, initCaDirectory } from '../../ca/index.ts';
import type { KeyAlgorithm } from '../../ca/index.ts';
import { parseDuration } from '../../core/index.ts';
import type { CliCommand } from '../lib/command.ts';
import { UsageError, parseFlags, required } from '../lib/command.ts';

/** Group summary shown by `portcullis --help`. */
export const summary = 'create the root and intermediate CA';

const USAGE = `usage: portcullis ca init --trust-domain DOMAIN --out DIR [flags]

Creates a root CA and an intermediate CA (pathLen 0, name-constrained to the trust domain) in DIR.
Private keys are written 0600. An existing CA is never overwritten without --force.

flags:
  --trust-domain DOMAIN      SPIFFE trust domain, e.g. example.org (required)
  --out DIR                  directory for root.pem, root-key.pem, intermediate.pem, intermediate-key.pem (required)
  --key-algorithm ALG        ${KEY_ALGORITHMS.join(' | ')} (default ecdsa-p256)
  --root-validity DURATION   default 87600h (10 years)
  --intermediate-validity DURATION   default 8760h (1 year)
  --force                    replace an existing CA in DIR`;

/** Checks a --key-algorithm value. */
export function keyAlgorithmFlag(value: string | undefined, command: string): KeyAlgorithm {
  const alg = value ?? 'ecdsa-p256';
  if (!(KEY_ALGORITHMS as readonly string[]).includes(alg)) {
    throw new UsageError(
      `${command}: --key-algorithm must be one of ${KEY_ALGORITHMS.join(', ')}, got "${alg}"`,
    );
  }
  return alg as KeyAlgorithm;
}

/** Parses a duration flag, naming the flag when it is wrong. */
export function durationFlag(value: string | undefined, flag: string, command: string): number | undefined {
  if (value === undefined) return undefined;
  try {
    return parseDuration(value);
  } catch (err) {
    throw new UsageError(`${command}: --${flag}: ${(err as Error).message}`);
  }
}

/** `portcullis ca init`. */
export const commands: readonly CliCommand[] = [
  {
    name: 'ca init',
    summary: 'create a root and an intermediate CA',
    usage: USAGE,
    async run(argv) {
      const cmd = 'ca init';
      const flags = parseFlags(
        argv,
        {
          'trust-domain': { type: 'string' },
          out: { type: 'string' },
          'key-algorithm': { type: 'string' },
          'root-validity': { type: 'string' },
          'intermediate-validity': { type: 'string' },
          force: { type: 'boolean' },
        },
        cmd,
      );
      const ca = await initCaDirectory(required(flags.out, 'out', cmd), {
        trustDomain: required(flags['trust-domain'], 'trust-domain', cmd),
        keyAlgorithm: keyAlgorithmFlag(flags['key-algorithm'], cmd),
        force: flags.force ?? false,
        rootValidityMs: durationFlag(flags['root-validity'], 'root-validity', cmd),
        intermediateValidityMs: durationFlag(flags['intermediate-validity'], 'intermediate-validity', cmd),
      });
      console.log(`created CA for trust domain ${ca.trustDomain} in ${ca.dir}`);
      console.log(`  root         ${ca.root.subject}, valid until ${ca.root.notAfter.toISOString()}`);
      console.log(
        `  intermediate ${ca.intermediate.cert.subject}, valid until ${ca.intermediate.cert.notAfter.toISOString()}`,
      );
      return 0;
    },
  },
  {
    name: 'ca rotate-intermediate',
    summary: 'create the next intermediate, signed by the same root, in a new CA directory',
    usage: `usage: portcullis ca rotate-intermediate --ca DIR --out NEWDIR [--intermediate-validity DURATION]

Signs a new intermediate with the root in DIR (root.pem and root-key.pem) and writes NEWDIR with
root.pem, intermediate.pem and intermediate-key.pem (0600); the root key is not copied. Then follow
docs/operations.md § Intermediate rotation: copy NEWDIR's intermediate pair into the STS's ca.dir
(key first, then certificate: the STS switches once the pair matches) and let parts renew.

flags:
  --ca DIR                          current CA directory, with the root key (required)
  --out NEWDIR                      new CA directory (required; must not hold a CA)
  --intermediate-validity DURATION  default 8760h (1 year)`,
    async run(argv) {
      const cmd = 'ca rotate-intermediate';
      const flags = parseFlags(
        argv,
        { ca: { type: 'string' }, out: { type: 'string' }, 'intermediate-validity': { type: 'string' } },
        cmd,
      );
      const ca = await createNextIntermediate({
        rootDir: required(flags.ca, 'ca', cmd),
        outDir: required(flags.out, 'out', cmd),
        ...(flags['intermediate-validity']
          ? { validityMs: durationFlag(flags['intermediate-validity'], 'intermediate-validity', cmd)! }
          : {}),
      });
      console.log(
        `created intermediate ${ca.intermediate.cert.subject} in ${ca.dir}, valid until ${ca.intermediate.cert.notAfter.toISOString()}`,
      );
      return 0;
    },
  },
];
