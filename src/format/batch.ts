import { Reader, Writer } from './avro.js';
import { relationSchema, type ChangeEvent, type RelationInfo } from './change-event.js';
import { EMPTY_INTS, intArray, readRelation, skipRelation, type ValuePrefix } from './event-codec.js';
import { OPS } from './ops.js';

// Format 2: the rows of a segment block as ONE Avro datum, a ChangeBatch (docs/format.md).
//
// Format 1 stores each Kafka record value as it came: every row change repeats its relation
// description (column names and types), its transaction's database, commit LSN, xid and commit
// time, and interleaves the values of all columns, which zstd cannot model well (the archive was
// 2.9x smaller than the raw pgoutput bytes). A ChangeBatch holds the same records field by field:
//   - relation descriptions once per batch (`relations`), rows refer to them by index;
//   - transaction fields once per run of records of one transaction (`txns`);
//   - changeLsn and position as deltas from the previous record;
//   - column values column by column, per relation (`columns`), and a column whose values are all
//     canonical decimal integers (a bigint key, a counter) as deltas of their values.
// Every batch is self-contained: a reader needs nothing from another block or segment, and a
// reference to a relation the batch does not hold is an error, never a guess.
//
// The archiver builds a batch straight from the format-1 value bytes (BatchBuilder.append: no
// JavaScript strings are made, value bytes are copied as they are); restore decodes it with
// BatchDecoder, which builds each relation and each database string once.

export const FORMAT_V2 = 2;

const nullableString = ['null', 'string'];
const longArray = { type: 'array', items: 'long' };
const intArrayType = { type: 'array', items: 'int' };

/** The Avro schema of a format-2 segment (the `avro.schema` of its container). One source: schemas/change-batch.avsc is generated from it. */
export const changeBatchSchema = {
  type: 'record',
  name: 'ChangeBatch',
  namespace: 'io.katya.cdp.v2',
  doc: 'Format 2 of a segment block (docs/format.md): the change events of one block, field by field. Record k of the batch is made of the k-th item of every per-record array.',
  fields: [
    { name: 'count', type: 'int', doc: 'Number of records in the batch.' },
    { name: 'ops', type: 'bytes', doc: 'One byte per record: the index of its op in io.katya.cdp.Op.' },
    {
      name: 'txns',
      type: {
        type: 'array',
        items: {
          type: 'record',
          name: 'Txn',
          fields: [
            { name: 'database', type: 'string' },
            { name: 'commitLsn', type: 'long' },
            { name: 'xid', type: 'long' },
            { name: 'commitTime', type: 'long' },
            { name: 'count', type: 'int', doc: 'Consecutive records with these four fields.' },
          ],
        },
      },
      doc: 'Runs of consecutive records sharing database, commitLsn, xid and commitTime; the counts add up to count.',
    },
    { name: 'changeLsn', type: longArray, doc: "Per record: changeLsn minus the previous record's (0 before the first)." },
    { name: 'position', type: longArray, doc: "Per record: position minus the previous record's (0 before the first)." },
    { name: 'endLsn', type: { type: 'array', items: ['null', 'long'] }, doc: 'Per record: null when endLsn is 0, else endLsn minus commitLsn.' },
    {
      name: 'relations',
      type: {
        type: 'array',
        items: {
          type: 'record',
          name: 'RelationRef',
          fields: [
            { name: 'schema', type: 'string' },
            { name: 'table', type: 'string' },
            { name: 'relation', type: relationSchema },
          ],
        },
      },
      doc: 'The relation descriptions the records of this batch refer to, each once.',
    },
    { name: 'relation', type: intArrayType, doc: 'Per record: index in relations, or -1 (no relation; its schema and table are in schemas and tables).' },
    { name: 'schemas', type: { type: 'array', items: 'string' }, doc: 'schema of each record without a relation, in order.' },
    { name: 'tables', type: { type: 'array', items: 'string' }, doc: 'table of each record without a relation, in order.' },
    { name: 'oldKind', type: { type: 'array', items: nullableString } },
    { name: 'oldCount', type: intArrayType, doc: 'Per record: number of old values, -1 when old is null.' },
    { name: 'newCount', type: intArrayType, doc: 'Per record: number of new values, -1 when new is null.' },
    {
      name: 'columns',
      type: {
        type: 'array',
        items: {
          type: 'array',
          items: [
            { type: 'record', name: 'TextColumn', fields: [{ name: 'values', type: { type: 'array', items: nullableString } }] },
            { type: 'record', name: 'IntColumn', fields: [{ name: 'deltas', type: { type: 'array', items: ['null', 'long'] } }] },
          ],
        },
      },
      doc: "Group g (0: records without a relation, r + 1: relations[r]) holds column i's values of the old then new tuple of each record of the group, in record order. IntColumn: every value is a canonical decimal integer, stored as the difference from the previous non-null value of the column (0 before the first).",
    },
    { name: 'unchanged', type: { type: 'array', items: intArrayType } },
    { name: 'content', type: { type: 'array', items: nullableString } },
    { name: 'prefix', type: { type: 'array', items: nullableString } },
  ],
};

