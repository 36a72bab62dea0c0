// TupleData of pgoutput Insert / Update / Delete (PostgreSQL 15 docs, 55.9, "TupleData"): the
// column values of one row, the decoder's hot path.

import { protocolError, tagText, type Cursor } from './pgoutput-cursor.js';
import type { Tuple } from './pgoutput-messages.js';

/** First byte of each column inside TupleData (55.9, "TupleData"). */
const ColumnKind = {
  Null: 0x6e, // 'n'
  UnchangedToast: 0x75, // 'u'
  Text: 0x74, // 't'
  Binary: 0x62, // 'b'
} as const;

/** Tuple-part markers inside Insert / Update / Delete. */
export const TuplePart = {
  New: 0x4e, // 'N'
  Key: 0x4b, // 'K'
  Old: 0x4f, // 'O'
} as const;

/**
 * TupleData: Int16 column count, then per column Byte1 kind: 'n' NULL, 'u' unchanged TOASTed value
 * (not sent), 't' Int32 length + text bytes, 'b' Int32 length + binary bytes.
 * This is the hot path: one string per text column, nothing else allocated per column.
 */
export function parseTuple(c: Cursor): Tuple {
  const n = c.u16();
  const buf = c.buf;
  const end = c.end;
  const values: (string | null)[] = [];
  const unchanged: number[] = [];
  let p = c.pos;
  for (let i = 0; i < n; i++) {
    if (p >= end) {
      c.pos = p;
      c.need(1);
    }
    const kind = buf[p++]!;
    if (kind === ColumnKind.Text) {
      if (p + 4 > end) {
        c.pos = p;
        c.need(4);
      }
      const len = ((buf[p]! << 24) | (buf[p + 1]! << 16) | (buf[p + 2]! << 8) | buf[p + 3]!) >>> 0;
      p += 4;
      if (p + len > end) {
        c.pos = p;
        c.need(len);
      }
      values.push(buf.toString('utf8', p, p + len));
      p += len;
    } else if (kind === ColumnKind.Null) {
      values.push(null);
    } else if (kind === ColumnKind.UnchangedToast) {
      values.push(null);
      unchanged.push(i);
    } else if (kind === ColumnKind.Binary) {
      throw protocolError(
        `pgoutput ${c.what}: column ${i} is in binary format, but only text format is supported: start replication without the 'binary' option`,
      );
    } else {
      throw protocolError(`pgoutput ${c.what}: unknown TupleData column kind ${tagText(kind)} for column ${i}`);
    }
  }
  c.pos = p;
  return { values, unchanged };
}
