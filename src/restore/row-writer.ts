import { getHeapStatistics } from 'node:v8';
import type { ChangeEvent } from '../format/change-event.js';
import { Coalescer } from './coalesce.js';
import { encodedText, runAsSql, SESSION_SETTINGS } from './ddl-replay.js';
import type { SqlQueue } from './sql-queue.js';
import { copyRows, copySql, deleteFullSql, deleteSql, insertSql, keyValues, updateColumns, updateFullSql, updateSql, type TableRef } from './sql.js';

// Row changes to statements (split from apply.ts, issue 12 item 5).
//
// Batching: consecutive changes of one table and one kind become one statement (COPY or a multi-row
// INSERT for inserts, UPDATE ... FROM (VALUES ...) for updates of tables without other unique
// indexes, DELETE ... WHERE key IN (...) for deletes). A batch is flushed before anything that could
// observe or reorder it: a change of another table or kind, an UPDATE with a different set of
// assigned columns, an UPDATE/DELETE of a key already in the batch (one statement must never touch a
// row twice), TRUNCATE, DDL, and the end of a target transaction (the caller calls flushAll).
//
// Coalescing: changes of a table the caller calls reorderable fold into their net effect per key
// (coalesce.ts) until something needs the table written. A table whose writes run user code sees
// every other table as the source did: its change first writes every buffered table.

/** Rows per statement. */
export interface WriteLimits {
  /** Rows per batch; COPY is used for insert batches of at least copyMinRows rows. */
  batchMaxRows?: number;
  copyMinRows?: number;
  /** Rows of one INSERT / COPY in stream order (default 10,000). */
  insertMaxRows?: number;
  /**
   * Characters of values a stream-order insert or update batch may hold before it is written
   * (default 64 Mi): the row bounds alone let 10,000 rows of large values fill the heap.
   */
  batchMaxChars?: number;
  /**
   * Characters of values in one COPY (default 64 Mi): its text is one string, escaping at most
   * doubles them, and a V8 string holds at most 2^29 - 24 characters.
   */
  copyMaxChars?: number;
  /** Rows the coalescing buffer may hold (all tables) before it is written out (default 10,000). */
  netMaxRows?: number;
  /**
   * Estimated heap bytes the coalescing buffer may hold (default 64 MiB, at most an eighth of V8's
   * heap limit); a window that does not keep a load is written out at 64 MiB or this, if less.
   */
  netMaxBytes?: number;
  /** Keep a load's inserts past the window (RowWriter.retaining): only where the target transaction may span them. */
  retainLoads?: boolean;
  /** The restore session's own settings, put back after each DDL (ddl-replay.ts SESSION_SETTINGS + extras). */
  sessionSql?: string;
}

/** Whose code runs on a table's writes (CatalogView.ownerRunner). */
export interface OwnerLookup {
  ownerRunner(t: { readonly schema: string; readonly table: string }): string | undefined;
  /** The target's (plain) table has inheritance children: write its UPDATEs and DELETEs ONLY (TableRef.only). */
  inheritanceParent?(t: { readonly schema: string; readonly table: string }): boolean;
  /** Types beyond the built-in ones that take a typed array literal (TableRef.arrayType). */
  readonly arrayType?: (type: string) => boolean;
}

type Row = (string | null)[];

const MIB = 1024 * 1024;

/** Characters of a row's values (a NULL counts as none). */
function rowChars(row: Row): number {
  let c = 0;
  for (let i = 0; i < row.length; i++) c += row[i]?.length ?? 0;
  return c;
}

type Batch =
  | { kind: 'insert'; ref: TableRef; rows: Row[] }
  | { kind: 'update'; ref: TableRef; setCols: readonly number[]; rows: Array<{ key: Row; values: Row }>; keys: Set<string> }
  | { kind: 'delete'; ref: TableRef; keys: Set<string>; rows: Row[] };

/** Same table with the same columns, types and key (a DDL in between changes them). */
function sameShape(a: TableRef, ev: ChangeEvent): boolean {
  const x = a.relation;
  const y = ev.relation!;
  if (x === y) return true;
  if (x.oid !== y.oid || a.table !== ev.table || a.schema !== ev.schema) return false;
  if (x.columns.length !== y.columns.length || x.key.length !== y.key.length) return false;
  for (let i = 0; i < x.columns.length; i++) if (x.columns[i] !== y.columns[i] || x.types[i] !== y.types[i]) return false;
  for (let i = 0; i < x.key.length; i++) if (x.key[i] !== y.key[i]) return false;
  return true;
}

