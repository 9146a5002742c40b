// Small helpers of the operations tests.
export { MemoryAuditSink } from '../../core/index.ts';

/** Node prints serials as upper-case hex; ca/ keeps them lowercase without leading zero bytes. */
export function normalizeSerialHex(serial: string): string {
  return serial.toLowerCase().replace(/^(00)+(?=[0-9a-f])/, '');
}
