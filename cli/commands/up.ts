import type { CliCommand } from '../lib/command.ts';

/** Group summary shown by `portcullis --help`. */
export const summary = 'run the local demo mesh on loopback';

/** `portcullis up`: the one-command mesh. It lands with the STS, sidecar and audit collector. */
export const commands: readonly CliCommand[] = [
  {
    name: 'up',
    summary,
    usage:
      'usage: portcullis up\n\nStarts the local mesh (CA, STS, audit collector, two demo services with sidecars) on loopback.',
    async run() {
      console.error(
        'portcullis up: the local mesh is not built yet in this version (it needs the STS, sidecar and audit collector).',
      );
      console.error(
        'What works today: npm run certs (issue workload certificates), portcullis ca init, portcullis certs issue|revoke.',
      );
      return 1;
    },
  },
];
