import type { ChangeEvent } from '../format/change-event.js';
import { keyValues, updateColumns, type TableRef } from './sql.js';

// Net effect per key inside one target transaction (the applier's "coalescing"). Only the state at
// the target transaction's COMMIT is ever visible, so the changes of a group may be reordered as
// long as every row ends in the same state: the changes of one key fold into their net effect
//   insert + update(s)   = insert of the updated row (unchanged TOAST columns keep the inserted value)
//   insert + delete      = nothing
//   update + update      = one update of the union of the assigned columns
//   delete + insert      = replace (delete, then insert)
//   update + delete      = delete
// and a table's buffer is written as its deletes, then its updates, then its inserts. Rows of
// different keys are independent only under conditions the caller checks (CatalogView.info,
// RowWriter.write): no unique index besides the replica identity and no exclusion constraint (a
// reordered pair could collide), no user code on writes (its triggers would see other events),
// triggers and FK actions off (session_replication_role = replica). A key change and any sequence
// not listed above are refused (add returns false): the caller writes the buffer out and that
// change in stream order.
//
// Pure: no SQL, no I/O; RowWriter (row-writer.ts) turns what drain returns into statements.

export interface NetRow {
  kind: 'update' | 'delete' | 'replace';
  /** The replica identity key. */
  key: (string | null)[];
  /** replace / update: the row (an update's: only `assigned` columns are meaningful). */
  row: (string | null)[] | null;
  /** update: the assigned columns, ascending, no repeats. Shared between rows: never changed in place. */
  assigned: readonly number[] | null;
}

/** The union of two ascending column lists (a new array unless one holds the other). */
function unionCols(a: readonly number[], b: readonly number[]): readonly number[] {
  if (a === b) return a;
  const out: number[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const x = i < a.length ? a[i]! : Infinity;
    const y = j < b.length ? b[j]! : Infinity;
    out.push(x <= y ? x : y);
    if (x <= y) i++;
    if (y <= x) j++;
  }
  return out.length === a.length ? a : out.length === b.length ? b : out;
}

export interface Drained {
  ref: TableRef;
  deletes: Array<(string | null)[]>;
  /** One group per set of assigned columns, ascending column numbers. */
  updates: Array<{ setCols: readonly number[]; rows: Array<{ key: (string | null)[]; values: (string | null)[] }> }>;
  inserts: Array<(string | null)[]>;
}

/** Rough heap bytes of a buffered row: map entry, key, array, strings (one byte a char), wrapper. */
function rowBytes(row: readonly (string | null)[]): number {
  let n = 96;
  for (let i = 0; i < row.length; i++) n += 24 + (row[i]?.length ?? 0);
  return n;
}
function entryBytes(e: Entry): number {
  return Array.isArray(e) ? rowBytes(e) : 64 + rowBytes(e.row ?? e.key);
}

function rowKeyString(row: readonly (string | null)[], key: readonly number[]): string {
  if (key.length === 1) return row[key[0]!] ?? '\u0001';
  let s = '';
  for (let i = 0; i < key.length; i++) s += (i > 0 ? '\u0000' : '') + (row[key[i]!] ?? '\u0001');
  return s;
}

type Row = (string | null)[];

/** A buffered key: an insert is its row itself (no wrapper: a bulk load buffers millions). */
type Entry = Row | NetRow;

/**
 * Maps per buffer. V8 keeps a Map's table in the young generation only while it is small: past
 * ~4,000 entries the table is allocated in large-object space, and a get + set of a new key cost
 * 0.4 us instead of 0.1 (measured on this machine, keys as restore decodes them). 16 maps chosen by
 * the key's last character keep each one small at the default 10,000 rows; keys that all end alike
 * only fall back to one large map.
 */
const SHARDS = 16;