export const changeBatchSchemaText = JSON.stringify(changeBatchSchema, null, 2) + '\n';

// --- builder (archiver) ---

/** An Avro array being written: its items' bytes and their count. */
class ArrayOut {
  readonly w = new Writer(1024);
  n = 0;
  writeTo(dst: Writer): void {
    if (this.n > 0) {
      dst.long(this.n);
      dst.raw(this.w.buf, 0, this.w.pos);
    }
    dst.byte(0);
  }
  reset(): void {
    this.w.reset();
    this.n = 0;
  }
}

/** Largest canonical integer text we turn into a number: 15 digits stay exact in a double. */
const MAX_INT_DIGITS = 15;

class ColumnOut {
  readonly text = new ArrayOut();
  /** null once a value was not a canonical integer. */
  ints: ArrayOut | null = new ArrayOut();
  private prev = 0;

  /** `buf[start, end)` is one Avro union<null, string> item. */
  add(buf: Buffer, start: number, end: number, strStart: number): void {
    this.text.w.raw(buf, start, end);
    this.text.n++;
    const ints = this.ints;
    if (ints === null) return;
    if (strStart < 0) {
      ints.w.byte(0);
      ints.n++;
      return;
    }
    const v = canonicalInt(buf, strStart, end);
    if (v === undefined) {
      this.ints = null;
      return;
    }
    ints.w.byte(2);
    ints.w.long(v - this.prev);
    ints.n++;
    this.prev = v;
  }

  writeTo(dst: Writer): void {
    if (this.ints !== null) {
      dst.byte(2); // union branch 1: IntColumn
      this.ints.writeTo(dst);
    } else {
      dst.byte(0); // union branch 0: TextColumn
      this.text.writeTo(dst);
    }
  }
}

/** The value of decimal text that String(n) gives back exactly (no sign +, no leading zero, no -0), else undefined. */
function canonicalInt(b: Buffer, start: number, end: number): number | undefined {
  let i = start;
  const neg = b[i] === 0x2d;
  if (neg) i++;
  const digits = end - i;
  if (digits < 1 || digits > MAX_INT_DIGITS) return undefined;
  if (b[i] === 0x30 && (digits > 1 || neg)) return undefined;
  let v = 0;
  for (; i < end; i++) {
    const d = b[i]! - 0x30;
    if (d < 0 || d > 9) return undefined;
    v = v * 10 + d;
  }
  return neg ? -v : v;
}

/** Where the parts of one format-1 value are, found before anything is written (append is all or nothing). */
interface Parsed {
  op: number;
  dbStart: number;
  dbEnd: number;
  commitLsn: number;
  changeLsn: number;
  endLsn: number;
  xid: number;
  commitTime: number;
  position: number;
  namesStart: number; // schema then table strings
  schemaEnd: number;
  namesEnd: number;
  relStart: number; // -1: no relation
  relEnd: number;
  oldKindStart: number;
  oldKindEnd: number;
  /** Items of old then new: [start, end, string start or -1 for null] triples. */
  items: number[];
  oldCount: number;
  newCount: number;
  tailStart: number; // unchanged, content, prefix
  unchangedEnd: number;
  contentEnd: number;
}

