import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decodeChange, emptyEvent, encodeChange, type ChangeEvent, type RelationInfo } from '../../../src/format/change-event.js';
import { encodeEvent as encodeChangeFast, EventDecoder, readValuePrefix, unboundedType } from '../../../src/format/event-codec.js';

// Format 1 (a Kafka record value): the hand encoder, prefix reader and decoder against avsc and
// against byte fixtures written out here (docs/format.md, "Format 1").

const rel: RelationInfo = {
  oid: 4_294_967_295,
  replicaIdentity: 'f',
  columns: ['id', 'ünïcode', 'x'.repeat(300)],
  types: ['bigint', 'public."Odd Type"[]', 'numeric(40,20)'],
  key: [0, 2],
};

const text = (n: number) => {
  const parts = ['a', 'é', '中', '𝄞', '\u0000', '"', '\\'];
  let s = '';
  for (let i = 0; i < n; i++) s += parts[Math.floor(Math.random() * parts.length)];
  return s;
};

function sample(): ChangeEvent[] {
  return [
    emptyEvent({ op: 'WATERMARK', database: 'db', commitLsn: 2 ** 40 + 12345, commitTime: 1_795_776_000_123_456, content: '{"partition":3}' }),
    emptyEvent({ op: 'COMMIT', database: 'db', commitLsn: 0x1_6b37_4d48, endLsn: 0x1_6b37_4d80, xid: 4_000_000_000, position: 1_000_000 }),
    {
      ...emptyEvent({ op: 'UPDATE', database: 'δβ', schema: 'public', table: 'tablé' }),
      commitLsn: 2 ** 52,
      changeLsn: 2 ** 52 - 1,
      xid: 1,
      commitTime: -1,
      position: 63,
      relation: rel,
      oldKind: 'O',
      old: ['1', null, '', text(21), text(22), text(2000)],
      new: ['1', null, 'x'.repeat(1 << 20)],
      unchanged: [1, 64, 8191],
    },
    { ...emptyEvent({ op: 'DELETE', database: 'db', schema: 's', table: 't' }), relation: rel, oldKind: 'K', old: [], new: null },
    emptyEvent({ op: 'DDL', database: 'db', content: JSON.stringify({ command: text(500) }), prefix: 'cdp.ddl' }),
    emptyEvent({ op: 'MESSAGE', database: '', content: '', prefix: '' }),
  ];
}

describe('encodeEvent (format 1)', { timeout: 60_000 }, () => {
  it('produces the same bytes as avsc for every op and edge value', () => {
    for (const ev of sample()) {
      const fast = encodeChangeFast(ev);
      expect(fast.equals(encodeChange(ev)), ev.op).toBe(true);
      expect(decodeChange(fast)).toEqual(ev);
    }
  });

  it('stays equal across many random rows sharing a cached relation', () => {
    for (let i = 0; i < 2000; i++) {
      const n = 1 + Math.floor(Math.random() * 6);
      const values = Array.from({ length: n }, () =>
        Math.random() < 0.2 ? null : Math.random() < 0.5 ? text(Math.floor(Math.random() * 40)) : randomBytes(8).toString('hex'),
      );
      const ev: ChangeEvent = {
        ...emptyEvent({ op: 'INSERT', database: 'db', schema: 'public', table: 'bench' }),
        commitLsn: Math.floor(Math.random() * 2 ** 48),
        changeLsn: Math.floor(Math.random() * 2 ** 48),
        xid: Math.floor(Math.random() * 2 ** 32),
        commitTime: Math.floor(Math.random() * 2 ** 51),
        position: Math.floor(Math.random() * 2 ** 31),
        relation: rel,
        new: values,
        unchanged: values.map((v, j) => (v === null && j % 2 ? j : -1)).filter((j) => j >= 0),
      };
      expect(encodeChangeFast(ev).equals(encodeChange(ev))).toBe(true);
    }
  });
});

