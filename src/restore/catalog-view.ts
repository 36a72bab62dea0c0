import type { ChangeEvent, RelationInfo } from '../format/change-event.js';

// What the applier knows of the target's catalog between two reads of it: the caller's answers
// (which tables exist, which may be coalesced, whose writes run user code), cached per table and
// corrected by the DDL replayed since the read, and whether a DDL has made them stale. Split from
// apply.ts (issue 12 item 5); pure, no I/O: the caller reads the catalog (ApplyOptions.afterDdl).

/** The caller's catalog, as of its last read. Each absent = not known (the --sql file, the dry run). */
export interface CatalogQueries {
  /**
   * Coalescing inside a target transaction (coalesce.ts): allowed for a table when this says so
   * (the caller knows the target's catalog: no unique index besides the replica identity, no
   * exclusion constraint) and runAsOwner says no user code runs on its writes. Absent = never
   * coalesce, every change in stream order.
   */
  reorderable?: (schema: string, table: string) => boolean;
  /**
   * Whether the target has this table (as of the last catalog read). Absent = assume it does (the
   * --sql file, the dry run). Used for CREATE TABLE AS / SELECT INTO, see DdlApplier.createFromRows.
   */
  tableExists?: (schema: string, table: string) => boolean;
  /**
   * The owner of a table whose row writes run user-written code (see CatalogView.ownerRunner), or
   * undefined. Absent (the --sql file) = rows are written by whoever runs the file.
   */
  runAsOwner?: (schema: string, table: string) => string | undefined;
  /**
   * Whether the target's table is a plain table with inheritance children (TargetCatalog
   * .inheritanceParent). Absent (the --sql file) = no: statements name the table without ONLY.
   */
  inheritanceParent?: (schema: string, table: string) => boolean;
  /** A type of the target outside sql.ts commaArrayType that takes a typed array literal (TargetCatalog.arrayType). Absent = none. */
  arrayType?: (type: string) => boolean;
}

/** The catalog's answers for one table (one relation description), until the next catalog read. */
export interface TableInfo {
  schema: string;
  table: string;
  /** The table's name in the coalescing buffer. */
  netKey: string;
  reorderable: boolean;
  exists: boolean;
}

export class CatalogView {
  /** A DDL (or a table made from rows) was sent since the last read: nothing is coalesced until the next. */
  stale = false;
  /** The catalog's answers per relation description (one object per table and shape, see fast-decode). */
  private readonly tables = new Map<RelationInfo, TableInfo>();
  /** runAsOwner's answers by schema\0table ('' = not needed). */
  private readonly owners = new Map<string, string>();
  /** Tables DDL created or dropped since the caller last read the catalog (schema.table). */
  private readonly createdSinceRead = new Set<string>();
  private readonly droppedSinceRead = new Set<string>();

  constructor(private readonly ask: CatalogQueries) {}

  /** What the caller's catalog says of the event's table; asked once per table between catalog reads. */
  info(ev: ChangeEvent): TableInfo {
    const r = ev.relation!;
    let i = this.tables.get(r);
    if (!i || i.schema !== ev.schema || i.table !== ev.table) {
      i = {
        schema: ev.schema,
        table: ev.table,
        netKey: `${ev.schema}\u0000${ev.table}`,
        // A table whose writes run a user's code (triggers among them) keeps every change: its
        // code must see the events the source's saw.
        reorderable: (this.ask.reorderable?.(ev.schema, ev.table) ?? false) && !this.ownerRunner(ev),
        exists: this.exists(ev.schema, ev.table),
      };
      this.tables.set(r, i);
    }
    return i;
  }

  /** The catalog's answer corrected by the DDL replayed since it was read. Absent catalog = exists. */
  exists(schema: string, table: string): boolean {
    const ask = this.ask.tableExists;
    if (!ask) return true;
    const name = `${schema}.${table}`;
    if (this.createdSinceRead.has(name)) return true;
    if (this.droppedSinceRead.has(name)) return false;
    return ask(schema, table);
  }

  /**
   * The runner of the table's owner when writing its rows runs code a user wrote (a CHECK or index
   * expression calling a user function, an ALWAYS trigger, a domain): that code then runs with the
   * owner's rights, not the restore's superuser's (ddl-replay.ts runAsSql). Cached until the
   * next catalog read.
   */
  ownerRunner(t: { readonly schema: string; readonly table: string }): string | undefined {
    const ask = this.ask.runAsOwner;
    if (!ask) return undefined;
    const name = `${t.schema}\u0000${t.table}`;
    let owner = this.owners.get(name);
    if (owner === undefined) this.owners.set(name, (owner = ask(t.schema, t.table) ?? ''));
    return owner || undefined;
  }

  /** Whether the table has inheritance children (as of the last read): its UPDATE and DELETE say ONLY. */
  inheritanceParent(t: { readonly schema: string; readonly table: string }): boolean {
    return this.ask.inheritanceParent?.(t.schema, t.table) ?? false;
  }

  /** The caller's arrayType, if any (TableRef.arrayType). */
  get arrayType(): ((type: string) => boolean) | undefined {
    return this.ask.arrayType;
  }

  /** DDL (or the applier) created "schema.table" since the last read. */
  created(name: string): void {
    this.createdSinceRead.add(name);
    this.droppedSinceRead.delete(name);
  }

  /** DDL dropped "schema.table" since the last read. */
  dropped(name: string): void {
    this.createdSinceRead.delete(name);
    this.droppedSinceRead.add(name);
  }

  /** After a DDL: which tables exist is asked again (corrected by created / dropped); owners stay cached. */
  forgetTables(): void {
    this.tables.clear();
  }

  /** The caller has read the catalog again: every answer is asked anew. */
  reread(): void {
    this.stale = false;
    this.tables.clear();
    this.owners.clear();
    this.createdSinceRead.clear();
    this.droppedSinceRead.clear();
  }
}
