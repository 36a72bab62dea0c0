import avro from 'avsc';
import { describe, expect, it } from 'vitest';
import { writeLong } from '../../../src/format/avro.js';
import { BatchBuilder, BatchDecoder, changeBatchSchema } from '../../../src/format/batch.js';
import { changeEventSchema, emptyEvent, type ChangeEvent, type RelationInfo } from '../../../src/format/change-event.js';
import { encodeEvent, EventDecoder } from '../../../src/format/event-codec.js';

// Exact decoding (docs/format.md, "Decoding"): bytes our writer cannot have produced are refused,
// never read as the nearest thing they resemble. Each case starts from the writer's bytes (decoded by
// avsc to the documented fields), changes one thing, and re-encodes; the unchanged re-encoding is
// checked to be the writer's bytes, so each failure is that one change.

type Obj = Record<string, unknown>;
type Schema = { type: string; name: string; namespace?: string; fields: Array<{ name: string }> };

const rel: RelationInfo = { oid: 16385, replicaIdentity: 'd', columns: ['id', 'name'], types: ['bigint', 'text'], key: [0] };
const T = 1_795_776_000_123_456;
const events: ChangeEvent[] = [
  {
    ...emptyEvent({ op: 'INSERT', database: 'db', schema: 'public', table: 't' }),
    commitLsn: 0x4000,
    changeLsn: 0x3f00,
    xid: 745,
    commitTime: T,
    relation: rel,
    new: ['7', 'a'],
  },
  {
    ...emptyEvent({ op: 'DELETE', database: 'db', schema: 'public', table: 't' }),
    commitLsn: 0x4000,
    changeLsn: 0x3f40,
    xid: 745,
    commitTime: T,
    position: 1,
    relation: rel,
    oldKind: 'K',
    old: ['7', null],
  },
  emptyEvent({ op: 'COMMIT', database: 'db', commitLsn: 0x4000, endLsn: 0x4030, xid: 745, commitTime: T, position: 2 }),
];

function build(evs: ChangeEvent[]): Buffer {
  const b = new BatchBuilder();
  for (const ev of evs) b.append(encodeEvent(ev));
  return b.finish();
}

/** The fields `names` of `obj`, encoded as avsc encodes them within the record of `schema`. */
function fields(schema: Schema, names: string[], obj: Obj): Buffer {
  const part = { ...schema, fields: schema.fields.filter((f) => names.includes(f.name)) };
  return avro.Type.forSchema(part as avro.Schema).toBuffer(obj);
}

/** `obj` encoded with the bytes of `field` replaced by `raw`. */
function splice(schema: Schema, obj: Obj, field: string, raw: Buffer): Buffer {
  const names = schema.fields.map((f) => f.name);
  const i = names.indexOf(field);
  return Buffer.concat([fields(schema, names.slice(0, i), obj), raw, fields(schema, names.slice(i + 1), obj)]);
}

const batchSchema = changeBatchSchema as Schema;
const batchType = avro.Type.forSchema(changeBatchSchema as avro.Schema);
const writerBytes = build(events);
const fresh = () =>
  batchType.fromBuffer(writerBytes) as Obj & {
    oldCount: number[];
    newCount: number[];
    relation: number[];
    endLsn: (number | null)[];
    txns: Obj[];
    columns: unknown[][];
  };
const decode = (b: Buffer) => new BatchDecoder().decode(b);

