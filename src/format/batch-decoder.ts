import { Reader } from './avro.js';
import type { ChangeEvent, RelationInfo } from './change-event.js';
import { intArray, readRelation, skipRelation } from './event-codec.js';
import { OPS } from './ops.js';

// Format 2, restore's side: change events from a ChangeBatch (see batch.ts and docs/format.md).

interface DecodedRelation {
  schema: string;
  table: string;
  info: RelationInfo;
}

function readArray<T>(r: Reader, item: () => T): T[] {
  let n = r.blockCount();
  if (n === 0) return [];
  // Allocated once at the first block's count (our writer writes one block): growing by push
  // copied every per-record array of a batch two or three times, and those copies were a large
  // part of what restore's young generation collected. Every item takes at least one byte, so a
  // count beyond the bytes left is not trusted with an allocation (the reads below then fail).
  const a = n <= r.buf.length - r.pos ? new Array<T>(n) : [];
  let k = 0;
  for (; n !== 0; n = r.blockCount()) for (let i = 0; i < n; i++) a[k++] = item();
  return a;
}

function corrupt(message: string): RangeError {
  return new RangeError(message);
}

/** A `union {null, X}` branch: false for null, true for X; any other index is not our encoding. */
function present(r: Reader, what: string): boolean {
  const b = r.long();
  if (b === 0) return false;
  if (b !== 1) throw corrupt(`${what}: bad union branch ${b}`);
  return true;
}

/** An int that is a count or -1 (null); anything below -1 is not our encoding. */
function countOrNull(r: Reader, what: string): number {
  const n = r.long();
  if (n < -1) throw corrupt(`${what} ${n} is below -1`);
  return n;
}

/** IntColumn values are integers of at most 15 digits (docs/format.md); their sums must stay so. */
const INT_COLUMN_LIMIT = 1e15;

/**
 * Decodes ChangeBatch data into change events. Keeps, across batches and segments, one object per
 * distinct relation description (the applier caches catalog answers per RelationInfo object).
 */
export class BatchDecoder {
  private readonly relations = new Map<string, DecodedRelation>();
  private readonly infos = new Map<string, RelationInfo>();

  /** The change events of one ChangeBatch datum; throws RangeError on anything that does not add up. */
  decode(data: Buffer): ChangeEvent[] {
    const f = this.read(data);
    const events = new Array<ChangeEvent>(f.count);
    let t = 0;
    let left = f.txns[0]?.count ?? 0;
    let named = 0;
    let lsn = 0;
    let pos = 0;
    for (let k = 0; k < f.count; k++) {
      while (left === 0) {
        if (++t >= f.txns.length) throw corrupt(`txns cover fewer than ${f.count} records`);
        left = f.txns[t]!.count;
      }
      left--;
      const txn = f.txns[t]!;
      const op = OPS[data[f.opsAt + k]!];
      if (op === undefined) throw corrupt(`bad op index ${data[f.opsAt + k]} in record ${k}`);
      lsn += f.changeLsn[k]!;
      pos += f.position[k]!;
      const e = f.endLsn[k];
      // The writer stores endLsn 0 as null: a delta that lands on 0 is another writer's bytes.
      if (e !== null && e !== undefined && txn.commitLsn + e === 0) throw corrupt(`record ${k}: endLsn delta ${e} gives 0, which is written as null`);
      const ri = f.relation[k]!;
      let rel: DecodedRelation | undefined;
      let schema: string;
      let table: string;
      if (ri === -1) {
        if (named >= f.schemas.length || named >= f.tables.length) throw corrupt(`record ${k}: schemas/tables too short`);
        schema = f.schemas[named]!;
        table = f.tables[named++]!;
      } else {
        rel = f.relations[ri];
        // Never a guess: a record must find its relation description in its own batch.
        if (rel === undefined) throw corrupt(`record ${k} refers to relation description ${ri}, the batch holds ${f.relations.length}`);
        schema = rel.schema;
        table = rel.table;
      }
      const cols = f.groups[ri + 1]!;
      const oc = f.oldCount[k]!;
      const nc = f.newCount[k]!;
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
        oldKind: f.oldKind[k]!,
        old: oc < 0 ? null : take(cols, oc, k),
        new: nc < 0 ? null : take(cols, nc, k),
        unchanged: f.unchanged[k]!,
        content: f.content[k]!,
        prefix: f.prefix[k]!,
      };
    }
    if (left !== 0 || t < f.txns.length - 1) throw corrupt(`txns cover more than ${f.count} records`);
    if (named !== f.schemas.length || named !== f.tables.length) throw corrupt('schemas/tables hold more names than records without a relation');
    for (const cols of f.groups) for (const c of cols) if (c.next !== c.values.length) throw corrupt('a column holds more values than the records use');
    return events;
  }

  /** The batch's fields, in schema order, with every per-record array checked to hold `count` items. */
  private read(data: Buffer) {
    const r = new Reader(data);
    const count = r.long();
    if (count < 1) throw corrupt(`batch count ${count}: a batch holds at least one record`);
    const opsLen = r.long();
    if (opsLen !== count) throw corrupt(`ops holds ${opsLen} bytes for ${count} records`);
    const f = {
      count,
      opsAt: r.skip(opsLen),
      txns: readArray(r, () => {
        const t = { database: r.string(), commitLsn: r.long(), xid: r.long(), commitTime: r.long(), count: r.long() };
        if (t.count < 1) throw corrupt(`txn run of ${t.count} records: a run holds at least one`);
        return t;
      }),
      changeLsn: readArray(r, () => r.long()),
      position: readArray(r, () => r.long()),
      endLsn: readArray(r, () => (present(r, 'endLsn') ? r.long() : null)),
      relations: readArray(r, () => this.relation(r)),
      relation: readArray(r, () => countOrNull(r, 'relation index')),
      schemas: readArray(r, () => r.string()),
      tables: readArray(r, () => r.string()),
      oldKind: readArray(r, () => r.nullableString()),
      oldCount: readArray(r, () => countOrNull(r, 'oldCount')),
      newCount: readArray(r, () => countOrNull(r, 'newCount')),
      groups: readArray(r, () => readArray(r, () => column(r))),
      unchanged: readArray(r, () => intArray(r)),
      content: readArray(r, () => r.nullableString()),
      prefix: readArray(r, () => r.nullableString()),
    };
    if (r.pos !== data.length) throw corrupt('trailing bytes after the batch');
    const perRecord = ['changeLsn', 'position', 'endLsn', 'relation', 'oldKind', 'oldCount', 'newCount', 'unchanged', 'content', 'prefix'] as const;
    for (const name of perRecord) if (f[name].length !== count) throw corrupt(`${name} holds ${f[name].length} items for ${count} records`);
    if (f.groups.length !== f.relations.length + 1) throw corrupt(`${f.groups.length} column groups for ${f.relations.length} relations`);
    return f;
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
    if (!present(r, 'IntColumn value')) return null;
    v += r.long();
    if (!(Math.abs(v) < INT_COLUMN_LIMIT)) throw corrupt(`IntColumn value ${v} has more than 15 digits`);
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
