import { readConfiguredFile } from '../../core/index.ts';
import { parsePolicy } from './parse.ts';
import type { Policy } from './parse.ts';

/**
 * Reads and parses a policy file; a missing file is `ERR_CONFIG_NOT_FOUND` (naming `setting`, the
 * config key or flag that named the file), bad content `ERR_CONFIG_INVALID`.
 */
export function loadPolicyFile(file: string, expectedService?: string, setting = 'inbound.policy'): Policy {
  return parsePolicy(readConfiguredFile(file, setting), file, expectedService);
}
