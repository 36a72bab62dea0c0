import type { ChangeEvent, RelationInfo } from '../format/change-event.js';
import { CdpError, ErrorCodes } from '../errors.js';
import { formatLsn, type Lsn } from '../util/lsn.js';
import type { ReplayItem } from './merge.js';
import { Coalescer } from './coalesce.js';
import { parseSequences } from './sequences.js';
import {
  copyRow,
  copySql,
  createTableSql,
  quoteIdent as quoteIdentSql,
  deleteFullSql,
  deleteSql,
  insertSql,
  keyValues,
  truncateSql,
  updateColumns,
  updateFullSql,
  updateSql,
  type TableRef,
} from './sql.js';
import type { TxnHeader } from './target.js';
import { CURSOR_SCHEMA } from './cursor.js';
import { ddlNeededForTables, identParts } from './ddl-filter.js';
import { ddlReplaySql, encodedText, overrideKey, planDdl, runAsSql, SESSION_SETTINGS, type DdlContent } from './ddl-replay.js';

export { sequencesSql } from './sequences.js';

// Applies the replay stream through a SqlSink (a live session, or a .sql file).
//
// Batching: consecutive changes of one table and one kind become one statement (COPY or a multi-row
// INSERT for inserts, UPDATE ... FROM (VALUES ...) for updates of tables without other unique
// indexes, DELETE ... WHERE key IN (...) for deletes). A batch is flushed before anything that could observe or reorder it: a change of
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
  /**
   * Coalescing inside a target transaction (coalesce.ts): allowed for a table when this says so
   * (the caller knows the target's catalog: no unique index besides the replica identity, no
   * exclusion constraint) and runAsOwner says no user code runs on its writes. Absent = never
   * coalesce, every change in stream order.
   */
  reorderable?: (schema: string, table: string) => boolean;
  /**
   * Whether the target has this table (as of the last catalog read). Absent = assume it does (the
   * --sql file, the dry run). Used for CREATE TABLE AS / SELECT INTO, see Applier.ensureTable.
   */
  tableExists?: (schema: string, table: string) => boolean;
  /** Called after a DDL has been sent, before more rows are coalesced: refresh `reorderable`. */
  afterDdl?: () => Promise<void>;
  /** --ddl-override: SQL to run in place of a DDL event, by "<commit LSN>#<position>" (ddl-replay.ts). */
  ddlOverrides?: Map<string, string>;
  /**
   * The owner of a table whose row writes run user-written code (see Applier.ownerRunner), or
   * undefined. Absent (the --sql file) = rows are written by whoever runs the file.
   */
  runAsOwner?: (schema: string, table: string) => string | undefined;
  /** The restore session's own settings, put back after each DDL (ddl-replay.ts SESSION_SETTINGS + extras). */
  sessionSql?: string;
  /** --ddl-role: replay every DDL as this role instead of the one that ran it. */
  ddlRole?: string;
  /** Whether the target has this role (as of the last catalog read). Absent = not checked (--sql). */
  roleExists?: (role: string) => boolean;
  onDdlOverridden?: (ev: ChangeEvent, sql: string) => void;
  /**
   * --trust-legacy-ddl: replay DDL events written by an earlier version (no role, whole query text)
   * as the restore role. Without it (or --ddl-role, which they then run as) such an event stops the
   * restore (UNSUPPORTED).
   */
  trustLegacyDdl?: boolean;
  /** A DDL event written by an earlier version (no role, whole query text), about to be replayed. */
  onLegacyDdl?: (ev: ChangeEvent) => void;
  /** Rows of one INSERT / COPY in stream order (default 10,000). */
  insertMaxRows?: number;
  /** Rows the coalescing buffer may hold (all tables) before it is written out (default 10,000). */
  netMaxRows?: number;
  /** Estimated heap bytes the coalescing buffer may hold before it is written out (default 64 MiB). */
  netMaxBytes?: number;
  /**
   * Changes a group may span while its coalescing buffer holds rows (default = groupMaxChanges).
   * Larger lets an insert and a later transaction's updates or delete of its row meet in one
   * buffer, at the cost of holding them: measured slower on bench/restore.ts (the target idles
   * while the buffer fills, then node idles while it is written), so off by default.
   */
  coalesceMaxChanges?: number;
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
  | { kind: 'insert'; ref: TableRef; rows: Array<(string | null)[]> }
  | { kind: 'update'; ref: TableRef; setCols: readonly number[]; rows: Array<{ key: (string | null)[]; values: (string | null)[] }>; keys: Set<string> }
  | { kind: 'delete'; ref: TableRef; keys: Set<string>; rows: Array<(string | null)[]> };