function parseValue(value: Buffer, p: Parsed): void {
  const r = new Reader(value);
  p.op = r.long();
  if (p.op < 0 || p.op >= OPS.length) throw new RangeError(`op index ${p.op} out of range`);
  p.dbStart = r.pos;
  r.skipString();
  p.dbEnd = r.pos;
  p.commitLsn = r.long();
  p.changeLsn = r.long();
  p.endLsn = r.long();
  p.xid = r.long();
  p.commitTime = r.long();
  p.position = r.long();
  p.namesStart = r.pos;
  r.skipString();
  p.schemaEnd = r.pos;
  r.skipString();
  p.namesEnd = r.pos;
  const relBranch = r.long();
  if (relBranch === 1) {
    p.relStart = r.pos;
    skipRelation(r);
    p.relEnd = r.pos;
  } else if (relBranch === 0) {
    p.relStart = p.relEnd = -1;
  } else throw new RangeError(`bad relation branch ${relBranch}`);
  p.oldKindStart = r.pos;
  skipNullableString(r);
  p.oldKindEnd = r.pos;
  p.items.length = 0;
  p.oldCount = tuple(r, p.items);
  const before = p.items.length;
  p.newCount = tuple(r, p.items);
  if (p.newCount >= 0 && p.items.length - before !== p.newCount * 3) throw new RangeError('bad tuple');
  p.tailStart = r.pos;
  skipIntArray(r);
  p.unchangedEnd = r.pos;
  skipNullableString(r);
  p.contentEnd = r.pos;
  skipNullableString(r);
  if (r.pos !== value.length) throw new RangeError(`${value.length - r.pos} trailing bytes`);
}

function skipNullableString(r: Reader): void {
  const b = r.long();
  if (b === 1) r.skipString();
  else if (b !== 0) throw new RangeError(`bad union branch ${b}`);
}

function skipIntArray(r: Reader): void {
  for (let n = r.blockCount(); n !== 0; n = r.blockCount()) for (let i = 0; i < n; i++) r.long();
}

/** A union<null, array<union<null, string>>>: pushes item triples, returns the count or -1 for null. */
function tuple(r: Reader, items: number[]): number {
  const b = r.long();
  if (b === 0) return -1;
  if (b !== 1) throw new RangeError(`bad union branch ${b}`);
  let count = 0;
  for (let n = r.blockCount(); n !== 0; n = r.blockCount()) {
    for (let i = 0; i < n; i++) {
      const start = r.pos;
      const branch = r.long();
      let strStart = -1;
      if (branch === 1) {
        const len = r.long();
        strStart = r.skip(len);
      } else if (branch !== 0) throw new RangeError(`bad union branch ${branch}`);
      items.push(start, r.pos, strStart);
      count++;
    }
  }
  return count;
}

/** Builds one ChangeBatch from format-1 values (the Kafka record values, as they are). */
export class BatchBuilder {
  private count = 0;
  private inputBytes = 0;
  private readonly ops = new Writer(4096);
  private readonly txns = new ArrayOut();
  private readonly changeLsn = new ArrayOut();
  private readonly position = new ArrayOut();
  private readonly endLsn = new ArrayOut();
  private readonly relations = new ArrayOut();
  private readonly relation = new ArrayOut();
  private readonly schemas = new ArrayOut();
  private readonly tables = new ArrayOut();
  private readonly oldKind = new ArrayOut();
  private readonly oldCount = new ArrayOut();
  private readonly newCount = new ArrayOut();
  private readonly unchanged = new ArrayOut();
  private readonly content = new ArrayOut();
  private readonly prefix = new ArrayOut();
  /** Relation descriptions of this batch by their bytes (schema, table, Relation record). */
  private relIndex = new Map<string, number>();
  private lastRel: Buffer | undefined;
  private lastRelIndex = -1;
  /** Column groups: [0] records without a relation, [r + 1] relations[r]. */
  private groups: ColumnOut[][] = [[]];
  private run: { db: Buffer; commitLsn: number; xid: number; commitTime: number; count: number } | undefined;
  private prevChangeLsn = 0;
  private prevPosition = 0;
  private readonly parsed: Parsed = { items: [] } as unknown as Parsed;

  /** Records in the batch. */
  get records(): number {
    return this.count;
  }
  /** Format-1 bytes appended (what the segment size limits count). */
  get bytesIn(): number {
    return this.inputBytes;
  }
  /** Rough memory held by the batch being built. */
  get memoryBytes(): number {
    return this.inputBytes;
  }

