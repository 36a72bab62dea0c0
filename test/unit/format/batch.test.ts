import avro from 'avsc';
import { describe, expect, it } from 'vitest';
import { BatchBuilder, BatchDecoder, changeBatchSchema } from '../../../src/format/batch.js';
import { emptyEvent, encodeChange, type ChangeEvent, type RelationInfo } from '../../../src/format/change-event.js';
import { encodeEvent } from '../../../src/format/event-codec.js';

// Format 2 (a segment block: one ChangeBatch, docs/format.md): built from format-1 values, read
// back exactly; the bytes are Avro of changeBatchSchema (avsc reads them); a hex fixture pins them.

const batchType = avro.Type.forSchema(changeBatchSchema as avro.Schema);

function build(events: ChangeEvent[]): Buffer {
  const b = new BatchBuilder();
  for (const ev of events) b.append(encodeEvent(ev));
  return b.finish();
}

const rel: RelationInfo = { oid: 16385, replicaIdentity: 'd', columns: ['id', 'name'], types: ['bigint', 'text'], key: [0] };
const T = 1_795_776_000_123_456;
const fixtureEvents: ChangeEvent[] = [
  {
    ...emptyEvent({ op: 'INSERT', database: 'db', schema: 'public', table: 't' }),
    commitLsn: 0x4000,
    changeLsn: 0x3f00,
    xid: 745,
    commitTime: T,
    position: 0,
    relation: rel,
    new: ['7', 'é'],
  },
  {
    ...emptyEvent({ op: 'UPDATE', database: 'db', schema: 'public', table: 't' }),
    commitLsn: 0x4000,
    changeLsn: 0x3f40,
    xid: 745,
    commitTime: T,
    position: 1,
    relation: rel,
    oldKind: 'K',
    old: ['7', null],
    new: ['-3', null],
    unchanged: [1],
  },
  emptyEvent({ op: 'COMMIT', database: 'db', commitLsn: 0x4000, endLsn: 0x4030, xid: 745, commitTime: T, position: 2 }),
];
const FIXTURE_HEX =
  '060600010702046462808002d20b8089abe9f5cfb00606000680fc018001fffc01000600020200060000026000020c7075626c69630274828002026404046964086e616d6500040c626967696e74087465787400020000000600000100020000020000060002024b0000060104010006040401000400040206020e020002130000060204c3a900000000000600020200000006000000000600000000';

