import type { ChangeEvent } from '../events/change-event.js';
import { CdpError, ErrorCodes } from '../errors.js';
import type { Lsn } from '../util/lsn.js';
import type { ReplayItem } from './merge.js';
import {
  copyRow,
  copySql,
  ddlSql,
  deleteFullSql,
  deleteSql,
  insertSql,
  keyValues,
  qualify,
  quoteLiteral,
  truncateSql,
  updateColumns,
  updateFullSql,
  updateSql,
  type TableRef,
} from './sql.js';
import type { TxnHeader } from './target.js';

// Applies the replay stream through a SqlSink (a live session, or a .sql file).
//
// Batching: consecutive changes of one table and one kind become one statement (COPY or a multi-row
// INSERT for inserts, UPDATE ... FROM (VALUES ...) for updates, DELETE ... WHERE key IN (...) for
// deletes). A batch is flushed before anything that could observe or reorder it: a change of
// another table or kind, an UPDATE with a different set of assigned columns, an UPDATE/DELETE of a
// key already in the batch (one statement must never touch a row twice), TRUNCATE, DDL, and the
// end of a target transaction.
//
// Grouping: many small source transactions share one target transaction (a COMMIT per source
// transaction would cost an fsync each; Postgres's own apply worker pays exactly that). Atomicity is
// kept because a group contains only whole source transactions, and the resume cursor (last applied
// commit LSN) is updated in the same target transaction, so after a crash the target holds exactly
// the transactions up to the cursor and nothing of the next one (G2, no transaction applied twice).

export interface SqlSink {
  /** Queues SQL text (possibly many statements). Errors surface at the latest in drain(). */
  exec(sql: string): Promise<void>;
  /** Queues a COPY ... FROM STDIN with its text-format data. */
  copy(sql: string, data: string): Promise<void>;
  /** Waits until everything queued has been executed. */
  drain(): Promise<void>;
}

export interface TableFilter {
  /** "schema.table" names to keep. */
  tables: Set<string>;
}

export interface ApplyOptions {
  /** Write the resume cursor into _cdp_restore.cursor in each target transaction. */
  cursor: boolean;
  /** Commit a group once it holds this many changes (at a source transaction boundary). */
  groupMaxChanges?: number;
  /** ... or once it is this old. */
  groupMaxMs?: number;
  /** One target transaction per source transaction (the --sql file: atomicity visible in the text). */
  onePerSource?: boolean;
  filter?: TableFilter;
  /** Rows per batch; COPY is used for insert batches of at least copyMinRows rows. */
  batchMaxRows?: number;
  copyMinRows?: number;
  onDdlSkipped?: (ev: ChangeEvent) => void;
}

export interface ApplyStats {
  transactions: number;
  changes: number;
  skipped: number;
  statements: number;
  targetCommits: number;
  last: TxnHeader | undefined;
  lastEndLsn: Lsn;
}

type Batch =
  | { kind: 'insert'; ref: TableRef; sig: string; rows: Array<(string | null)[]> }
  | { kind: 'update'; ref: TableRef; sig: string; setCols: number[]; rows: Array<{ key: (string | null)[]; values: (string | null)[] }>; keys: Set<string> }
  | { kind: 'delete'; ref: TableRef; sig: string; keys: Set<string>; rows: Array<(string | null)[]> };

const SQL_BUFFER_BYTES = 1 << 20;

function relSig(ev: ChangeEvent): string {
  const r = ev.relation!;
  return `${ev.schema}\u0000${ev.table}\u0000${r.oid}\u0000${r.columns.join('\u0001')}\u0000${r.types.join('\u0001')}\u0000${r.key.join(',')}`;
}

function keyString(k: (string | null)[]): string {
  return k.map((v) => (v === null ? '\u0001' : v)).join('\u0000');
}

export function parseTableList(list: string[]): TableFilter {
  const tables = new Set<string>();
  for (const raw of list) {
    const parts = raw.split('.');
    if (parts.length > 2 || parts.some((p) => p === '')) {
      throw new CdpError(ErrorCodes.USAGE, `--tables: ${JSON.stringify(raw)} is not schema.table or table`);
    }
    tables.add(parts.length === 1 ? `public.${parts[0]}` : `${parts[0]}.${parts[1]}`);
  }
  return { tables };
}

/** DDL content as written by the capture event trigger (DESIGN.md / change-event.avsc). */
interface DdlContent {
  command: string;
  tag?: string;
  searchPath?: string;
  objects?: Array<Record<string, unknown>>;
  dropped?: Array<Record<string, unknown>>;
  /** The previous DDL event of the transaction had the same command text (a multi-statement query string or a DO block): replayed once. */
  repeatOfPrevious?: boolean;
}

