import type { AuditRecord } from './record.ts';

/** Formats records as an aligned text table: seq, time, type, source, subject, decision, status, action. */
export function formatRecordTable(records: readonly AuditRecord[]): string {
  const rows = records.map((r) => [
    String(r.seq),
    r.time,
    r.event.type,
    r.event.source ?? '-',
    r.event.subject ?? '-',
    r.event.decision ?? '-',
    r.event.status === undefined ? '-' : String(r.event.status),
    r.event.action ?? '-',
  ]);
  const header = ['SEQ', 'TIME', 'TYPE', 'SOURCE', 'SUBJECT', 'DECISION', 'STATUS', 'ACTION'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}
