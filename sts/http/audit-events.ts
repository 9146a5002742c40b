import type { AuditEvent } from '../../core/index.ts';
import type { KeyringChange } from '../keyring/advance.ts';

/** Audit events for keyring changes this replica stored: one `key.rotated` per rotation, `admin.key_*` otherwise. */
export function keyringAuditEvents(
  changes: readonly KeyringChange[],
  nowMs: number,
  source: string | undefined,
): AuditEvent[] {
  const time = new Date(nowMs).toISOString();
  return changes.map((c): AuditEvent => {
    const base = { time, ...(source ? { source } : {}), target: c.kid };
    switch (c.kind) {
      case 'rotated':
        return {
          ...base,
          type: 'key.rotated',
          action: 'key.rotate',
          decision: 'allow',
          reason: 'rotated',
          attributes: { kid: c.kid, previousKid: c.previousKid },
        };
      case 'created':
        return {
          ...base,
          type: 'admin.key_created',
          action: 'key.create',
          attributes: { kid: c.kid, state: c.state },
        };
      case 'removed':
        return { ...base, type: 'admin.key_removed', action: 'key.remove', attributes: { kid: c.kid } };
    }
  });
}
