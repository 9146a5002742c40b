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
      if (LONE_SURROGATE.test(value)) throw new RecordInvalidError('string holds a lone surrogate');
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
      const keys = Object.keys(obj).sort();
      let out = '{';
      let first = true;
      for (const key of keys) {
        const v = obj[key];
        if (v === undefined) continue;
        out += `${first ? '' : ','}${canonicalJson(key)}:${canonicalJson(v)}`;
        first = false;
      }
      return `${out}}`;
    }
    default:
      throw new RecordInvalidError(`${typeof value} is not a JSON value`);
  }
}

const LONE_SURROGATE = /\p{Surrogate}/u;