describe('format 2 batch', { timeout: 60_000 }, () => {
  it('byte fixture: the builder writes it, avsc reads it as the documented fields, the decoder gives the events back', () => {
    const bytes = build(fixtureEvents);
    expect(bytes.toString('hex')).toBe(FIXTURE_HEX);
    const fixture = Buffer.from(FIXTURE_HEX, 'hex');
    expect(JSON.parse(JSON.stringify(batchType.fromBuffer(fixture)))).toEqual({
      count: 3,
      ops: { type: 'Buffer', data: [0, 1, 7] },
      txns: [{ database: 'db', commitLsn: 0x4000, xid: 745, commitTime: T, count: 3 }],
      changeLsn: [0x3f00, 0x40, -0x3f40],
      position: [0, 1, 1],
      endLsn: [null, null, 0x30],
      relations: [{ schema: 'public', table: 't', relation: rel }],
      relation: [0, 0, -1],
      schemas: [''],
      tables: [''],
      oldKind: [null, 'K', null],
      oldCount: [-1, 2, -1],
      newCount: [2, 2, -1],
      // Group 0: records without a relation (none here); group 1: relation 0. Column 0 is all integers: deltas 7, 0, -10.
      columns: [[], [{ 'io.katya.cdp.v2.IntColumn': { deltas: [7, 0, -10] } }, { 'io.katya.cdp.v2.TextColumn': { values: ['é', null, null] } }]],
      unchanged: [[], [1], []],
      content: [null, null, null],
      prefix: [null, null, null],
    });
    expect(new BatchDecoder().decode(fixture)).toEqual(fixtureEvents);
  });

  it('round-trips every op, names with and without a relation, relation changes, NULLs and integer-looking text exactly', () => {
    const rel2: RelationInfo = { ...rel, columns: ['id', 'name', 'n'], types: ['bigint', 'text', 'integer'] };
    const ints = ['0', '-1', '123456789012345', '-123456789012345', '007', '-0', '+1', '1e3', '1234567890123456', ' 1', '1.0', '', '٣'];
    const events: ChangeEvent[] = [];
    for (let i = 0; i < 500; i++) {
      const r = i < 250 ? rel : rel2;
      const v = (k: number) => (k % 9 === 0 ? null : ints[(i + k) % ints.length]!);
      const width = r.columns.length;
      events.push({
        ...emptyEvent({
          op: (['INSERT', 'UPDATE', 'DELETE'] as const)[i % 3]!,
          database: i % 50 === 0 ? 'other' : 'db',
          schema: i % 7 === 0 ? 'S' : 'public',
          table: 't',
        }),
        commitLsn: 2 ** 45 + Math.floor(i / 4),
        changeLsn: i % 13 === 0 ? 0 : 2 ** 45 - 1000 + i * 3,
        xid: 4_000_000_000 + Math.floor(i / 4),
        commitTime: T + Math.floor(i / 4),
        position: i % 4,
        relation: r,
        oldKind: i % 3 === 0 ? null : 'O',
        old: i % 3 === 0 ? null : Array.from({ length: width }, (_, k) => v(k + 1)),
        new: i % 3 === 2 ? null : Array.from({ length: width }, (_, k) => (k === 0 ? String(i) : v(k))),
        unchanged: i % 11 === 0 ? [1] : [],
      });
    }
    events.push(
      emptyEvent({
        op: 'TRUNCATE',
        database: 'db',
        schema: 'public',
        table: 't',
        content: '{"relations":[["public","t"]],"cascade":false,"restartIdentity":false}',
      }),
    );
    events.push(emptyEvent({ op: 'DDL', database: 'db', content: '{"v":2,"command":"ALTER TABLE t ADD n int"}', prefix: 'cdp.ddl' }));
    events.push(emptyEvent({ op: 'MESSAGE', database: 'db', content: 'x', prefix: 'p' }));
    events.push(emptyEvent({ op: 'SEQUENCES', database: 'db', content: '{"public.s":3}', prefix: 'cdp.sequences' }));
    events.push(emptyEvent({ op: 'COMMIT', database: 'db', commitLsn: 2 ** 52, endLsn: 2 ** 52 + 40, position: 4 }));
    events.push(emptyEvent({ op: 'WATERMARK', database: 'db', commitLsn: 2 ** 52, commitTime: T, content: '{"partition":0}' }));
    // A format-1 value with a tuple but no relation (not written by capture, still kept exactly).
    events.push({ ...emptyEvent({ op: 'INSERT', database: 'db', schema: 'x', table: 'y' }), new: ['1', null, 'z'] });
    const bytes = build(events);
    const back = new BatchDecoder().decode(bytes);
    expect(back).toEqual(events);
    expect((batchType.fromBuffer(bytes) as { count: number }).count).toBe(events.length);
    for (let i = 0; i < events.length; i++) expect(encodeEvent(back[i]!).equals(encodeChange(events[i]!))).toBe(true);
  });

  it('a builder is empty again after finish(), and a bad value leaves it unchanged', () => {
    const b = new BatchBuilder();
    b.append(encodeEvent(fixtureEvents[0]!));
    expect(() => b.append(Buffer.from([0x02, 0x04, 0x64]))).toThrow(RangeError);
    const one = b.finish();
    expect(new BatchDecoder().decode(one)).toEqual([fixtureEvents[0]]);
    expect(b.records).toBe(0);
    for (const ev of fixtureEvents) b.append(encodeEvent(ev));
    expect(b.finish().toString('hex')).toBe(FIXTURE_HEX);
  });

  it('a reference to a relation description the batch does not hold is an error, never a guess', () => {
    const fixture = Buffer.from(FIXTURE_HEX, 'hex');
    const decoded = batchType.fromBuffer(fixture) as { relation: number[] };
    decoded.relation[1] = 1;
    expect(() => new BatchDecoder().decode(batchType.toBuffer(decoded))).toThrow(/relation description 1, the batch holds 1/);
    const short = batchType.fromBuffer(fixture) as { columns: Array<Array<unknown>> };
    short.columns[1]!.pop();
    expect(() => new BatchDecoder().decode(batchType.toBuffer(short))).toThrow(/column 1 has no value left/);
    expect(() => new BatchDecoder().decode(fixture.subarray(0, fixture.length - 1))).toThrow(RangeError);
  });
});