class TableBuffer {
  /** Key -> index in `slots`. */
  private readonly index = new Array<Map<string, number> | undefined>(SHARDS);
  /** Buffered entries in the order their keys first came (a removed one is undefined). */
  readonly slots: Array<Entry | undefined> = [];
  /** Keys buffered. */
  size = 0;
  /** Of `size`, inserts. */
  inserts = 0;
  bytes = 0;
  constructor(readonly ref: TableRef) {}

  /** The map of key `ks` (the empty key's charCodeAt is NaN, and NaN & 15 is 0). */
  map(ks: string): Map<string, number> {
    const i = ks.charCodeAt(ks.length - 1) & (SHARDS - 1);
    return (this.index[i] ??= new Map());
  }

  /**
   * Drops the slots of removed keys once they outnumber the live ones (and 4,096): an insert
   * and a delete of one key leave a slot that no limit counts, and a transaction that keeps
   * inserting and deleting (a queue table) would grow `slots` without bound. Order is kept.
   */
  compactIfSparse(): void {
    const slots = this.slots;
    if (slots.length - this.size <= Math.max(4096, this.size)) return;
    const moved = new Array<number>(slots.length);
    let n = 0;
    for (let i = 0; i < slots.length; i++) {
      const e = slots[i];
      if (e === undefined) continue;
      moved[i] = n;
      slots[n++] = e;
    }
    slots.length = n;
    for (const m of this.index) if (m) for (const [ks, at] of m) m.set(ks, moved[at]!);
  }
}

export class Coalescer {
  private readonly tables = new Map<string, TableBuffer>();
  /** Estimated heap bytes held (rowBytes of every buffered row). */
  bytes = 0;
  /** Rows held, all tables. */
  rows = 0;
  /** Of `rows`, those that are inserts (folded updates included): a load's rows (RowWriter keeps them longer). */
  inserts = 0;

  get size(): number {
    return this.tables.size;
  }

  has(name: string): boolean {
    return this.tables.has(name);
  }

  /** The buffered table's description (its shape), if `name` has a buffer. */
  ref(name: string): TableRef | undefined {
    return this.tables.get(name)?.ref;
  }

  names(): string[] {
    return [...this.tables.keys()];
  }

  /**
   * Folds one row change of table `name` (whose buffer, if any, has ev's shape: the caller drains it
   * first otherwise). False: the change cannot be folded; the caller must drain `name` and write
   * the change in stream order.
   */
  add(name: string, ref: TableRef, ev: ChangeEvent): boolean {
    const r = ref.relation;
    const key = r.key;
    if (ev.op === 'UPDATE' && ev.oldKind && ev.old) {
      // A key change moves the row to another key: stream order.
      for (let i = 0; i < key.length; i++) if ((ev.old[key[i]!] ?? null) !== (ev.new![key[i]!] ?? null)) return false;
    }
    let t = this.tables.get(name);
    if (!t) this.tables.set(name, (t = new TableBuffer(ref)));
    const ks = ev.op === 'INSERT' ? rowKeyString(ev.new!, key) : ev.oldKind && ev.old ? rowKeyString(ev.old, key) : rowKeyString(ev.new!, key);
    const m = t.map(ks);
    const at = m.get(ks);
    // A removed key leaves its map too: cur is undefined exactly when the key is not buffered.
    const cur = at === undefined ? undefined : t.slots[at];
    if (ev.op === 'INSERT') {
      if (cur === undefined) this.put(t, m, ks, ev.new!);
      else if (!Array.isArray(cur) && cur.kind === 'delete') this.replace(t, at!, cur, { kind: 'replace', key: cur.key, row: ev.new!, assigned: null });
      else return false;
    } else if (ev.op === 'UPDATE') {
      const cols = updateColumns(ev);
      const nw = ev.new!;
      // A buffered row is its event's array, which nothing reads after add: later changes of the
      // key update it in place.
      if (cur === undefined) this.put(t, m, ks, { kind: 'update', key: keyValues(ev), row: nw, assigned: cols });
      else if (Array.isArray(cur)) this.assign(t, cur, cols, nw);
      else if (cur.kind === 'delete') return false;
      else {
        this.assign(t, cur.row!, cols, nw);
        if (cur.assigned) cur.assigned = unionCols(cur.assigned, cols);
      }
    } else {
      if (cur === undefined) this.put(t, m, ks, { kind: 'delete', key: keyValues(ev), row: null, assigned: null });
      else if (Array.isArray(cur)) this.remove(t, m, ks, at!, cur);
      else if (cur.kind === 'delete') return false;
      else this.replace(t, at!, cur, { kind: 'delete', key: cur.key, row: null, assigned: null });
    }
    return true;
  }

