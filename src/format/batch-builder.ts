import { Reader, Writer } from './avro.js';
import { skipRelation, type ValuePrefix } from './event-codec.js';
import { OPS } from './ops.js';

// Format 2, the archiver's side: a ChangeBatch built straight from format-1 value bytes (see
// batch.ts and docs/format.md). No JavaScript string is made; value bytes are copied as they are.

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

/**
 * a[aStart, aStart + n) equals b[bStart, bStart + n). A byte loop: these runs are short (a
 * database name, a relation description) and compared for every record, where a call into
 * Buffer.compare costs more than the comparison.
 */
function sameBytes(a: Buffer, aStart: number, b: Buffer, bStart: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[aStart + i] !== b[bStart + i]) return false;
  return true;
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
      sameBytes(value, p.dbStart, run.db, 0, run.db.length)
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
      sameBytes(value, start, last, 0, p.namesEnd - start) &&
      sameBytes(value, p.relStart, last, p.namesEnd - start, len - (p.namesEnd - start))
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
    for (const a of this.headColumns()) a.writeTo(w);
    w.long(this.groups.length);
    for (const cols of this.groups) {
      if (cols.length > 0) {
        w.long(cols.length);
        for (const c of cols) c.writeTo(w);
      }
      w.byte(0);
    }
    w.byte(0);
    for (const a of this.tailColumns()) a.writeTo(w);
    const out = w.take();
    this.reset();
    return out;
  }

  /** The per-record arrays written before the value groups, in the schema's field order (batch-schema.ts). */
  private headColumns() {
    return [
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
    ];
  }

  /** The per-record arrays written after the value groups, in the schema's field order. */
  private tailColumns() {
    return [this.unchanged, this.content, this.prefix];
  }

  private reset(): void {
    this.count = 0;
    this.inputBytes = 0;
    this.ops.reset();
    for (const a of [...this.headColumns(), ...this.tailColumns()]) a.reset();
    this.relIndex = new Map();
    this.lastRel = undefined;
    this.lastRelIndex = -1;
    this.groups = [[]];
    this.run = undefined;
    this.prevChangeLsn = 0;
    this.prevPosition = 0;
  }
}