export class Applier {
  readonly stats: ApplyStats = { transactions: 0, changes: 0, skipped: 0, statements: 0, targetCommits: 0, last: undefined, lastEndLsn: 0 };
  /** Latest SEQUENCES snapshot applied (values at or before the last applied transaction). */
  sequences: Record<string, string | number> | undefined;
  private batch: Batch | undefined;
  private sql = '';
  private inTxn = false;
  private groupChanges = 0;
  private groupStarted = 0;
  private readonly groupMaxChanges: number;
  private readonly groupMaxMs: number;
  private readonly batchMaxRows: number;
  private readonly copyMinRows: number;

  constructor(
    private readonly sink: SqlSink,
    private readonly opts: ApplyOptions,
  ) {
    this.groupMaxChanges = opts.onePerSource ? 0 : (opts.groupMaxChanges ?? 20_000);
    this.groupMaxMs = opts.groupMaxMs ?? 2_000;
    this.batchMaxRows = opts.batchMaxRows ?? 1_000;
    this.copyMinRows = opts.copyMinRows ?? 32;
  }

  async handle(item: ReplayItem): Promise<void> {
    switch (item.type) {
      case 'begin':
        if (!this.inTxn) {
          this.sql += 'BEGIN;\n';
          this.inTxn = true;
          this.groupChanges = 0;
          this.groupStarted = Date.now();
        }
        return;
      case 'changes':
        for (const ev of item.events) await this.change(ev);
        return;
      case 'commit':
        this.stats.transactions++;
        this.stats.last = item.txn;
        this.stats.lastEndLsn = item.endLsn;
        if (this.groupChanges >= this.groupMaxChanges || Date.now() - this.groupStarted >= this.groupMaxMs) await this.commitGroup();
        return;
      case 'end':
        if (item.sequencesAfter?.content) this.sequences = parseSequences(item.sequencesAfter.content);
        await this.commitGroup();
        await this.flushSql();
        await this.sink.drain();
        return;
    }
  }

  private selected(schema: string, table: string): boolean {
    return !this.opts.filter || this.opts.filter.tables.has(`${schema}.${table}`);
  }

  private async change(ev: ChangeEvent): Promise<void> {
    this.groupChanges++;
    this.stats.changes++;
    switch (ev.op) {
      case 'INSERT':
      case 'UPDATE':
      case 'DELETE':
        if (!this.selected(ev.schema, ev.table) || !ev.relation) {
          this.stats.skipped++;
          return;
        }
        return this.row(ev);
      case 'TRUNCATE': {
        await this.flushBatch();
        const c = JSON.parse(ev.content ?? '{}') as { relations?: Array<[string, string]>; cascade?: boolean; restartIdentity?: boolean };
        const rels = (c.relations ?? []).filter(([s, t]) => this.selected(s, t));
        this.emit(truncateSql(rels, Boolean(c.cascade), Boolean(c.restartIdentity)));
        return;
      }
      case 'DDL': {
        await this.flushBatch();
        const c = JSON.parse(ev.content ?? '{}') as DdlContent;
        if (c.repeatOfPrevious) return;
        if (!c.command || (this.opts.filter && !ddlTouches(c, this.opts.filter))) {
          this.stats.skipped++;
          this.opts.onDdlSkipped?.(ev);
          return;
        }
        this.emit(ddlSql(c.command, c.searchPath, c.tag));
        return;
      }
      case 'SEQUENCES':
        if (ev.content) this.sequences = parseSequences(ev.content);
        return;
      default:
        // MESSAGE: a user's logical message; nothing to apply.
        this.stats.skipped++;
        return;
    }
  }

  private async row(ev: ChangeEvent): Promise<void> {
    const r = ev.relation!;
    const ref: TableRef = { schema: ev.schema, table: ev.table, relation: r };
    const sig = relSig(ev);
    const full = r.replicaIdentity === 'f' || r.key.length === 0;
    if (ev.op === 'INSERT') {
      const b = this.batch;
      if (b && b.kind === 'insert' && b.sig === sig && b.rows.length < this.batchMaxRows) {
        b.rows.push(ev.new!);
        return;
      }
      await this.flushBatch();
      this.batch = { kind: 'insert', ref, sig, rows: [ev.new!] };
      return;
    }
    if (full) {
      // No key to batch by: one statement per change, in order.
      await this.flushBatch();
      const old = ev.old ?? ev.new!;
      this.emit(ev.op === 'UPDATE' ? updateFullSql(ref, old, ev.new!, ev.unchanged) : deleteFullSql(ref, old));
      return;
    }
    const key = keyValues(ev);
    const ks = keyString(key);
    if (ev.op === 'UPDATE') {
      const setCols = updateColumns(ev);
      const usig = `${sig}\u0002${setCols.join(',')}`;
      const newKey = ev.oldKind ? keyString(r.key.map((i) => ev.new![i] ?? null)) : ks;
      let b = this.batch;
      if (!(b && b.kind === 'update' && b.sig === usig && b.rows.length < this.batchMaxRows && !b.keys.has(ks) && !b.keys.has(newKey))) {
        await this.flushBatch();
        b = this.batch = { kind: 'update', ref, sig: usig, setCols, rows: [], keys: new Set() };
      }
      b.rows.push({ key, values: ev.new! });
      b.keys.add(ks);
      b.keys.add(newKey);
      return;
    }
    let b = this.batch;
    if (!(b && b.kind === 'delete' && b.sig === sig && b.rows.length < this.batchMaxRows && !b.keys.has(ks))) {
      await this.flushBatch();
      b = this.batch = { kind: 'delete', ref, sig, rows: [], keys: new Set() };
    }
    b.rows.push(key);
    b.keys.add(ks);
  }