function sameCols(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function refOf(ev: ChangeEvent): TableRef {
  return { schema: ev.schema, table: ev.table, relation: ev.relation! };
}

function keyString(k: Row): string {
  if (k.length === 1) return k[0] ?? '\u0001';
  return k.map((v) => (v === null ? '\u0001' : v)).join('\u0000');
}

export class RowWriter {
  private batch: Batch | undefined;
  /** Characters of values in the stream-order batch (inserts and updates; deletes hold keys only). */
  private batchChars = 0;
  private readonly batchMaxChars: number;
  private readonly net = new Coalescer();
  private readonly batchMaxRows: number;
  private readonly copyMinRows: number;
  /** COPY gets cheaper per row up to ~10,000 rows a statement (bench/restore-apply.ts). */
  private readonly insertMaxRows: number;
  private readonly copyMaxChars: number;
  private readonly netMaxRows: number;
  /**
   * Rows buffered before the coalescing buffer is written out: 1,000 at first, doubled after each
   * such write up to netMaxRows, so that PostgreSQL gets its first statements after a thousand
   * rows rather than after a whole first window, which it waited for at each restore's start.
   */
  private netLimit: number;
  private readonly netMaxBytes: number;
  /** The byte limit of a window that is not keeping a load's inserts. */
  private readonly windowMaxBytes: number;
  /** While the buffer keeps a load's inserts: the row count at which it is looked at again; else 0. */
  private holdUntil = 0;
  private readonly retainLoads: boolean;
  private readonly sessionSql: string | undefined;

  constructor(
    private readonly out: SqlQueue,
    private readonly owners: OwnerLookup,
    limits: WriteLimits,
  ) {
    this.batchMaxRows = limits.batchMaxRows ?? 1_000;
    this.copyMinRows = limits.copyMinRows ?? 32;
    this.insertMaxRows = limits.insertMaxRows ?? Math.max(this.batchMaxRows, 10_000);
    this.copyMaxChars = limits.copyMaxChars ?? 64 * MIB;
    this.batchMaxChars = limits.batchMaxChars ?? 64 * MIB;
    this.netMaxRows = limits.netMaxRows ?? 10_000;
    this.netLimit = Math.min(1_000, this.netMaxRows);
    // An eighth of the heap: the estimate counts a character as a byte (V8 keeps text beyond
    // Latin-1 at two), and writing a kept load out builds its COPY text while its rows are held.
    this.netMaxBytes = Math.min(limits.netMaxBytes ?? 64 * MIB, Math.floor(getHeapStatistics().heap_size_limit / 8));
    this.retainLoads = limits.retainLoads ?? false;
    this.windowMaxBytes = Math.min(64 * MIB, this.netMaxBytes);
    this.sessionSql = limits.sessionSql;
  }

  /** The event's table, with what the target's catalog says of it (TableRef.only, TableRef.arrayType). */
  private refFor(ev: ChangeEvent): TableRef {
    const ref = refOf(ev);
    if (this.owners.inheritanceParent?.(ev)) ref.only = true;
    if (this.owners.arrayType) ref.arrayType = this.owners.arrayType;
    return ref;
  }

  /** Rows the coalescing buffer holds (all tables). */
  get bufferedRows(): number {
    return this.net.rows;
  }

  /**
   * The buffer is keeping a load's inserts past its usual window (only with retainLoads): the rows
   * it held when the window was full were at least 90% inserts (folded updates included). A load's
   * own later updates and deletes (a batch job's fix-ups, a later transaction's cleanup) then fold
   * into its rows and cost the target nothing: bench/restore.ts bulk, 1,000,000 inserts then
   * 500,000 updates and 200,000 deletes of them, became 800,000 COPYed rows. The caller lets the
   * target transaction span source transactions meanwhile (TxnGroup coalesceMaxChanges);
   * netMaxBytes bounds the memory. The target idles while a load is held: a load that nothing
   * later touches restores slower, hence off by default.
   */
  get retaining(): boolean {
    return this.holdUntil > 0;
  }

  /**
   * One INSERT, UPDATE or DELETE of a table the target has. `netKey`: its name in the coalescing
   * buffer; `reorderable`: it may be coalesced ("reorderable" = no unique index but the replica
   * identity and no exclusion constraint, as the caller last read the target's catalog, no DDL
   * since, no user code on its writes). Takes ev's row arrays: a coalesced row is the event's own
   * `new` array, which later changes of its key update in place, so nothing may read ev's values
   * after this call. Once a row is written out (drained, or its batch flushed) nothing changes it:
   * a COPY's text is built from it when the COPY is sent (SqlQueue.copy).
   */
  write(ev: ChangeEvent, netKey: string, reorderable: boolean): void {
    const r = ev.relation!;
    const full = r.replicaIdentity === 'f' || r.key.length === 0;
    if (!full && reorderable && this.netRow(ev, netKey)) return;
    if (this.net.size > 0) {
      // A table whose writes run user code (a trigger, a CHECK calling a function) may read any
      // other table: everything the source changed before this change is written first, not only
      // this table's own buffer (coalesce.ts assumes no user code sees a buffered table).
      if (this.owners.ownerRunner(ev)) this.flushNetAll();
      else this.flushNetOf(netKey);
    }
    if (ev.op === 'INSERT') return this.insert(ev);
    if (full) {
      // No key to batch by: one statement per change, in order.
      this.flushBatch();
      const old = ev.old ?? ev.new!;
      const ref = this.refFor(ev);
      return this.emitFor(ref, ev.op === 'UPDATE' ? updateFullSql(ref, old, ev.new!, ev.unchanged) : deleteFullSql(ref, old));
    }
    const key = keyValues(ev);
    const ks = keyString(key);
    if (ev.op === 'UPDATE') this.update(ev, key, ks, reorderable);
    else this.delete(ev, key, ks);
  }

  private insert(ev: ChangeEvent): void {
    const b = this.batch;
    const c = rowChars(ev.new!);
    if (b && b.kind === 'insert' && b.rows.length < this.insertMaxRows && this.batchChars + c <= this.batchMaxChars && sameShape(b.ref, ev)) {
      b.rows.push(ev.new!);
      this.batchChars += c;
      return;
    }
    this.flushBatch();
    this.batch = { kind: 'insert', ref: this.refFor(ev), rows: [ev.new!] };
    this.batchChars = c;
  }

  private update(ev: ChangeEvent, key: Row, ks: string, reorderable: boolean): void {
    const setCols = updateColumns(ev);
    if (!reorderable) {
      // A table with another unique index (or one we cannot vouch for): one statement per UPDATE.
      // Uniqueness is checked row by row as a statement runs, and a multi-row UPDATE visits its
      // rows in the plan's order, not the stream's: a pair that swapped values in the source
      // (a: x->y, b: y->x via a temporary) could collide in one statement.
      this.flushBatch();
      const ref = this.refFor(ev);
      this.emitFor(ref, updateSql(ref, setCols, [{ key, values: ev.new! }]));
      return;
    }
    const newKey = ev.oldKind ? keyString(ev.relation!.key.map((i) => ev.new![i] ?? null)) : ks;
    const c = rowChars(ev.new!);
    let b = this.batch;
    if (!(
      b &&
      b.kind === 'update' &&
      b.rows.length < this.batchMaxRows &&
      this.batchChars + c <= this.batchMaxChars &&
      sameCols(b.setCols, setCols) &&
      sameShape(b.ref, ev) &&
      !b.keys.has(ks) &&
      !b.keys.has(newKey)
    )) {
      this.flushBatch();
      b = this.batch = { kind: 'update', ref: this.refFor(ev), setCols, rows: [], keys: new Set() };
    }
    this.batchChars += c;
    b.rows.push({ key, values: ev.new! });
    b.keys.add(ks);
    b.keys.add(newKey);
  }

  private delete(ev: ChangeEvent, key: Row, ks: string): void {
    let b = this.batch;
    if (!(b && b.kind === 'delete' && b.rows.length < this.batchMaxRows && sameShape(b.ref, ev) && !b.keys.has(ks))) {
      this.flushBatch();
      b = this.batch = { kind: 'delete', ref: this.refFor(ev), rows: [], keys: new Set() };
    }
    b.rows.push(key);
    b.keys.add(ks);
  }

  /** Folds a change into the coalescing buffer (coalesce.ts); false: write it in stream order. */
  private netRow(ev: ChangeEvent, name: string): boolean {
    // Rows of a user-code table batched in stream order are written before a later change of
    // another table is buffered: their code must not see that change (nor miss an earlier one).
    if (this.batch && this.owners.ownerRunner(this.batch.ref)) this.flushBatch();
    const buffered = this.net.ref(name);
    if (buffered && !sameShape(buffered, ev)) this.flushNetOf(name);
    if (!this.net.add(name, buffered && buffered.relation === ev.relation ? buffered : this.refFor(ev), ev)) {
      this.flushNetOf(name);
      return false;
    }
    const n = this.net;
    if (n.rows >= (this.holdUntil || this.netLimit) || n.bytes >= (this.holdUntil ? this.netMaxBytes : this.windowMaxBytes)) {
      if (this.retainLoads && n.bytes < this.netMaxBytes && n.inserts * 10 >= n.rows * 9) {
        this.holdUntil = n.rows + this.netMaxRows;
      } else {
        this.flushNetAll();
        this.netLimit = Math.min(2 * this.netLimit, this.netMaxRows);
      }
    }
    return true;
  }

  private flushNetOf(name: string): void {
    const d = this.net.drain(name);
    if (!d) return;
    // Anything written in stream order before now precedes this buffer's changes.
    this.flushBatch();
    const { ref, deletes, updates, inserts } = d;
    const max = this.batchMaxRows;
    for (let i = 0; i < deletes.length; i += max) this.emitFor(ref, deleteSql(ref, deletes.slice(i, i + max)));
    for (const u of updates) for (let i = 0; i < u.rows.length; i += max) this.emitFor(ref, updateSql(ref, u.setCols, u.rows.slice(i, i + max)));
    if (inserts.length >= this.copyMinRows && !this.owners.ownerRunner(ref)) {
      this.copyInSlices(ref, inserts);
    } else if (inserts.length > 0) {
      for (let i = 0; i < inserts.length; i += max) this.emitFor(ref, insertSql(ref, inserts.slice(i, i + max)));
    }
    this.out.cutIfLarge();
    // What is left may be no load any more (one table written out for a key change, say).
    if (this.net.inserts * 10 < this.net.rows * 9 || this.net.rows === 0) this.holdUntil = 0;
  }

  private flushNetAll(): void {
    for (const name of this.net.names()) this.flushNetOf(name);
  }

  /** Writes everything held: the stream-order batch, then every coalescing buffer. */
  flushAll(): void {
    this.flushBatch();
    this.flushNetAll();
  }

  /** A statement that writes rows of `ref`: run as its owner when ownerRunner says so. */
  emitFor(ref: { readonly schema: string; readonly table: string }, sql: string): void {
    const owner = this.owners.ownerRunner(ref);
    if (!owner || !sql) return this.out.statement(sql);
    // The owner's code may have changed session settings (client_encoding would garble every later
    // value): the restore session's own settings are put back after it, as after DDL.
    this.out.statement(`${runAsSql(owner, encodedText(sql))}RESET ALL; ${this.sessionSql ?? SESSION_SETTINGS}\n`);
  }

  private flushBatch(): void {
    const b = this.batch;
    this.batch = undefined;
    this.batchChars = 0;
    if (b) {
      if (b.kind === 'insert') this.writeInserts(b.ref, b.rows);
      else if (b.kind === 'update') this.emitFor(b.ref, updateSql(b.ref, b.setCols, b.rows));
      else this.emitFor(b.ref, deleteSql(b.ref, b.rows));
    }
    this.out.cutIfLarge();
  }

  /**
   * COPYs of `rows` in slices of at most insertMaxRows rows and copyMaxChars characters of values,
   * so that PostgreSQL starts on the first while the next is built (each is built as it is sent,
   * SqlQueue.copy: nothing may change these rows from now on) and no slice outgrows a string.
   */
  private copyInSlices(ref: TableRef, rows: Row[]): void {
    const n = ref.relation.columns.length;
    const sql = copySql(ref);
    const slice = (from: number, to: number) => this.out.copy(sql, () => copyRows(rows, n, from, to));
    let from = 0;
    let chars = 0;
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!;
      let c = n + 1;
      for (let j = 0; j < n; j++) c += row[j]?.length ?? 2;
      if (i > from && (i - from >= this.insertMaxRows || chars + c > this.copyMaxChars)) {
        slice(from, i);
        from = i;
        chars = 0;
      }
      chars += c;
    }
    if (from < rows.length) slice(from, rows.length);
  }

  /** A stream-order insert batch: COPY, or INSERTs of batchMaxRows rows (always for user-code tables). */
  private writeInserts(ref: TableRef, rows: Row[]): void {
    if (rows.length >= this.copyMinRows && !this.owners.ownerRunner(ref)) return this.copyInSlices(ref, rows);
    const max = this.batchMaxRows;
    for (let i = 0; i < rows.length; i += max) this.emitFor(ref, insertSql(ref, rows.slice(i, i + max)));
  }
}
