import { Reader, Writer } from './avro.js';
import { changeEventType, type ChangeEvent, type RelationInfo } from './change-event.js';
import { OP_INDEX, OPS } from './ops.js';

// Format 1 (schemas/change-event.avsc) by hand, for the hot paths: capture encodes every Kafka
// record value with encodeEvent (byte for byte what avsc's encodeChange gives), the archiver reads
// a value's leading fields with readValuePrefix, and EventDecoder decodes format-1 segment blocks
// for restore. Unit tests hold them to avsc and to hex fixtures.

// --- encoder ---

const out = new Writer(1 << 16);
const relationCache = new WeakMap<RelationInfo, Buffer>();

/**
 * The relation (oid, replica identity, column names and types, key) is the same for every change
 * of a table: its encoding is cached per RelationInfo object, not re-encoded for every row.
 */
function relationBytes(r: RelationInfo): Buffer {
  let cached = relationCache.get(r);
  if (cached) return cached;
  const w = new Writer(256);
  w.long(1); // union branch: Relation
  w.long(r.oid);
  w.string(r.replicaIdentity);
  writeStrings(w, r.columns);
  writeStrings(w, r.types);
  writeInts(w, r.key);
  cached = w.take();
  relationCache.set(r, cached);
  return cached;
}

// Loops written out (no item callbacks): this runs for every change capture produces.
function writeStrings(w: Writer, items: readonly string[]): void {
  if (items.length > 0) {
    w.long(items.length);
    for (let i = 0; i < items.length; i++) w.string(items[i]!);
  }
  w.byte(0);
}

function writeInts(w: Writer, items: readonly number[]): void {
  if (items.length > 0) {
    w.long(items.length);
    for (let i = 0; i < items.length; i++) w.long(items[i]!);
  }
  w.byte(0);
}

function writeValues(w: Writer, v: (string | null)[] | null): void {
  if (v === null) {
    w.byte(0);
    return;
  }
  w.byte(2);
  if (v.length > 0) {
    w.long(v.length);
    for (let i = 0; i < v.length; i++) w.nullableString(v[i]!);
  }
  w.byte(0);
}

/** Avro binary of the event (format 1, a Kafka record value); equal to encodeChange(ev). */
export function encodeEvent(ev: ChangeEvent): Buffer {
  const rel = ev.relation ? relationBytes(ev.relation) : null;
  const code = OP_INDEX.get(ev.op);
  if (code === undefined) throw new Error(`unknown op ${String(ev.op)}`);
  const w = out;
  w.reset();
  w.long(code);
  w.string(ev.database);
  w.long(ev.commitLsn);
  w.long(ev.changeLsn);
  w.long(ev.endLsn);
  w.long(ev.xid);
  w.long(ev.commitTime);
  w.long(ev.position);
  w.string(ev.schema);
  w.string(ev.table);
  if (rel) w.raw(rel);
  else w.byte(0);
  w.nullableString(ev.oldKind);
  writeValues(w, ev.old);
  writeValues(w, ev.new);
  writeInts(w, ev.unchanged);
  w.nullableString(ev.content);
  w.nullableString(ev.prefix);
  return w.take();
}

// --- prefix reader ---

/** The fields of a format-1 value that a segment's manifest needs, read without a full decode. */
export interface ValuePrefix {
  op: number;
  commitLsn: number;
  commitTime: number;
}

export function readValuePrefix(value: Buffer): ValuePrefix {
  const r = new Reader(value);
  const op = r.long();
  if (op < 0 || op >= OPS.length) throw new RangeError(`op index ${op} out of range`);
  r.skipString(); // database
  const commitLsn = r.long();
  r.long(); // changeLsn
  r.long(); // endLsn
  r.long(); // xid
  const commitTime = r.long();
  return { op, commitLsn, commitTime };
}

// --- decoder ---

/** Decoded empty int arrays are this one frozen array: consumers never modify event arrays. */
export const EMPTY_INTS = Object.freeze([]) as unknown as number[];

interface StringSlot {
  bytes: Buffer | undefined;
  value: string;
}

/** A string, reused when its bytes equal the last one decoded in this slot (names repeat). */
function interned(r: Reader, slot: StringSlot): string {
  const len = r.long();
  const start = r.skip(len);
  const b = r.buf;
  const last = slot.bytes;
  if (last && last.length === len) {
    // Names are short: a byte loop is cheaper here than a call into Buffer.compare.
    let i = 0;
    while (i < len && last[i] === b[start + i]) i++;
    if (i === len) return slot.value;
  }
  slot.bytes = Buffer.from(b.subarray(start, r.pos));
  slot.value = b.utf8Slice(start, r.pos);
  return slot.value;
}

function stringArray(r: Reader): string[] {
  const a: string[] = [];
  for (let n = r.blockCount(); n !== 0; n = r.blockCount()) for (let i = 0; i < n; i++) a.push(r.string());
  return a;
}

export function intArray(r: Reader): number[] {
  if (r.buf[r.pos] === 0) {
    // An empty array (one zero byte): shared, as most events have no unchanged-TOAST columns.
    r.pos++;
    return EMPTY_INTS;
  }
  const a: number[] = [];
  for (let n = r.blockCount(); n !== 0; n = r.blockCount()) for (let i = 0; i < n; i++) a.push(r.long());
  return a;
}

/** A `union {null, X}` branch: false for null, true for X; any other index is refused, not read as X. */
function present(r: Reader): boolean {
  const b = r.long();
  if (b === 0) return false;
  if (b !== 1) throw new RangeError(`bad union branch ${b}`);
  return true;
}