describe('format 2: only the exact encoding decodes', () => {
  it('the unchanged re-encoding is the writer bytes and decodes to the events', () => {
    expect(batchType.toBuffer(fresh()).equals(writerBytes)).toBe(true);
    const endLsnRaw = Buffer.concat([writeLong(3), writeLong(0), writeLong(0), writeLong(1), writeLong(0x30), writeLong(0)]);
    expect(splice(batchSchema, fresh(), 'endLsn', endLsnRaw).equals(writerBytes)).toBe(true);
    expect(decode(writerBytes)).toEqual(events);
  });

  it('refuses an endLsn union branch other than 0 (null) or 1 (long)', () => {
    const raw = Buffer.concat([writeLong(3), writeLong(0), writeLong(0), writeLong(2), writeLong(0x30), writeLong(0)]);
    expect(() => decode(splice(batchSchema, fresh(), 'endLsn', raw))).toThrow(/endLsn: bad union branch 2/);
    const negative = Buffer.concat([writeLong(3), writeLong(0), writeLong(-1), writeLong(0), writeLong(0)]);
    expect(() => decode(splice(batchSchema, fresh(), 'endLsn', negative))).toThrow(/endLsn: bad union branch -1/);
  });

  it('refuses an endLsn delta that gives 0 (the writer writes null for 0)', () => {
    const b = fresh();
    b.endLsn[0] = -0x4000;
    expect(() => decode(batchType.toBuffer(b))).toThrow(/record 0: endLsn delta -16384 gives 0/);
  });

  it('refuses counts and relation indexes below -1', () => {
    for (const [field, k, message] of [
      ['oldCount', 0, /oldCount -2 is below -1/],
      ['newCount', 1, /newCount -2 is below -1/],
      ['relation', 2, /relation index -2 is below -1/],
    ] as const) {
      const b = fresh();
      b[field][k] = -2;
      expect(() => decode(batchType.toBuffer(b))).toThrow(message);
    }
  });

  it('refuses an empty batch and an empty txn run (the writer writes neither)', () => {
    const b = fresh();
    b.txns.unshift({ ...b.txns[0], count: 0 });
    expect(() => decode(batchType.toBuffer(b))).toThrow(/txn run of 0 records/);
    const empty = {
      count: 0,
      ops: Buffer.alloc(0),
      txns: [],
      changeLsn: [],
      position: [],
      endLsn: [],
      relations: [],
      relation: [],
      schemas: [],
      tables: [],
      oldKind: [],
      oldCount: [],
      newCount: [],
      columns: [[]],
      unchanged: [],
      content: [],
      prefix: [],
    };
    expect(() => decode(batchType.toBuffer(empty))).toThrow(/batch count 0/);
  });

  it('refuses IntColumn values past 15 digits (the writer makes such a column a TextColumn)', () => {
    const b = fresh();
    const col = b.columns[1]![0] as { 'io.katya.cdp.v2.IntColumn': { deltas: (number | null)[] } };
    expect(col['io.katya.cdp.v2.IntColumn'].deltas).toEqual([7, 0]);
    col['io.katya.cdp.v2.IntColumn'].deltas[0] = 1e15;
    expect(() => decode(batchType.toBuffer(b))).toThrow(/IntColumn value 1000000000000000 has more than 15 digits/);
  });
});

describe('format 1: only the exact encoding decodes', () => {
  const eventSchema = changeEventSchema as unknown as Schema;
  const eventType = avro.Type.forSchema(changeEventSchema as avro.Schema);
  const valuesRaw = avro.Type.forSchema({ type: 'array', items: ['null', 'string'] }).toBuffer(['7', 'a']);

  it('refuses a union branch other than 0 or 1 for relation, old and new', () => {
    const value = encodeEvent(events[0]!);
    const obj = eventType.fromBuffer(value) as Obj;
    expect(splice(eventSchema, obj, 'new', Buffer.concat([writeLong(1), valuesRaw])).equals(value)).toBe(true);
    expect(() => new EventDecoder().decodeBlock(splice(eventSchema, obj, 'new', Buffer.concat([writeLong(2), valuesRaw])), 1)).toThrow(/bad union branch 2/);
    expect(() => new EventDecoder().decodeBlock(splice(eventSchema, obj, 'old', writeLong(-1)), 1)).toThrow(/bad union branch -1/);
    const relRaw = fields(eventSchema, ['relation'], obj);
    expect(relRaw[0]).toBe(2); // branch 1
    expect(() => new EventDecoder().decodeBlock(splice(eventSchema, obj, 'relation', Buffer.concat([writeLong(3), relRaw.subarray(1)])), 1)).toThrow(
      /bad union branch 3/,
    );
  });
});