  private put(t: TableBuffer, m: Map<string, number>, ks: string, n: Entry): void {
    m.set(ks, t.slots.length);
    t.slots.push(n);
    t.size++;
    if (Array.isArray(n)) {
      t.inserts++;
      this.inserts++;
    }
    const b = entryBytes(n);
    t.bytes += b;
    this.bytes += b;
    this.rows++;
  }

  /** An update folded into a buffered row, in place; the bytes follow the values' lengths (a load's rows may be kept long). */
  private assign(t: TableBuffer, row: Row, cols: readonly number[], nw: readonly (string | null)[]): void {
    let b = 0;
    for (const i of cols) {
      const v = nw[i] ?? null;
      b += (v?.length ?? 0) - (row[i]?.length ?? 0);
      row[i] = v;
    }
    t.bytes += b;
    this.bytes += b;
  }

  private replace(t: TableBuffer, at: number, old: Entry, n: NetRow): void {
    const b = entryBytes(n) - entryBytes(old);
    t.bytes += b;
    this.bytes += b;
    t.slots[at] = n;
  }

  /** An insert and a delete of one key: nothing left of it. */
  private remove(t: TableBuffer, m: Map<string, number>, ks: string, at: number, old: Row): void {
    const b = entryBytes(old);
    t.bytes -= b;
    this.bytes -= b;
    this.rows--;
    t.size--;
    t.inserts--;
    this.inserts--;
    t.slots[at] = undefined;
    m.delete(ks);
    t.compactIfSparse();
  }

  /** Slots held, removed keys' included (bounded by compactIfSparse; for tests). */
  get slotsHeld(): number {
    let n = 0;
    for (const t of this.tables.values()) n += t.slots.length;
    return n;
  }

  /** Takes table `name`'s buffer out: what to write, deletes first, then updates, then inserts. */
  drain(name: string): Drained | undefined {
    const t = this.tables.get(name);
    if (!t) return undefined;
    this.tables.delete(name);
    const out: Drained = { ref: t.ref, deletes: [], updates: [], inserts: [] };
    // Updates grouped by their assigned columns: by array first (rows of one relation share it),
    // then arrays with the same columns are joined into one group.
    const byCols = new Map<readonly number[], Drained['updates'][number]>();
    for (const n of t.slots) {
      if (n === undefined) continue;
      if (Array.isArray(n)) {
        out.inserts.push(n);
        continue;
      }
      if (n.kind === 'delete' || n.kind === 'replace') out.deletes.push(n.key);
      if (n.kind === 'replace') out.inserts.push(n.row!);
      if (n.kind === 'update') {
        const setCols = n.assigned!;
        if (setCols.length === 0) continue;
        let u = byCols.get(setCols);
        if (!u) byCols.set(setCols, (u = { setCols, rows: [] }));
        u.rows.push({ key: n.key!, values: n.row! });
      }
    }
    const bySig = new Map<string, Drained['updates'][number]>();
    for (const u of byCols.values()) {
      const sig = u.setCols.join(',');
      const same = bySig.get(sig);
      if (same) for (const r of u.rows) same.rows.push(r);
      else bySig.set(sig, u);
    }
    out.updates = [...bySig.values()];
    this.bytes -= t.bytes;
    this.rows -= t.size;
    this.inserts -= t.inserts;
    if (this.tables.size === 0) {
      this.bytes = 0;
      this.rows = 0;
      this.inserts = 0;
    }
    return out;
  }
}