  /**
   * Adds one format-1 value. Throws (RangeError) on a value that is not one, leaving the batch as
   * it was. Returns the fields the segment manifest needs.
   */
  append(value: Buffer): ValuePrefix {
    const p = this.parsed;
    parseValue(value, p);
    this.count++;
    this.inputBytes += value.length;
    this.ops.byte(p.op);
    this.addToRun(value, p);
    this.changeLsn.w.long(p.changeLsn - this.prevChangeLsn);
    this.changeLsn.n++;
    this.prevChangeLsn = p.changeLsn;
    this.position.w.long(p.position - this.prevPosition);
    this.position.n++;
    this.prevPosition = p.position;
    if (p.endLsn === 0) this.endLsn.w.byte(0);
    else {
      this.endLsn.w.byte(2);
      this.endLsn.w.long(p.endLsn - p.commitLsn);
    }
    this.endLsn.n++;
    let group = 0;
    if (p.relStart >= 0) {
      const rel = this.relationIndex(value, p);
      this.relation.w.long(rel);
      group = rel + 1;
    } else {
      this.relation.w.long(-1);
      this.schemas.w.raw(value, p.namesStart, p.schemaEnd);
      this.schemas.n++;
      this.tables.w.raw(value, p.schemaEnd, p.namesEnd);
      this.tables.n++;
    }
    this.relation.n++;
    this.oldKind.w.raw(value, p.oldKindStart, p.oldKindEnd);
    this.oldKind.n++;
    this.oldCount.w.long(p.oldCount);
    this.oldCount.n++;
    this.newCount.w.long(p.newCount);
    this.newCount.n++;
    const cols = this.groups[group]!;
    const items = p.items;
    const oldItems = Math.max(0, p.oldCount) * 3;
    for (let k = 0; k < items.length; k += 3) {
      const i = (k < oldItems ? k : k - oldItems) / 3;
      const col = (cols[i] ??= new ColumnOut());
      col.add(value, items[k]!, items[k + 1]!, items[k + 2]!);
    }
    this.unchanged.w.raw(value, p.tailStart, p.unchangedEnd);
    this.unchanged.n++;
    this.content.w.raw(value, p.unchangedEnd, p.contentEnd);
    this.content.n++;
    this.prefix.w.raw(value, p.contentEnd, value.length);
    this.prefix.n++;
    return { op: p.op, commitLsn: p.commitLsn, commitTime: p.commitTime };
  }

  private addToRun(value: Buffer, p: Parsed): void {
    const run = this.run;
    if (
      run &&
      run.commitLsn === p.commitLsn &&
      run.xid === p.xid &&
      run.commitTime === p.commitTime &&
      run.db.length === p.dbEnd - p.dbStart &&
      value.compare(run.db, 0, run.db.length, p.dbStart, p.dbEnd) === 0
    ) {
      run.count++;
      return;
    }
    this.closeRun();
    this.run = { db: Buffer.from(value.subarray(p.dbStart, p.dbEnd)), commitLsn: p.commitLsn, xid: p.xid, commitTime: p.commitTime, count: 1 };
  }

  private closeRun(): void {
    const run = this.run;
    if (!run) return;
    const w = this.txns.w;
    w.raw(run.db);
    w.long(run.commitLsn);
    w.long(run.xid);
    w.long(run.commitTime);
    w.long(run.count);
    this.txns.n++;
    this.run = undefined;
  }

  /** The index of the record's (schema, table, relation) in this batch, added when new. */
  private relationIndex(value: Buffer, p: Parsed): number {
    const start = p.namesStart;
    const end = p.relEnd;
    // (schema, table) then the Relation record, skipping the union branch byte between them.
    const last = this.lastRel;
    const len = end - start - 1;
    if (
      last &&
      last.length === len &&
      value.compare(last, 0, p.namesEnd - start, start, p.namesEnd) === 0 &&
      value.compare(last, p.namesEnd - start, len, p.relStart, end) === 0
    ) {
      return this.lastRelIndex;
    }
    const bytes = Buffer.concat([value.subarray(start, p.namesEnd), value.subarray(p.relStart, end)]);
    const key = bytes.toString('latin1');
    let index = this.relIndex.get(key);
    if (index === undefined) {
      index = this.relIndex.size;
      this.relIndex.set(key, index);
      this.relations.w.raw(bytes);
      this.relations.n++;
      this.groups.push([]);
    }
    this.lastRel = bytes;
    this.lastRelIndex = index;
    return index;
  }

