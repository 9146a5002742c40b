import type { Logger } from '../../core/index.ts';
import { StsError } from '../errors.ts';
import type { StsConfig } from '../config.ts';
import { FileStateStore } from './file.ts';
import { MemoryStateStore } from './memory.ts';
import { PostgresStateStore } from './postgres.ts';
import type { StsStateStore } from './store.ts';

/**
 * Opens the state store the config names. Without a `state` section the file store lives in the
 * file keystore's directory; with a vault keystore and no `state` section, state is kept in
 * memory (as before there was a state store) and a warning says that replicas will not share it.
 */
export async function openStateStore(
  config: StsConfig,
  env: Readonly<Record<string, string | undefined>> = process.env,
  logger?: Logger,
): Promise<StsStateStore> {
  const state =
    config.state ??
    (config.keystore.type === 'file' ? { type: 'file' as const, dir: config.keystore.dir } : undefined);
  if (!state) {
    logger?.warn(
      'no state: section with a vault keystore; revocations and join tokens are kept in memory, lost on restart and not shared by replicas (set state: {type: postgres})',
    );
    return new MemoryStateStore();
  }
  switch (state.type) {
    case 'file':
      return new FileStateStore({ dir: state.dir });
    case 'memory':
      return new MemoryStateStore();
    case 'postgres': {
      const url = env[state.urlEnv];
      if (!url)
        throw new StsError(
          'ERR_STS_STATE_UNAVAILABLE',
          `${state.urlEnv} is not set: the postgres state store needs a connection string`,
        );
      return PostgresStateStore.open({ connectionString: url, schema: state.schema });
    }
  }
}