  private emit(sql: string): void {
    if (!sql) return;
    this.stats.statements++;
    this.sql += sql;
  }

  private async flushSql(): Promise<void> {
    if (this.sql.length === 0) return;
    const text = this.sql;
    this.sql = '';
    await this.sink.exec(text);
  }

  private async flushBatch(): Promise<void> {
    const b = this.batch;
    this.batch = undefined;
    if (b) {
      if (b.kind === 'insert') {
        if (b.rows.length >= this.copyMinRows) {
          await this.flushSql();
          const n = b.ref.relation.columns.length;
          let data = '';
          for (const row of b.rows) data += copyRow(row, n);
          this.stats.statements++;
          await this.sink.copy(copySql(b.ref), data);
        } else {
          this.emit(insertSql(b.ref, b.rows));
        }
      } else if (b.kind === 'update') {
        this.emit(updateSql(b.ref, b.setCols, b.rows));
      } else {
        this.emit(deleteSql(b.ref, b.rows));
      }
    }
    if (this.sql.length >= SQL_BUFFER_BYTES) await this.flushSql();
  }

  private async commitGroup(): Promise<void> {
    if (!this.inTxn) return;
    await this.flushBatch();
    const last = this.stats.last;
    if (this.opts.cursor && last) {
      this.sql +=
        `UPDATE _cdp_restore.cursor SET commit_lsn = ${last.commitLsn}, commit_time = ${last.commitTime}, xid = ${last.xid}, ` +
        `end_lsn = ${this.stats.lastEndLsn}, transactions = transactions + ${this.stats.transactions - this.committedTxns}, updated_at = clock_timestamp();\n`;
    }
    this.committedTxns = this.stats.transactions;
    this.sql += 'COMMIT;\n';
    this.inTxn = false;
    this.stats.targetCommits++;
    await this.flushSql();
  }
  private committedTxns = 0;
}

function parseSequences(content: string): Record<string, string | number> | undefined {
  try {
    const v = JSON.parse(content) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, string | number>) : undefined;
  } catch {
    return undefined;
  }
}

function ddlTouches(c: DdlContent, f: TableFilter): boolean {
  for (const o of [...(c.objects ?? []), ...(c.dropped ?? [])]) {
    const id = String(o.object_identity ?? o.identity ?? o.objectIdentity ?? '');
    const schema = String(o.schema_name ?? o.schema ?? '');
    for (const t of f.tables) {
      if (id === t || id.startsWith(`${t}.`)) return true;
      const [s, name] = t.split('.');
      if (schema === s && (id === `${s}.${name}` || id.replace(/"/g, '') === t)) return true;
    }
  }
  return false;
}

/**
 * Sets every sequence to at least its value at the target: the SEQUENCES snapshot (values read
 * after the target when archived, else the last before), the sequence's current value (the base
 * dump's SEQUENCE SET), and the highest value in the column that owns it (serial / identity).
 * One DO block, so that the same text serves the live target and the --sql file.
 */
export function sequencesSql(snapshot: Record<string, string | number> | undefined): string {
  const snap = quoteLiteral(JSON.stringify(snapshot ?? {}));
  return `DO $cdp$
DECLARE
  r record;
  snap jsonb := ${snap}::jsonb;
  v numeric;
  m numeric;
  cur numeric;
BEGIN
  FOR r IN
    SELECT c.oid AS seq, n.nspname, c.relname, d.refobjid AS tbl, a.attname, a.atttypid
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
      AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
    LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_cdp_restore')
  LOOP
    v := (snap ->> (r.nspname || '.' || r.relname))::numeric;
    IF r.tbl IS NOT NULL AND r.atttypid IN (20, 21, 23) THEN
      EXECUTE format('SELECT max(%I)::numeric FROM %s', r.attname, r.tbl::regclass) INTO m;
      v := greatest(v, m);
    END IF;
    EXECUTE format('SELECT CASE WHEN is_called THEN last_value END::numeric FROM %s', r.seq::regclass) INTO cur;
    IF v IS NOT NULL AND (cur IS NULL OR v > cur) THEN
      PERFORM pg_catalog.setval(r.seq, v::bigint, true);
    END IF;
  END LOOP;
END
$cdp$;
`;
}

export { qualify };