const SQL_BUFFER_BYTES = 1 << 20;

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

function refOf(ev: ChangeEvent): TableRef {
  return { schema: ev.schema, table: ev.table, relation: ev.relation! };
}

function keyString(k: (string | null)[]): string {
  if (k.length === 1) return k[0] ?? '\u0001';
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

export class Applier {
  readonly stats: ApplyStats = { transactions: 0, changes: 0, skipped: 0, statements: 0, targetCommits: 0, last: undefined, lastEndLsn: 0 };
  /** Latest SEQUENCES snapshot applied (values at or before the last applied transaction). */
  sequences: Record<string, string | number> | undefined;
  private batch: Batch | undefined;
  /** SQL text not yet cut into an op, and the ops (text runs and COPYs) not yet sent, in order. */
  private sql: string[] = [];
  private sqlBytes = 0;
  private ops: Array<{ sql?: string; copy?: string; data?: string }> = [];
  private readonly net = new Coalescer();
  /** Tables created from the stream's description (schema.table), until their CREATE TABLE AS event. */
  private readonly autoCreated = new Set<string>();
  /** Tables DDL created or dropped since the caller last read the catalog (schema.table). */
  private readonly createdSinceRead = new Set<string>();
  private readonly droppedSinceRead = new Set<string>();
  /** Commit LSN of the transaction whose CREATE TABLE AS event was skipped (see ensureTable). */
  private skippedCtasAt: number | undefined;
  private catalogStale = false;
  /** The catalog's answers per relation description (one object per table and shape, see fast-decode), until the next catalog read. */
  private readonly tableInfo = new Map<RelationInfo, { schema: string; table: string; netKey: string; reorderable: boolean; exists: boolean }>();
  private readonly netMaxRows: number;
  private readonly netMaxBytes: number;
  private readonly coalesceMaxChanges: number;
  /** COPY gets cheaper per row up to ~10,000 rows a statement (bench/restore-apply.ts). */
  private readonly insertMaxRows: number;
  private inTxn = false;
  /** The open source transaction added an enum value: commit the target transaction with it. */
  private commitAtTxnEnd = false;
  /** runAsOwner's answers by schema\0table ('' = not needed), until the next catalog read. */
  private readonly owners = new Map<string, string>();
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
    this.netMaxRows = opts.netMaxRows ?? 10_000;
    this.netMaxBytes = opts.netMaxBytes ?? 64 * 1024 * 1024;
    this.coalesceMaxChanges = opts.coalesceMaxChanges ?? this.groupMaxChanges;
    this.insertMaxRows = opts.insertMaxRows ?? Math.max(this.batchMaxRows, 10_000);
  }

  async handle(item: ReplayItem): Promise<void> {
    return this.handleBatch([item]);
  }

  /** Items of one batch are processed synchronously; ops are sent once per batch. */
  async handleBatch(items: ReplayItem[]): Promise<void> {
    for (const item of items) {
      if (item.type === 'end') {
        await this.finish(item);
        continue;
      }
      if (item.type === 'changes' && this.opts.afterDdl) {
        // After a DDL the target's catalog is read again before the next change: which tables
        // exist, which may be coalesced, and whose rows must be written as their owner (a CHECK
        // the DDL just added may call a user's function) all depend on it.
        for (const ev of item.events) {
          this.change(ev);
          if (this.catalogStale) await this.refreshCatalog();
        }
      } else {
        this.handleSync(item);
      }
      if (this.ops.length > 8) await this.sendOps();
      await this.yieldToIo();
    }
    await this.sendOps();
    if (this.catalogStale && this.opts.afterDdl) await this.refreshCatalog();
  }

  private async refreshCatalog(): Promise<void> {
    this.cutSql();
    await this.sendOps();
    await this.sink.drain();
    await this.opts.afterDdl!();
    this.catalogStale = false;
    this.tableInfo.clear();
    this.owners.clear();
    this.createdSinceRead.clear();
    this.droppedSinceRead.clear();
  }

  private lastYield = performance.now();

  /**
   * Lets the event loop run at least every couple of milliseconds. node-postgres sends a queued
   * statement only when it reads the previous one's ReadyForQuery, and COPY data only after the
   * server's CopyInResponse: both are socket events, handled only when this loop yields. Building
   * SQL is synchronous work (awaiting a sink that has room resolves without reaching the event
   * loop), so without this Postgres sat idle, statement after statement, until the next await
   * that really waited: restore measured Postgres's backend at ~30% of a core while node was at
   * 100%, with a statement always outstanding.
   */
  private async yieldToIo(): Promise<void> {
    const now = performance.now();
    if (now - this.lastYield < 2) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.lastYield = performance.now();
  }

  private async finish(item: Extract<ReplayItem, { type: 'end' }>): Promise<void> {
    if (item.sequencesAfter?.content) this.sequences = parseSequences(item.sequencesAfter.content);
    this.commitGroup();
    this.cutSql();
    await this.sendOps();
    await this.sink.drain();
  }

  private handleSync(item: Exclude<ReplayItem, { type: 'end' }>): void {
    switch (item.type) {
      case 'begin':
        if (!this.inTxn) {
          this.sql.push('BEGIN;\n');
          this.inTxn = true;
          this.groupChanges = 0;
          this.groupStarted = Date.now();
        }
        return;
      case 'changes':
        for (const ev of item.events) this.change(ev);
        return;
      case 'commit':
        if (this.autoCreated.size > 0) {
          // Rows reached a table that no DDL of their transaction made: not CREATE TABLE AS /
          // SELECT INTO (whose event follows its rows in the same transaction) but something that
          // fires no event (EXPLAIN ANALYZE CREATE TABLE AS) or DDL that was not captured. The
          // table made from the rows' columns lacks whatever else the source's has: stop.
          const tables = [...this.autoCreated].join(', ');
          throw new CdpError(
            ErrorCodes.UNSUPPORTED,
            `rows of ${tables} (transaction xid ${item.txn.xid}, commit LSN ${formatLsn(item.txn.commitLsn)}) reach a table no captured DDL created ` +
              `(EXPLAIN ANALYZE CREATE TABLE AS fires no DDL event; or DDL capture was not installed): its definition is unknown. Restore to a point before it`,
            { details: { tables: [...this.autoCreated], xid: item.txn.xid, commitLsn: formatLsn(item.txn.commitLsn) } },
          );
        }
        this.stats.transactions++;
        this.stats.last = item.txn;
        this.stats.lastEndLsn = item.endLsn;
        // A new enum value can be used only once the transaction that added it has committed
        // (PostgreSQL: "unsafe use of new value"): the group ends with the source transaction.
        if (this.commitAtTxnEnd || this.groupFull()) this.commitGroup();
        this.commitAtTxnEnd = false;
        return;
    }
  }

  /**
   * Whether the open group should commit at this source transaction's end. While the coalescing
   * buffer holds rows the group may go on up to coalesceMaxChanges (and 30 s; the buffer itself is
   * bounded by netMaxBytes / netMaxRows): a later transaction's update or delete of a row still in
   * the buffer then costs nothing on the target. Otherwise groupMaxChanges and groupMaxMs bound it.
   */
  private groupFull(): boolean {
    const age = Date.now() - this.groupStarted;
    if (this.net.rows > 0 && this.groupMaxChanges > 0 && this.coalesceMaxChanges > this.groupMaxChanges) {
      return this.groupChanges >= this.coalesceMaxChanges || age >= Math.max(this.groupMaxMs, 30_000);
    }
    return this.groupChanges >= this.groupMaxChanges || age >= this.groupMaxMs;
  }

  private selected(schema: string, table: string): boolean {
    return !this.opts.filter || this.opts.filter.tables.has(`${schema}.${table}`);
  }

  private change(ev: ChangeEvent): void {
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
        this.flushAll();
        const c = JSON.parse(ev.content ?? '{}') as { relations?: Array<[string, string]>; cascade?: boolean; restartIdentity?: boolean };
        const rels = (c.relations ?? []).filter(([s, t]) => this.selected(s, t));
        const sql = truncateSql(rels, Boolean(c.cascade), Boolean(c.restartIdentity));
        // TRUNCATE fires ALWAYS triggers too: run as the owner when any table needs it.
        const owners = new Set(rels.map(([sc, t]) => this.ownerRunner({ schema: sc, table: t } as TableRef)).filter((o): o is string => o !== undefined));
        if (owners.size === 0) this.emit(sql);
        else if (owners.size === 1 && rels.length === 1) this.emitFor({ schema: rels[0]![0], table: rels[0]![1] } as TableRef, sql);
        else {
          throw new CdpError(
            ErrorCodes.UNSUPPORTED,
            `the TRUNCATE of transaction xid ${ev.xid} (commit LSN ${formatLsn(ev.commitLsn)}) covers several tables of which some run their owner's code on writes (${rels.map(([sc, t]) => `${sc}.${t}`).join(', ')}): ` +
              `it can run neither as one owner nor as the restore's superuser; restore to a point before it`,
            { details: { xid: ev.xid, commitLsn: formatLsn(ev.commitLsn) } },
          );
        }
        return;
      }
      case 'DDL': {
        this.flushAll();
        const c = JSON.parse(ev.content ?? '{}') as DdlContent;
        const legacy = !c.v || c.v < 2;
        if (legacy && c.repeatOfPrevious) {
          if (this.skippedCtasAt === ev.commitLsn) {
            // The skipped CREATE TABLE AS shared its query string with further DDL: replaying
            // the text would create the table a second time, skipping it loses the rest.
            throw new CdpError(
              ErrorCodes.UNSUPPORTED,
              `cannot replay the DDL of the transaction at commit LSN ${formatLsn(ev.commitLsn)} (xid ${ev.xid}): one query string held CREATE TABLE AS / SELECT INTO and further DDL (${JSON.stringify(c.command?.slice(0, 200))}); restore to a target before it`,
              { details: { commitLsn: ev.commitLsn, xid: ev.xid } },
            );
          }
          return;
        }
        this.skippedCtasAt = undefined;
        // The catalog read before this DDL no longer says which tables exist.
        this.tableInfo.clear();
        for (const o of c.dropped ?? []) {
          const id = plainIdentity(o);
          this.autoCreated.delete(id);
          this.createdSinceRead.delete(id);
          this.droppedSinceRead.add(id);
        }
        if (this.autoCreated.size > 0 && (c.tag === 'CREATE TABLE AS' || c.tag === 'SELECT INTO')) {
          const made = (c.objects ?? []).map(plainIdentity).filter((id) => this.autoCreated.delete(id));
          // Its rows are already applied, into the table made from their description: running
          // the query again would add them a second time.
          if (made.length > 0) {
            this.skippedCtasAt = ev.commitLsn;
            this.stats.skipped++;
            // The table made from the rows belongs to the restore role; on the source it belongs to
            // the role that ran the command.
            const owner = c.v && c.v >= 2 && c.roleVerified ? c.role : undefined;
            if (owner && (!this.opts.roleExists || this.opts.roleExists(owner))) {
              for (const o of c.objects ?? []) {
                if (!made.includes(plainIdentity(o))) continue;
                const parts = identParts(String(o.identity ?? o.object_identity ?? ''));
                this.emit(`ALTER TABLE ${parts.map(quoteIdentSql).join('.')} OWNER TO ${quoteIdentSql(owner)};\n`);
              }
            }
            return;
          }
        }
        for (const o of c.objects ?? []) {
          if (String(o.objectType ?? o.object_type ?? '') !== 'table') continue;
          const id = plainIdentity(o);
          this.createdSinceRead.add(id);
          this.droppedSinceRead.delete(id);
        }
        if (!c.command || (this.opts.filter && !ddlNeededForTables(c, this.opts.filter.tables))) {
          this.stats.skipped++;
          this.opts.onDdlSkipped?.(ev);
          return;
        }
        this.emit(this.ddl(c, ev));
        // Until the caller has re-read the catalog, nothing is coalesced (a new unique index?).
        this.catalogStale = true;
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

  /** The SQL of one DDL event (ddl-replay.ts), checking the role it must run under. */
  private ddl(c: DdlContent, ev: ChangeEvent): string {
    const at = { commitLsn: ev.commitLsn, xid: ev.xid, position: ev.position };
    const plan = planDdl(c, at, this.opts.ddlOverrides);
    if (plan.commitAfterTransaction) this.commitAtTxnEnd = true;
    if (plan.overridden) this.opts.onDdlOverridden?.(ev, plan.statement ?? '');
    if (!c.v || c.v < 2) {
      // Written by an earlier version: no role, the whole query text. Whoever could run DDL on the
      // source wrote that text; replayed as the restore role (a superuser) it would run with more
      // privilege than it had. Only the operator decides: a role to run it as, or trust.
      if ((plan.statement !== undefined || plan.after !== undefined) && !plan.overridden) {
        if (this.opts.ddlRole) plan.role = this.opts.ddlRole;
        else if (!this.opts.trustLegacyDdl) {
          throw new CdpError(
            ErrorCodes.UNSUPPORTED,
            `the ${c.tag ?? 'DDL'} of transaction xid ${ev.xid} (commit LSN ${formatLsn(ev.commitLsn)}) was captured by an earlier version of cdp, which recorded neither the role that ran it nor its statements (the whole query text): ` +
              `replayed as the restore role it would run with that role's privileges, whoever wrote it. Choose: --ddl-role ROLE (not a superuser) to replay such DDL as that role, ` +
              `--trust-legacy-ddl to replay it as the restore role (only if every role that could run DDL on the source then is trusted), or supply its SQL with --ddl-override (key ${JSON.stringify(overrideKey(at))})`,
            { details: { legacyDdl: true, xid: ev.xid, commitLsn: formatLsn(ev.commitLsn) } },
          );
        }
      }
      this.opts.onLegacyDdl?.(ev);
    } else if ((plan.statement !== undefined || plan.after !== undefined) && !plan.overridden) {
      // --ddl-role stands in only where the source's role cannot be used: it could not be vouched
      // for (the DDL ran inside another role's SECURITY DEFINER function), or the target lacks it.
      const where = `the ${c.tag ?? 'DDL'} of transaction xid ${ev.xid} (commit LSN ${formatLsn(ev.commitLsn)})`;
      if (plan.role === undefined) {
        if (!this.opts.ddlRole) {
          throw new CdpError(
            ErrorCodes.UNSUPPORTED,
            `${where} ran inside a SECURITY DEFINER function of a role the session ${JSON.stringify(c.sessionUser ?? '')} may not act as: which role's privileges it had cannot be vouched for, ` +
              `and replaying it as either could give it more. Name the role to replay such DDL as with --ddl-role ROLE (not a superuser), or supply its SQL with --ddl-override (key ${JSON.stringify(overrideKey(at))})`,
            { details: { xid: ev.xid, commitLsn: formatLsn(ev.commitLsn), sessionUser: c.sessionUser ?? null } },
          );
        }
        plan.role = this.opts.ddlRole;
      } else if (this.opts.roleExists && !this.opts.roleExists(plan.role)) {
        if (!this.opts.ddlRole) {
          throw new CdpError(
            ErrorCodes.UNSUPPORTED,
            `${where} ran as role ${JSON.stringify(plan.role)} on the source, ` +
              `which does not exist on the target: restore replays DDL with the privileges of the role that ran it, never more. ` +
              `Create the role on the target (CREATE ROLE ${quoteIdentSql(plan.role)} NOLOGIN) and restore again, or name a role to replay such DDL as with --ddl-role ROLE`,
            { details: { role: plan.role, xid: ev.xid, commitLsn: formatLsn(ev.commitLsn) } },
          );
        }
        plan.role = this.opts.ddlRole;
      }
    }
    return ddlReplaySql(plan, this.opts.sessionSql);
  }

  /**
   * CREATE TABLE AS and SELECT INTO write their rows before the command ends, and the DDL event is
   * emitted when it ends: in the stream the table's INSERTs come first. A row for a table the
   * target does not have creates it from the row's relation description (the columns and types
   * such a command gives a table; it has no constraints); the command's own event is then skipped.
   * A CREATE TABLE AS that produced no rows has no INSERTs and is replayed as text as before.
   */
  /** What the caller's catalog says of the event's table; asked once per table between catalog reads. */
  private info(ev: ChangeEvent): { netKey: string; reorderable: boolean; exists: boolean } {
    const r = ev.relation!;
    let i = this.tableInfo.get(r);
    if (!i || i.schema !== ev.schema || i.table !== ev.table) {
      i = {
        schema: ev.schema,
        table: ev.table,
        netKey: `${ev.schema}\u0000${ev.table}`,
        // A table whose writes run a user's code (triggers among them) keeps every change: its
        // code must see the events the source's saw.
        reorderable: (this.opts.reorderable?.(ev.schema, ev.table) ?? false) && !this.ownerRunner(refOf(ev)),
        exists: this.tableExists(ev.schema, ev.table),
      };
      this.tableInfo.set(r, i);
    }
    return i;
  }

  /** The catalog's answer corrected by the DDL replayed since it was read. Absent catalog = exists. */
  private tableExists(schema: string, table: string): boolean {
    const ask = this.opts.tableExists;
    if (!ask) return true;
    const name = `${schema}.${table}`;
    if (this.createdSinceRead.has(name)) return true;
    if (this.droppedSinceRead.has(name)) return false;
    return ask(schema, table);
  }

  private ensureTable(ev: ChangeEvent, info: { exists: boolean }): void {
    if (info.exists) return;
    const name = `${ev.schema}.${ev.table}`;
    this.flushAll();
    this.emit(createTableSql(refOf(ev)));
    this.autoCreated.add(name);
    this.createdSinceRead.add(name);
    this.droppedSinceRead.delete(name);
    info.exists = true;
    this.catalogStale = true;
  }

  private row(ev: ChangeEvent): void {
    // The catalog's answers for this table, looked up once per change.
    const info = this.info(ev);
    this.ensureTable(ev, info);
    const r = ev.relation!;
    const full = r.replicaIdentity === 'f' || r.key.length === 0;
    // "Reorderable" = no unique index but the replica identity and no exclusion constraint, as the
    // caller last read the target's catalog. Absent (the --sql file) or stale (a DDL since) = unknown.
    const reorderable = !this.catalogStale && info.reorderable;
    if (!full && reorderable) {
      if (this.netRow(ev, info.netKey)) return;
    }
    if (this.net.size > 0) {
      // A table whose writes run user code (a trigger, a CHECK calling a function) may read any
      // other table: everything the source changed before this change is written first, not only
      // this table's own buffer (coalesce.ts assumes no user code sees a buffered table).
      if (this.ownerRunner(refOf(ev))) this.flushNetAll();
      else this.flushNetOf(info.netKey);
    }
    if (ev.op === 'INSERT') {
      const b = this.batch;
      if (b && b.kind === 'insert' && b.rows.length < this.insertMaxRows && sameShape(b.ref, ev)) {
        b.rows.push(ev.new!);
        return;
      }
      this.flushBatch();
      this.batch = { kind: 'insert', ref: refOf(ev), rows: [ev.new!] };
      return;
    }
    if (full) {
      // No key to batch by: one statement per change, in order.
      this.flushBatch();
      const old = ev.old ?? ev.new!;
      const ref = refOf(ev);
      this.emitFor(ref, ev.op === 'UPDATE' ? updateFullSql(ref, old, ev.new!, ev.unchanged) : deleteFullSql(ref, old));
      return;
    }
    const key = keyValues(ev);
    const ks = keyString(key);
    if (ev.op === 'UPDATE') {
      const setCols = updateColumns(ev);
      if (!reorderable) {
        // A table with another unique index (or one we cannot vouch for): one statement per UPDATE.
        // Uniqueness is checked row by row as a statement runs, and a multi-row UPDATE visits its
        // rows in the plan's order, not the stream's: a pair that swapped values in the source
        // (a: x->y, b: y->x via a temporary) could collide in one statement.
        this.flushBatch();
        this.emitFor(refOf(ev), updateSql(refOf(ev), setCols, [{ key, values: ev.new! }]));
        return;
      }
      const newKey = ev.oldKind ? keyString(r.key.map((i) => ev.new![i] ?? null)) : ks;
      let b = this.batch;
      if (!(
        b &&
        b.kind === 'update' &&
        b.rows.length < this.batchMaxRows &&
        sameCols(b.setCols, setCols) &&
        sameShape(b.ref, ev) &&
        !b.keys.has(ks) &&
        !b.keys.has(newKey)
      )) {
        this.flushBatch();
        b = this.batch = { kind: 'update', ref: refOf(ev), setCols, rows: [], keys: new Set() };
      }
      b.rows.push({ key, values: ev.new! });
      b.keys.add(ks);
      b.keys.add(newKey);
      return;
    }
    let b = this.batch;
    if (!(b && b.kind === 'delete' && b.rows.length < this.batchMaxRows && sameShape(b.ref, ev) && !b.keys.has(ks))) {
      this.flushBatch();
      b = this.batch = { kind: 'delete', ref: refOf(ev), rows: [], keys: new Set() };
    }
    b.rows.push(key);
    b.keys.add(ks);
  }

  /** Folds a change into the coalescing buffer (coalesce.ts); false: write it in stream order. */
  private netRow(ev: ChangeEvent, name: string): boolean {
    // Rows of a user-code table batched in stream order are written before a later change of
    // another table is buffered: their code must not see that change (nor miss an earlier one).
    if (this.batch && this.ownerRunner(this.batch.ref)) this.flushBatch();
    const buffered = this.net.ref(name);
    if (buffered && !sameShape(buffered, ev)) this.flushNetOf(name);
    if (!this.net.add(name, buffered && buffered.relation === ev.relation ? buffered : refOf(ev), ev)) {
      this.flushNetOf(name);
      return false;
    }
    if (this.net.bytes >= this.netMaxBytes || this.net.rows >= this.netMaxRows) this.flushNetAll();
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
    if (inserts.length >= this.copyMinRows && !this.ownerRunner(ref)) {
      // COPY in slices, so Postgres starts on the first while the next is built.
      const n = ref.relation.columns.length;
      for (let i = 0; i < inserts.length; i += this.insertMaxRows) {
        this.cutSql();
        let data = '';
        const end = Math.min(inserts.length, i + this.insertMaxRows);
        for (let j = i; j < end; j++) data += copyRow(inserts[j]!, n);
        this.stats.statements++;
        this.ops.push({ copy: copySql(ref), data });
      }
    } else if (inserts.length > 0) {
      for (let i = 0; i < inserts.length; i += max) this.emitFor(ref, insertSql(ref, inserts.slice(i, i + max)));
    }
    if (this.sqlBytes >= SQL_BUFFER_BYTES) this.cutSql();
  }

  private flushNetAll(): void {
    for (const name of this.net.names()) this.flushNetOf(name);
  }

  private flushAll(): void {
    this.flushBatch();
    this.flushNetAll();
  }

  /**
   * The runner of the table's owner when writing its rows runs code a user wrote (a CHECK or index
   * expression calling a user function, an ALWAYS trigger, a domain): that code then runs with the
   * owner's rights, not the restore's superuser's (ddl-replay.ts runAsSql). Cached until the
   * next catalog read.
   */
  private ownerRunner(ref: TableRef): string | undefined {
    const ask = this.opts.runAsOwner;
    if (!ask) return undefined;
    const name = `${ref.schema}\u0000${ref.table}`;
    let owner = this.owners.get(name);
    if (owner === undefined) this.owners.set(name, (owner = ask(ref.schema, ref.table) ?? ''));
    return owner || undefined;
  }

  /** A statement that writes rows of `ref`: run as its owner when ownerRunner says so. */
  private emitFor(ref: TableRef, sql: string): void {
    const owner = this.ownerRunner(ref);
    if (!owner || !sql) return this.emit(sql);
    // The owner's code may have changed session settings (client_encoding would garble every later
    // value): the restore session's own settings are put back after it, as after DDL.
    this.emit(`${runAsSql(owner, encodedText(sql))}RESET ALL; ${this.opts.sessionSql ?? SESSION_SETTINGS}\n`);
  }

  private emit(sql: string): void {
    if (!sql) return;
    this.stats.statements++;
    this.sql.push(sql);
    this.sqlBytes += sql.length;
  }

  /** Closes the current run of SQL text into one op (one simple-query round trip). */
  private cutSql(): void {
    if (this.sql.length === 0) return;
    this.ops.push({ sql: this.sql.join('') });
    this.sql = [];
    this.sqlBytes = 0;
  }

  /** Sends the ops built so far, in order. The only await on the per-change path. */
  private async sendOps(): Promise<void> {
    if (this.sqlBytes >= SQL_BUFFER_BYTES) this.cutSql();
    const ops = this.ops;
    this.ops = [];
    for (const op of ops) {
      if (op.copy !== undefined) await this.sink.copy(op.copy, op.data!);
      else await this.sink.exec(op.sql!);
    }
  }

  private flushBatch(): void {
    const b = this.batch;
    this.batch = undefined;
    if (b) {
      if (b.kind === 'insert') {
        if (b.rows.length >= this.copyMinRows && !this.ownerRunner(b.ref)) {
          this.cutSql();
          const n = b.ref.relation.columns.length;
          let data = '';
          for (const row of b.rows) data += copyRow(row, n);
          this.stats.statements++;
          this.ops.push({ copy: copySql(b.ref), data });
        } else {
          const max = this.batchMaxRows;
          for (let i = 0; i < b.rows.length; i += max) this.emitFor(b.ref, insertSql(b.ref, b.rows.slice(i, i + max)));
        }
      } else if (b.kind === 'update') {
        this.emitFor(b.ref, updateSql(b.ref, b.setCols, b.rows));
      } else {
        this.emitFor(b.ref, deleteSql(b.ref, b.rows));
      }
    }
    if (this.sqlBytes >= SQL_BUFFER_BYTES) this.cutSql();
  }

  private commitGroup(): void {
    if (!this.inTxn) return;
    this.flushAll();
    const last = this.stats.last;
    if (this.opts.cursor && last) {
      this.sql.push(
        `UPDATE ${CURSOR_SCHEMA}.cursor SET commit_lsn = ${last.commitLsn}, commit_time = ${last.commitTime}, xid = ${last.xid}, ` +
          `end_lsn = ${this.stats.lastEndLsn}, transactions = transactions + ${this.stats.transactions - this.committedTxns}, updated_at = clock_timestamp();\n`,
      );
    }
    this.committedTxns = this.stats.transactions;
    this.sql.push('COMMIT;\n');
    this.inTxn = false;
    this.stats.targetCommits++;
    this.cutSql();
  }
  private committedTxns = 0;
}

/**
 * "schema.table" of a DDL object, its object_identity unquoted: public."a""b" is public.a"b (a
 * quoted identifier doubles its quotes), so it compares with the events' raw names.
 */
export function plainIdentity(o: Record<string, unknown>): string {
  return identParts(String(o.identity ?? o.object_identity ?? '')).join('.');
}