  /** The batch's Avro binary (one ChangeBatch datum); the builder is then empty again. */
  finish(): Buffer {
    if (this.count === 0) throw new Error('finish() on an empty batch');
    this.closeRun();
    const w = new Writer(this.inputBytes + 1024);
    w.long(this.count);
    w.long(this.ops.pos);
    w.raw(this.ops.buf, 0, this.ops.pos);
    for (const a of [
      this.txns,
      this.changeLsn,
      this.position,
      this.endLsn,
      this.relations,
      this.relation,
      this.schemas,
      this.tables,
      this.oldKind,
      this.oldCount,
      this.newCount,
    ])
      a.writeTo(w);
    w.long(this.groups.length);
    for (const cols of this.groups) {
      if (cols.length > 0) {
        w.long(cols.length);
        for (const c of cols) c.writeTo(w);
      }
      w.byte(0);
    }
    w.byte(0);
    for (const a of [this.unchanged, this.content, this.prefix]) a.writeTo(w);
    const out = w.take();
    this.reset();
    return out;
  }

  private reset(): void {
    this.count = 0;
    this.inputBytes = 0;
    this.ops.reset();
    for (const a of [
      this.txns,
      this.changeLsn,
      this.position,
      this.endLsn,
      this.relations,
      this.relation,
      this.schemas,
      this.tables,
      this.oldKind,
      this.oldCount,
      this.newCount,
      this.unchanged,
      this.content,
      this.prefix,
    ])
      a.reset();
    this.relIndex = new Map();
    this.lastRel = undefined;
    this.lastRelIndex = -1;
    this.groups = [[]];
    this.run = undefined;
    this.prevChangeLsn = 0;
    this.prevPosition = 0;
  }
}

// --- decoder (restore) ---

interface DecodedRelation {
  schema: string;
  table: string;
  info: RelationInfo;
}

function readArray<T>(r: Reader, item: () => T): T[] {
  const a: T[] = [];
  for (let n = r.blockCount(); n !== 0; n = r.blockCount()) for (let i = 0; i < n; i++) a.push(item());
  return a;
}

function corrupt(message: string): RangeError {
  return new RangeError(message);
}

/**
 * Decodes ChangeBatch data into change events. Keeps, across batches and segments, one object per
 * distinct relation description (the applier caches catalog answers per RelationInfo object).
 */
export class BatchDecoder {
  private readonly relations = new Map<string, DecodedRelation>();
  private readonly infos = new Map<string, RelationInfo>();

