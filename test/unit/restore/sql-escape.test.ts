import { describe, expect, it } from 'vitest';
import { arrayLiteral, copyRows, quoteLiteral } from '../../../src/restore/sql.js';

// The escaping fast paths (a character scan instead of a RegExp per value, one line per COPY row)
// against straightforward reference implementations, on values full of the characters that matter.

const refQuote = (v: string) => {
  if (v.includes('\u0000')) throw new Error('NUL');
  return `'${v.replace(/'/g, "''")}'`;
};
const refCopy = (rows: (string | null)[][], n: number) =>
  rows
    .map(
      (r) =>
        Array.from({ length: n }, (_, i) => {
          const v = r[i] ?? null;
          return v === null ? '\\N' : v.replace(/[\\\n\r\t]/g, (c) => ({ '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' })[c]!);
        }).join('\t') + '\n',
    )
    .join('');
const refArray = (vs: (string | null)[]) => refQuote(`{${vs.map((v) => (v === null ? 'NULL' : `"${v.replace(/["\\]/g, (c) => `\\${c}`)}"`)).join(',')}}`);

// A deterministic generator (no flaky seeds): short strings over an alphabet of the special characters.
function* values(count: number): Generator<string | null> {
  const alphabet = ['a', 'Z', '0', ' ', "'", '"', '\\', '\t', '\n', '\r', ',', '{', '}', 'é', '\u{1F600}', 'N'];
  let x = 12345;
  for (let k = 0; k < count; k++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    if (x % 11 === 0) {
      yield null;
      continue;
    }
    let s = '';
    for (let n = x % 17; n > 0; n--) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      s += alphabet[x % alphabet.length];
    }
    yield s;
  }
}

describe('SQL and COPY escaping', () => {
  const all = [...values(5000)];
  it('quoteLiteral equals the reference on every value, and refuses NUL', () => {
    for (const v of all) if (v !== null) expect(quoteLiteral(v)).toBe(refQuote(v));
    expect(() => quoteLiteral('a\u0000b')).toThrow(/NUL/);
  });
  it('arrayLiteral equals the reference, and refuses NUL', () => {
    for (let i = 0; i < all.length; i += 7) {
      const vs = all.slice(i, i + 7);
      expect(arrayLiteral(vs)).toBe(refArray(vs));
    }
    expect(() => arrayLiteral(['x', 'a\u0000b'])).toThrow(/NUL/);
  });
  it('copyRows equals the reference, whole and in slices', () => {
    const rows: (string | null)[][] = [];
    for (let i = 0; i + 4 <= all.length; i += 4) rows.push(all.slice(i, i + 4));
    expect(copyRows(rows, 4)).toBe(refCopy(rows, 4));
    expect(copyRows(rows, 4, 10, 20)).toBe(refCopy(rows.slice(10, 20), 4));
    expect(copyRows(rows, 6, 0, 3)).toBe(refCopy(rows.slice(0, 3), 6));
  });
});