function values(r: Reader): (string | null)[] {
  const a: (string | null)[] = [];
  for (let n = r.blockCount(); n !== 0; n = r.blockCount()) for (let i = 0; i < n; i++) a.push(r.nullableString());
  return a;
}

/** Reads a Relation record; the caller shares equal ones. */
export function readRelation(r: Reader): RelationInfo {
  return { oid: r.long(), replicaIdentity: r.string(), columns: stringArray(r), types: stringArray(r).map(unboundedType), key: intArray(r) };
}

/**
 * Capture before 2026-11-30 named an unbounded bpchar or bit column (no typmod) as format_type(oid,
 * NULL) does: 'character' and 'bit', which as SQL types are character(1) and bit(1), so a value
 * cast to them lost all but its first character. A bounded column is always written with its
 * length ('character(5)'), so the bare names can only mean the unbounded types.
 */
const UNBOUNDED = new Map([
  ['character', 'bpchar'],
  ['character[]', 'bpchar[]'],
  ['bit', '"bit"'],
  ['bit[]', '"bit"[]'],
]);
export function unboundedType(t: string): string {
  return UNBOUNDED.get(t) ?? t;
}

/** Skips a Relation record (oid, replica identity, columns, types, key). */
export function skipRelation(r: Reader): void {
  r.long();
  r.skipString();
  // Loops written out (the archiver skips one relation per record).
  for (let n = r.blockCount(); n !== 0; n = r.blockCount()) for (let i = 0; i < n; i++) r.skipString();
  for (let n = r.blockCount(); n !== 0; n = r.blockCount()) for (let i = 0; i < n; i++) r.skipString();
  for (let n = r.blockCount(); n !== 0; n = r.blockCount()) for (let i = 0; i < n; i++) r.long();
}

/**
 * Decodes format-1 records, specialised for changeEventSchema (avsc's generic decoder builds every
 * string of the relation that each row change carries: ~6 µs per change). A relation whose bytes
 * equal the previous one of the same oid is shared, not rebuilt (the applier compares relations
 * by identity); database, schema and table strings are reused while they repeat.
 */
export class EventDecoder {
  /**
   * The last few descriptions seen per oid: restore shares one decoder between partitions, and
   * around a DDL two partitions carry two descriptions of one table, their blocks interleaved.
   */
  private readonly relations = new Map<number, Array<{ bytes: Buffer; info: RelationInfo }>>();
  private readonly db: StringSlot = { bytes: undefined, value: '' };
  private readonly schema: StringSlot = { bytes: undefined, value: '' };
  private readonly table: StringSlot = { bytes: undefined, value: '' };

  /** `count` records of a block's (decompressed) bytes. */
  decodeBlock(data: Buffer, count: number): ChangeEvent[] {
    const r = new Reader(data);
    const events = new Array<ChangeEvent>(count);
    for (let i = 0; i < count; i++) events[i] = this.record(r);
    if (r.pos !== data.length) throw new RangeError('trailing bytes in block');
    return events;
  }

  /** One value (a Kafka record value, for instance). */
  decodeValue(value: Buffer): ChangeEvent {
    return this.decodeBlock(value, 1)[0]!;
  }

  private relation(r: Reader): RelationInfo {
    const start = r.pos;
    skipRelation(r);
    const end = r.pos;
    const oid = new Reader(r.buf, start).long();
    const buf = r.buf;
    let seen = this.relations.get(oid);
    if (seen) {
      for (const c of seen) if (c.bytes.length === end - start && buf.compare(c.bytes, 0, c.bytes.length, start, end) === 0) return c.info;
    } else this.relations.set(oid, (seen = []));
    const info = readRelation(new Reader(buf, start));
    if (seen.length >= 4) seen.shift();
    seen.push({ bytes: Buffer.from(buf.subarray(start, end)), info });
    return info;
  }

  private record(r: Reader): ChangeEvent {
    const opIndex = r.long();
    const op = OPS[opIndex];
    if (op === undefined) throw new RangeError(`bad op index ${opIndex}`);
    const database = interned(r, this.db);
    const commitLsn = r.long();
    const changeLsn = r.long();
    const endLsn = r.long();
    const xid = r.long();
    const commitTime = r.long();
    const position = r.long();
    const schema = interned(r, this.schema);
    const table = interned(r, this.table);
    const relation = present(r) ? this.relation(r) : null;
    const oldKind = r.nullableString();
    const old = present(r) ? values(r) : null;
    const nw = present(r) ? values(r) : null;
    const unchanged = intArray(r);
    const content = r.nullableString();
    const prefix = r.nullableString();
    return {
      op,
      database,
      commitLsn,
      changeLsn,
      endLsn,
      xid,
      commitTime,
      position,
      schema,
      table,
      relation,
      oldKind,
      old,
      new: nw,
      unchanged,
      content,
      prefix,
    };
  }
}

/** Format-1 records of a block whose writer schema is not exactly ours: avsc resolves it to ours. */
export function decodeBlockGeneric(data: Buffer, count: number, writer: import('avsc').Type = changeEventType): ChangeEvent[] {
  const resolver = writer === changeEventType ? undefined : changeEventType.createResolver(writer);
  const events = new Array<ChangeEvent>(count);
  let p = 0;
  for (let i = 0; i < count; i++) {
    const r = changeEventType.decode(data, p, resolver);
    if (r.offset < 0) throw new RangeError('truncated record');
    const ev = r.value as ChangeEvent;
    if (ev.relation) ev.relation.types = ev.relation.types.map(unboundedType);
    events[i] = ev;
    p = r.offset;
  }
  if (p !== data.length) throw new RangeError('trailing bytes in block');
  return events;
}