  decode(data: Buffer): ChangeEvent[] {
    const r = new Reader(data);
    const count = r.long();
    const opsLen = r.long();
    if (opsLen !== count) throw corrupt(`ops holds ${opsLen} bytes for ${count} records`);
    const opsAt = r.skip(opsLen);
    const txns = readArray(r, () => ({ database: r.string(), commitLsn: r.long(), xid: r.long(), commitTime: r.long(), count: r.long() }));
    const changeLsn = readArray(r, () => r.long());
    const position = readArray(r, () => r.long());
    const endLsn = readArray(r, () => (r.long() === 0 ? null : r.long()));
    const relations = readArray(r, () => this.relation(r));
    const relation = readArray(r, () => r.long());
    const schemas = readArray(r, () => r.string());
    const tables = readArray(r, () => r.string());
    const oldKind = readArray(r, () => r.nullableString());
    const oldCount = readArray(r, () => r.long());
    const newCount = readArray(r, () => r.long());
    const groups = readArray(r, () => readArray(r, () => column(r)));
    const unchanged = readArray(r, () => intArray(r));
    const content = readArray(r, () => r.nullableString());
    const prefix = readArray(r, () => r.nullableString());
    if (r.pos !== data.length) throw corrupt('trailing bytes after the batch');
    for (const [name, a] of [
      ['changeLsn', changeLsn],
      ['position', position],
      ['endLsn', endLsn],
      ['relation', relation],
      ['oldKind', oldKind],
      ['oldCount', oldCount],
      ['newCount', newCount],
      ['unchanged', unchanged],
      ['content', content],
      ['prefix', prefix],
    ] as const) {
      if (a.length !== count) throw corrupt(`${name} holds ${a.length} items for ${count} records`);
    }
    if (groups.length !== relations.length + 1) throw corrupt(`${groups.length} column groups for ${relations.length} relations`);

    const events = new Array<ChangeEvent>(count);
    let t = 0;
    let left = txns[0]?.count ?? 0;
    let named = 0;
    let lsn = 0;
    let pos = 0;
    for (let k = 0; k < count; k++) {
      while (left === 0) {
        if (++t >= txns.length) throw corrupt(`txns cover fewer than ${count} records`);
        left = txns[t]!.count;
      }
      left--;
      const txn = txns[t]!;
      const op = OPS[data[opsAt + k]!];
      if (op === undefined) throw corrupt(`bad op index ${data[opsAt + k]} in record ${k}`);
      lsn += changeLsn[k]!;
      pos += position[k]!;
      const e = endLsn[k];
      const ri = relation[k]!;
      let rel: DecodedRelation | undefined;
      let schema: string;
      let table: string;
      if (ri === -1) {
        if (named >= schemas.length || named >= tables.length) throw corrupt(`record ${k}: schemas/tables too short`);
        schema = schemas[named]!;
        table = tables[named++]!;
      } else {
        rel = relations[ri];
        // Never a guess: a record must find its relation description in its own batch.
        if (rel === undefined) throw corrupt(`record ${k} refers to relation description ${ri}, the batch holds ${relations.length}`);
        schema = rel.schema;
        table = rel.table;
      }
      const cols = groups[ri + 1]!;
      const oc = oldCount[k]!;
      const nc = newCount[k]!;
      const old = oc < 0 ? null : take(cols, oc, k);
      const nw = nc < 0 ? null : take(cols, nc, k);
      events[k] = {
        op,
        database: txn.database,
        commitLsn: txn.commitLsn,
        changeLsn: lsn,
        endLsn: e === null || e === undefined ? 0 : txn.commitLsn + e,
        xid: txn.xid,
        commitTime: txn.commitTime,
        position: pos,
        schema,
        table,
        relation: rel ? rel.info : null,
        oldKind: oldKind[k]!,
        old,
        new: nw,
        unchanged: unchanged[k]!,
        content: content[k]!,
        prefix: prefix[k]!,
      };
    }
    if (left !== 0 || t < txns.length - 1) throw corrupt(`txns cover more than ${count} records`);
    if (named !== schemas.length || named !== tables.length) throw corrupt('schemas/tables hold more names than records without a relation');
    for (const cols of groups) for (const c of cols) if (c.next !== c.values.length) throw corrupt('a column holds more values than the records use');
    return events;
  }

  private relation(r: Reader): DecodedRelation {
    const start = r.pos;
    r.skipString();
    r.skipString();
    const relStart = r.pos;
    skipRelation(r);
    const key = r.buf.toString('latin1', start, r.pos);
    let d = this.relations.get(key);
    if (!d) {
      // One RelationInfo per distinct description, whatever schema and table name it travels with
      // (as the format-1 decoder does).
      const infoKey = r.buf.toString('latin1', relStart, r.pos);
      let info = this.infos.get(infoKey);
      if (!info) {
        info = readRelation(new Reader(r.buf, relStart));
        this.infos.set(infoKey, info);
      }
      const rr = new Reader(r.buf, start);
      d = { schema: rr.string(), table: rr.string(), info };
      this.relations.set(key, d);
    }
    return d;
  }
}

interface Column {
  values: (string | null)[];
  next: number;
}

function column(r: Reader): Column {
  const branch = r.long();
  if (branch === 0) return { values: readArray(r, () => r.nullableString()), next: 0 };
  if (branch !== 1) throw corrupt(`bad column branch ${branch}`);
  let v = 0;
  const values = readArray(r, () => {
    if (r.long() === 0) return null;
    v += r.long();
    return String(v);
  });
  return { values, next: 0 };
}

function take(cols: Column[], n: number, k: number): (string | null)[] {
  const out = new Array<string | null>(n);
  for (let i = 0; i < n; i++) {
    const c = cols[i];
    if (c === undefined || c.next >= c.values.length) throw corrupt(`record ${k}: column ${i} has no value left`);
    out[i] = c.values[c.next++]!;
  }
  return out;
}

export { EMPTY_INTS };