// Byte fixtures: the format-1 bytes of two events, checked in. A change here changes the archive's
// and the Kafka topic's format: it needs a new format version, not a new fixture.
const fixtureRel: RelationInfo = { oid: 16385, replicaIdentity: 'd', columns: ['id', 'name'], types: ['bigint', 'text'], key: [0] };
const FIXTURES: Array<[ChangeEvent, string]> = [
  [
    {
      ...emptyEvent({ op: 'UPDATE', database: 'db', schema: 'public', table: 't' }),
      commitLsn: 0x1_6b37_4d48,
      changeLsn: 0x1_6b37_4c00,
      xid: 745,
      commitTime: 1_795_776_000_123_456,
      position: 2,
      relation: fixtureRel,
      oldKind: 'K',
      old: ['7', null],
      new: ['8', 'é'],
      unchanged: [],
    },
    '0204646290b5bab32d80b0bab32d00d20b8089abe9f5cfb006040c7075626c6963027402828002026404046964086e616d6500040c626967696e7408746578740002000002024b0204020237000002040202380204c3a900000000',
  ],
  [
    emptyEvent({ op: 'COMMIT', database: 'db', commitLsn: 0x1_6b37_4d48, endLsn: 0x1_6b37_4d80, xid: 745, commitTime: 1_795_776_000_123_456, position: 3 }),
    '0e04646290b5bab32d0080b6bab32dd20b8089abe9f5cfb00606000000000000000000',
  ],
];

describe('format 1 byte fixtures', () => {
  for (const [ev, hex] of FIXTURES) {
    it(`${ev.op}: encodes to the fixture, and the fixture decodes to the event (ours and avsc)`, () => {
      expect(encodeChangeFast(ev).toString('hex')).toBe(hex);
      expect(encodeChange(ev).toString('hex')).toBe(hex);
      const bytes = Buffer.from(hex, 'hex');
      expect(new EventDecoder().decodeValue(bytes)).toEqual(ev);
      expect(decodeChange(bytes)).toEqual(ev);
      expect(readValuePrefix(bytes)).toEqual({ op: ev.op === 'UPDATE' ? 1 : 7, commitLsn: ev.commitLsn, commitTime: ev.commitTime });
    });
  }
  it('refuses a value that is not format 1 (bad op index, truncated)', () => {
    expect(() => readValuePrefix(Buffer.from('7f', 'hex'))).toThrow(RangeError);
    expect(() => new EventDecoder().decodeValue(Buffer.from(FIXTURES[0]![1].slice(0, 40), 'hex'))).toThrow(RangeError);
  });
});

describe('unbounded bpchar and bit column types', () => {
  it("reads the bare names older captures wrote ('character' is character(1) as SQL) as the unbounded types", () => {
    const legacy = { ...rel, types: ['character', 'character[]', 'bit', 'bit[]', 'character(5)', 'bit(3)', 'public.character'] };
    const ev: ChangeEvent = {
      ...emptyEvent({ op: 'INSERT', database: 'db', schema: 's', table: 't' }),
      relation: legacy,
      new: ['a', '{b}', '1', '{1}', 'c', '101', 'x'],
    };
    const back = new EventDecoder().decodeValue(encodeChangeFast(ev));
    expect(back.relation!.types).toEqual(['bpchar', 'bpchar[]', '"bit"', '"bit"[]', 'character(5)', 'bit(3)', 'public.character']);
    expect(unboundedType('constructor')).toBe('constructor');
  });
});

describe('relation descriptions shared across interleaved streams', () => {
  it('gives one object per description even when two descriptions of one oid alternate', () => {
    // Restore reads every partition through one decoder; around a DDL, one partition carries the
    // table's old description and another its new one, their blocks interleaved.
    const d1 = { ...rel, columns: ['id', 'a', 'b'] };
    const d2 = { ...rel, columns: ['id', 'a', 'b', 'c'], types: [...rel.types, 'text'] };
    const row = (r: RelationInfo) =>
      encodeChangeFast({ ...emptyEvent({ op: 'INSERT', database: 'db', schema: 's', table: 't' }), relation: r, new: r.columns.map(() => '1') });
    const dec = new EventDecoder();
    const a1 = dec.decodeValue(row(d1)).relation;
    const b1 = dec.decodeValue(row(d2)).relation;
    const a2 = dec.decodeValue(row(d1)).relation;
    const b2 = dec.decodeValue(row(d2)).relation;
    expect(a1).toBe(a2);
    expect(b1).toBe(b2);
    expect(a1).not.toBe(b1);
    expect(a1!.columns).toEqual(d1.columns);
    expect(b1!.columns).toEqual(d2.columns);
  });
});
