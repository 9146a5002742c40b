import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AuditRecord } from '../../audit/index.ts';
import {
  ChainVerifier,
  GENESIS_PREV,
  buildRecord,
  hashRecord,
  parseRecordLine,
  verifyChain,
} from '../../audit/index.ts';
import { decision } from './helpers.ts';

function log(n: number): { records: AuditRecord[]; lines: string[] } {
  const records: AuditRecord[] = [];
  const lines: string[] = [];
  let prev = GENESIS_PREV;
  for (let i = 0; i < n; i++) {
    const { record, line } = buildRecord(
      i,
      '2026-01-01T00:00:00.000Z',
      decision(i, { attributes: { kid: `k${i}`, n: i } }),
      prev,
    );
    records.push(record);
    lines.push(line);
    prev = record.hash;
  }
  return { records, lines };
}

test('a record hash is SHA-256 of the canonical JSON of {seq, time, event, prev}, and the line parses back to the record', () => {
  const { records, lines } = log(3);
  assert.equal(records[1]!.hash, hashRecord(records[1]!));
  assert.equal(records[1]!.prev, records[0]!.hash);
  assert.deepEqual(parseRecordLine(lines[2]!), records[2]);
  assert.equal(lines[0], JSON.stringify(JSON.parse(lines[0]!)), 'stored lines hold no whitespace');
});

test('verifyChain accepts an intact chain and names the first bad seq of a broken one', () => {
  const { records } = log(6);
  const ok = verifyChain(records);
  assert.ok(ok.ok && ok.size === 6 && ok.head === records[5]!.hash);
  const table: [string, AuditRecord[], number, RegExp][] = [
    [
      'altered event',
      records.map((r, i) => (i === 2 ? { ...r, event: { ...r.event, status: 500 } } : r)),
      2,
      /hash does not match/,
    ],
    // The edited record is named, not the next one whose link it broke.
    ['record 3 edited and its hash recomputed', rehash(records, 3), 3, /record 3 was rewritten/],
    ['record 4 relinked and its hash recomputed', relink(records, 4), 4, /prev does not match/],
    ['missing record', records.filter((_, i) => i !== 1), 1, /missing/],
    ['duplicate', [...records.slice(0, 3), records[2]!, ...records.slice(3)], 3, /duplicated/],
    ['wrong genesis', [{ ...records[0]!, prev: 'f'.repeat(64) }], 0, /hash does not match|prev/],
  ];
  for (const [label, input, seq, reason] of table) {
    const v = verifyChain(input);
    assert.ok(!v.ok, label);
    assert.equal(v.code, 'ERR_AUDIT_CHAIN_BROKEN', label);
    assert.equal(v.seq, seq, label);
    assert.match(v.reason, reason, label);
  }
});

function relink(records: AuditRecord[], at: number): AuditRecord[] {
  return records.map((r, i) => {
    if (i !== at) return r;
    const prev = 'e'.repeat(64);
    return { ...r, prev, hash: hashRecord({ ...r, prev }) };
  });
}

function rehash(records: AuditRecord[], at: number): AuditRecord[] {
  return records.map((r, i) => {
    if (i !== at) return r;
    const event = { ...r.event, status: 599 };
    return { ...r, event, hash: hashRecord({ ...r, event }) };
  });
}

test('the byte scanner and the string scanner of stored lines agree on every single-byte mutation', () => {
  const { lines } = log(12);
  let rng = 42;
  const rand = (n: number) => {
    rng = (rng * 1103515245 + 12345) & 0x7fffffff;
    return rng % n;
  };
  for (let k = 0; k < 400; k++) {
    const mutated = [...lines];
    const i = rand(lines.length);
    const line = mutated[i]!;
    const at = rand(line.length);
    const ch = String.fromCharCode(32 + rand(95));
    mutated[i] = line.slice(0, at) + ch + line.slice(at + 1);
    const byString = new ChainVerifier();
    for (const l of mutated) if (!byString.pushLine(l)) break;
    const byBytes = new ChainVerifier();
    byBytes.pushBuffer(Buffer.from(`${mutated.join('\n')}\n`));
    const a = byString.result();
    const b = byBytes.result();
    assert.equal(b.ok, a.ok, `mutation ${k}: line ${i} at ${at} -> ${ch}`);
    if (!a.ok && !b.ok) assert.equal(b.seq, a.seq, `mutation ${k}`);
    if (ch !== line[at]) assert.equal(a.ok, false, `mutation ${k} must be detected`);
  }
});
