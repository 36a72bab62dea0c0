import type { ChangeEvent } from '../format/change-event.js';
import { CdpError, ErrorCodes } from '../errors.js';
import { formatLsn, type Lsn } from '../util/lsn.js';
import { CatalogView, type CatalogQueries } from './catalog-view.js';
import { DdlApplier, type DdlOptions } from './ddl-apply.js';
import { overrideKey } from './ddl-replay.js';
import type { ReplayItem } from './merge.js';
import { RowWriter, type WriteLimits } from './row-writer.js';
import { parseSequences } from './sequences.js';
import { SqlQueue, type SqlSink } from './sql-queue.js';
import { truncateSql } from './sql.js';
import type { TxnHeader } from './target.js';
import { TxnGroup, type GroupLimits } from './txn-group.js';

export { sequencesSql } from './sequences.js';
export { plainIdentity } from './ddl-apply.js';
export type { SqlSink } from './sql-queue.js';

// Applies the replay stream through a SqlSink (a live session, or a .sql file). The Applier reads
// the stream and hands each piece to the module that does one job (split in issue 12 item 5):
// - row-writer.ts: row changes to statements (batching in stream order, coalescing per key);
// - ddl-apply.ts: DDL in place, and tables CREATE TABLE AS made from their rows;
// - catalog-view.ts: the caller's catalog between reads, and whether DDL has made it stale;
// - txn-group.ts: source transactions grouped into target transactions, with the resume cursor;
// - sql-queue.ts: the SQL built, cut into round trips, sent in order.

export interface TableFilter {
  /** "schema.table" names to keep. */
  tables: Set<string>;
}

export interface ApplyOptions extends GroupLimits, WriteLimits, CatalogQueries, DdlOptions {
  filter?: TableFilter;
  /** Called after a DDL has been sent, before more rows are coalesced: refresh `reorderable`. */
  afterDdl?: () => Promise<void>;
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
  private readonly out: SqlQueue;
  private readonly catalog: CatalogView;
  private readonly rows: RowWriter;
  private readonly ddl: DdlApplier;
  private readonly group: TxnGroup;

  constructor(
    sink: SqlSink,
    private readonly opts: ApplyOptions,
  ) {
    this.out = new SqlQueue(sink, this.stats);
    this.catalog = new CatalogView(opts);
    this.group = new TxnGroup(opts);
    this.rows = new RowWriter(this.out, this.catalog, { ...opts, retainLoads: this.group.spansLoads });
    this.ddl = new DdlApplier(this.out, this.rows, this.catalog, this.stats, opts);
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
          if (this.catalog.stale) await this.refreshCatalog(ev);
        }
      } else {
        this.handleSync(item);
      }
      if (this.out.queued > 8) await this.out.send();
      // Checked here, not in an async call per item: an OLTP archive has three items per source
      // transaction, and an await each was measurable.
      if (performance.now() - this.lastYield >= 2) await this.yieldToIo();
    }
    await this.out.send();
    if (this.catalog.stale && this.opts.afterDdl) await this.refreshCatalog();
  }

  /** Reads the target's catalog again after `ddl` (a refusal of what it made names the statement's --ddl-override key). */
  private async refreshCatalog(ddl?: ChangeEvent): Promise<void> {
    this.out.cut();
    await this.out.send();
    await this.out.drain();
    try {
      await this.opts.afterDdl!();
    } catch (err) {
      if (!(ddl && err instanceof CdpError && err.code === ErrorCodes.UNSUPPORTED)) throw err;
      const key = overrideKey(ddl);
      throw new CdpError(err.code, `${err.message} (the DDL statement just replayed, xid ${ddl.xid}, has --ddl-override key ${key})`, {
        details: { ...err.details, ddlOverrideKey: key },
      });
    }
    this.catalog.reread();
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
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.lastYield = performance.now();
  }

  private async finish(item: Extract<ReplayItem, { type: 'end' }>): Promise<void> {
    if (item.sequencesAfter?.content) this.sequences = parseSequences(item.sequencesAfter.content);
    this.commitGroup();
    this.out.cut();
    await this.out.send();
    await this.out.drain();
  }

  private handleSync(item: Exclude<ReplayItem, { type: 'end' }>): void {
    switch (item.type) {
      case 'begin': {
        const begin = this.group.begin();
        if (begin) this.out.control(begin);
        return;
      }
      case 'changes':
        for (const ev of item.events) this.change(ev);
        return;
      case 'commit':
        this.ddl.checkCommit(item.txn);
        this.stats.transactions++;
        this.stats.last = item.txn;
        this.stats.lastEndLsn = item.endLsn;
        // A new enum value can be used only once the transaction that added it has committed
        // (PostgreSQL: "unsafe use of new value"): the group ends with the source transaction.
        if (this.ddl.commitAtTxnEnd || this.group.full(this.rows.retaining)) this.commitGroup();
        this.ddl.commitAtTxnEnd = false;
        return;
    }
  }

  private selected(schema: string, table: string): boolean {
    return !this.opts.filter || this.opts.filter.tables.has(`${schema}.${table}`);
  }

  private change(ev: ChangeEvent): void {
    this.group.changes++;
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
      case 'TRUNCATE':
        return this.truncate(ev);
      case 'DDL':
        return this.ddl.apply(ev);
      case 'SEQUENCES':
        if (ev.content) this.sequences = parseSequences(ev.content);
        return;
      default:
        // MESSAGE: a user's logical message; nothing to apply.
        this.stats.skipped++;
        return;
    }
  }

  private row(ev: ChangeEvent): void {
    // The catalog's answers for this table, looked up once per change.
    const info = this.catalog.info(ev);
    if (!info.exists) this.ddl.createFromRows(ev, info);
    // Absent (the --sql file) or stale (a DDL since) catalog = not known to be reorderable.
    this.rows.write(ev, info.netKey, !this.catalog.stale && info.reorderable);
  }

  private truncate(ev: ChangeEvent): void {
    this.rows.flushAll();
    const c = JSON.parse(ev.content ?? '{}') as { relations?: Array<[string, string]>; cascade?: boolean; restartIdentity?: boolean };
    const rels = (c.relations ?? []).filter(([s, t]) => this.selected(s, t));
    const sql = truncateSql(rels, Boolean(c.cascade), Boolean(c.restartIdentity), (schema, table) => this.catalog.inheritanceParent({ schema, table }));
    // TRUNCATE fires ALWAYS triggers too: run as the owner when any table needs it.
    const owners = new Set(rels.map(([schema, table]) => this.catalog.ownerRunner({ schema, table })).filter((o): o is string => o !== undefined));
    if (owners.size === 0) this.out.statement(sql);
    else if (owners.size === 1 && rels.length === 1) this.rows.emitFor({ schema: rels[0]![0], table: rels[0]![1] }, sql);
    else {
      throw new CdpError(
        ErrorCodes.UNSUPPORTED,
        `the TRUNCATE of transaction xid ${ev.xid} (commit LSN ${formatLsn(ev.commitLsn)}) covers several tables of which some run their owner's code on writes (${rels.map(([sc, t]) => `${sc}.${t}`).join(', ')}): ` +
          `it can run neither as one owner nor as the restore's superuser; restore to a point before it`,
        { details: { xid: ev.xid, commitLsn: formatLsn(ev.commitLsn) } },
      );
    }
  }

  private commitGroup(): void {
    if (!this.group.open) return;
    this.rows.flushAll();
    this.out.control(this.group.end(this.stats));
    this.stats.targetCommits++;
    this.out.cut();
  }
}
