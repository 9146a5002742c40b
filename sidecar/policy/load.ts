import { readConfiguredFile } from '../../core/index.ts';
import { parsePolicy } from './parse.ts';
import type { Policy } from './parse.ts';

/** Reads and parses a policy file; a missing file is `ERR_CONFIG_NOT_FOUND`, bad content `ERR_CONFIG_INVALID`. */
export function loadPolicyFile(file: string, expectedService?: string): Policy {
  return parsePolicy(readConfiguredFile(file, 'inbound.policy'), file, expectedService);
}
