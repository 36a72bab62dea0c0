import type { ChangeEvent } from '../format/change-event.js';
import { CdpError, ErrorCodes } from '../errors.js';
import { formatLsn } from '../util/lsn.js';
import type { CatalogView, TableInfo } from './catalog-view.js';
import { ddlNeededForTables, identParts } from './ddl-filter.js';
import { ddlReplaySql, overrideKey, planDdl, type DdlAt, type DdlContent, type DdlPlan } from './ddl-replay.js';
import { refOf } from './row-writer.js';
import type { SqlQueue } from './sql-queue.js';
import { createTableSql, quoteIdent } from './sql.js';
import type { TxnHeader } from './target.js';

// DDL events in the replay stream, in place (split from apply.ts, issue 12 item 5): everything
// buffered is written first, the event becomes SQL through ddl-replay.ts under the role checks
// below, the catalog view learns which tables it created or dropped and is stale until the caller
// reads the catalog again. Also CREATE TABLE AS / SELECT INTO, whose rows precede their event.

export interface DdlOptions {
  /** "schema.table" names to keep: DDL is replayed only when it concerns them (ddl-filter.ts). */
  filter?: { tables: Set<string> };
  onDdlSkipped?: (ev: ChangeEvent) => void;
  /** --ddl-override: SQL to run in place of a DDL event, by "<commit LSN>#<position>" (ddl-replay.ts). */
  ddlOverrides?: Map<string, string>;
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
}

/**
 * "schema.table" of a DDL object, its object_identity unquoted: public."a""b" is public.a"b (a
 * quoted identifier doubles its quotes), so it compares with the events' raw names.
 */
export function plainIdentity(o: Record<string, unknown>): string {
  return identParts(String(o.identity ?? o.object_identity ?? '')).join('.');
}

export class DdlApplier {
  /** The open source transaction added an enum value: commit the target transaction with it (the caller resets it). */
  commitAtTxnEnd = false;
  /** Tables created from the stream's description (schema.table), until their CREATE TABLE AS event. */
  private readonly autoCreated = new Set<string>();
  /** Commit LSN of the transaction whose CREATE TABLE AS event was skipped (see createFromRows). */
  private skippedCtasAt: number | undefined;

  constructor(
    private readonly out: SqlQueue,
    /** Writes every buffered row change (RowWriter): before DDL, everything before it is on the target. */
    private readonly rows: { flushAll(): void },
    private readonly catalog: CatalogView,
    private readonly stats: { skipped: number },
    private readonly opts: DdlOptions,
  ) {}

  /**
   * CREATE TABLE AS and SELECT INTO write their rows before the command ends, and the DDL event is
   * emitted when it ends: in the stream the table's INSERTs come first. A row for a table the
   * target does not have creates it from the row's relation description (the columns and types
   * such a command gives a table; it has no constraints); the command's own event is then skipped.
   * A CREATE TABLE AS that produced no rows has no INSERTs and is replayed as text as before.
   */
  createFromRows(ev: ChangeEvent, info: TableInfo): void {
    if (info.exists) return;
    const name = `${ev.schema}.${ev.table}`;
    this.rows.flushAll();
    this.out.statement(createTableSql(refOf(ev)));
    this.autoCreated.add(name);
    this.catalog.created(name);
    info.exists = true;
    this.catalog.stale = true;
  }

  /** At a source transaction's commit: rows made a table that no DDL of the transaction created. */
  checkCommit(txn: TxnHeader): void {
    if (this.autoCreated.size === 0) return;
    // Not CREATE TABLE AS / SELECT INTO (whose event follows its rows in the same transaction) but
    // something that fires no event (EXPLAIN ANALYZE CREATE TABLE AS) or DDL that was not captured.
    // The table made from the rows' columns lacks whatever else the source's has: stop.
    const tables = [...this.autoCreated].join(', ');
    throw new CdpError(
      ErrorCodes.UNSUPPORTED,
      `rows of ${tables} (transaction xid ${txn.xid}, commit LSN ${formatLsn(txn.commitLsn)}) reach a table no captured DDL created ` +
        `(EXPLAIN ANALYZE CREATE TABLE AS fires no DDL event; or DDL capture was not installed): its definition is unknown. Restore to a point before it`,
      { details: { tables: [...this.autoCreated], xid: txn.xid, commitLsn: formatLsn(txn.commitLsn) } },
    );
  }

  /** One DDL event: everything buffered is written first, then the event's SQL (or nothing). */
  apply(ev: ChangeEvent): void {
    this.rows.flushAll();
    const c = JSON.parse(ev.content ?? '{}') as DdlContent;
    if ((!c.v || c.v < 2) && c.repeatOfPrevious) return this.repeated(c, ev);
    this.skippedCtasAt = undefined;
    // The catalog read before this DDL no longer says which tables exist.
    this.catalog.forgetTables();
    for (const o of c.dropped ?? []) {
      const id = plainIdentity(o);
      this.autoCreated.delete(id);
      this.catalog.dropped(id);
    }
    if (this.autoCreated.size > 0 && (c.tag === 'CREATE TABLE AS' || c.tag === 'SELECT INTO') && this.skipCtas(c, ev)) return;
    for (const o of c.objects ?? []) {
      if (String(o.objectType ?? o.object_type ?? '') !== 'table') continue;
      this.catalog.created(plainIdentity(o));
    }
    if (!c.command || (this.opts.filter && !ddlNeededForTables(c, this.opts.filter.tables))) {
      this.stats.skipped++;
      this.opts.onDdlSkipped?.(ev);
      return;
    }
    this.out.statement(this.sql(c, ev));
    // Until the caller has re-read the catalog, nothing is coalesced (a new unique index?).
    this.catalog.stale = true;
  }

  /** A v1 event that repeats its predecessor's query string: already replayed with it. */
  private repeated(c: DdlContent, ev: ChangeEvent): void {
    if (this.skippedCtasAt !== ev.commitLsn) return;
    // The skipped CREATE TABLE AS shared its query string with further DDL: replaying the text
    // would create the table a second time, skipping it loses the rest.
    throw new CdpError(
      ErrorCodes.UNSUPPORTED,
      `cannot replay the DDL of the transaction at commit LSN ${formatLsn(ev.commitLsn)} (xid ${ev.xid}): one query string held CREATE TABLE AS / SELECT INTO and further DDL (${JSON.stringify(c.command?.slice(0, 200))}); restore to a target before it`,
      { details: { commitLsn: ev.commitLsn, xid: ev.xid } },
    );
  }

  /** CREATE TABLE AS / SELECT INTO of tables made from their rows: skipped; true if it was. */
  private skipCtas(c: DdlContent, ev: ChangeEvent): boolean {
    const made = (c.objects ?? []).map(plainIdentity).filter((id) => this.autoCreated.delete(id));
    // Its rows are already applied, into the table made from their description: running the query
    // again would add them a second time.
    if (made.length === 0) return false;
    this.skippedCtasAt = ev.commitLsn;
    this.stats.skipped++;
    // The table made from the rows belongs to the restore role; on the source it belongs to the
    // role that ran the command.
    const owner = c.v && c.v >= 2 && c.roleVerified ? c.role : undefined;
    if (owner && (!this.opts.roleExists || this.opts.roleExists(owner))) {
      for (const o of c.objects ?? []) {
        if (!made.includes(plainIdentity(o))) continue;
        const parts = identParts(String(o.identity ?? o.object_identity ?? ''));
        this.out.statement(`ALTER TABLE ${parts.map(quoteIdent).join('.')} OWNER TO ${quoteIdent(owner)};\n`);
      }
    }
    return true;
  }

  /** The SQL of one DDL event (ddl-replay.ts), checking the role it must run under. */
  private sql(c: DdlContent, ev: ChangeEvent): string {
    const at = { commitLsn: ev.commitLsn, xid: ev.xid, position: ev.position };
    const plan = planDdl(c, at, this.opts.ddlOverrides);
    if (plan.commitAfterTransaction) this.commitAtTxnEnd = true;
    if (plan.overridden) this.opts.onDdlOverridden?.(ev, plan.statement ?? '');
    if (!c.v || c.v < 2) {
      legacyRole(plan, c, at, this.opts);
      this.opts.onLegacyDdl?.(ev);
    } else if ((plan.statement !== undefined || plan.after !== undefined) && !plan.overridden) {
      checkedRole(plan, c, at, this.opts);
    }
    return ddlReplaySql(plan, this.opts.sessionSql);
  }
}

/**
 * A v1 event (written by an earlier version: no role, the whole query text). Whoever could run DDL
 * on the source wrote that text; replayed as the restore role (a superuser) it would run with more
 * privilege than it had. Only the operator decides: a role to run it as (sets plan.role), or trust.
 */
export function legacyRole(plan: DdlPlan, c: DdlContent, at: DdlAt, opts: Pick<DdlOptions, 'ddlRole' | 'trustLegacyDdl'>): void {
  if ((plan.statement === undefined && plan.after === undefined) || plan.overridden) return;
  if (opts.ddlRole) plan.role = opts.ddlRole;
  else if (!opts.trustLegacyDdl) {
    throw new CdpError(
      ErrorCodes.UNSUPPORTED,
      `the ${c.tag ?? 'DDL'} of transaction xid ${at.xid} (commit LSN ${formatLsn(at.commitLsn)}) was captured by an earlier version of cdp, which recorded neither the role that ran it nor its statements (the whole query text): ` +
        `replayed as the restore role it would run with that role's privileges, whoever wrote it. Choose: --ddl-role ROLE (not a superuser) to replay such DDL as that role, ` +
        `--trust-legacy-ddl to replay it as the restore role (only if every role that could run DDL on the source then is trusted), or supply its SQL with --ddl-override (key ${JSON.stringify(overrideKey(at))})`,
      { details: { legacyDdl: true, xid: at.xid, commitLsn: formatLsn(at.commitLsn) } },
    );
  }
}

/**
 * A v2 event with something to run: the role the source ran it as, unless that cannot be used.
 * --ddl-role stands in only where the source's role cannot be used: it could not be vouched for
 * (the DDL ran inside another role's SECURITY DEFINER function), or the target lacks it.
 */
export function checkedRole(plan: DdlPlan, c: DdlContent, at: DdlAt, opts: Pick<DdlOptions, 'ddlRole' | 'roleExists'>): void {
  const where = `the ${c.tag ?? 'DDL'} of transaction xid ${at.xid} (commit LSN ${formatLsn(at.commitLsn)})`;
  if (plan.role === undefined) {
    if (!opts.ddlRole) {
      throw new CdpError(
        ErrorCodes.UNSUPPORTED,
        `${where} ran inside a SECURITY DEFINER function of a role the session ${JSON.stringify(c.sessionUser ?? '')} may not act as: which role's privileges it had cannot be vouched for, ` +
          `and replaying it as either could give it more. Name the role to replay such DDL as with --ddl-role ROLE (not a superuser), or supply its SQL with --ddl-override (key ${JSON.stringify(overrideKey(at))})`,
        { details: { xid: at.xid, commitLsn: formatLsn(at.commitLsn), sessionUser: c.sessionUser ?? null } },
      );
    }
    plan.role = opts.ddlRole;
  } else if (opts.roleExists && !opts.roleExists(plan.role)) {
    if (!opts.ddlRole) {
      throw new CdpError(
        ErrorCodes.UNSUPPORTED,
        `${where} ran as role ${JSON.stringify(plan.role)} on the source, ` +
          `which does not exist on the target: restore replays DDL with the privileges of the role that ran it, never more. ` +
          `Create the role on the target (CREATE ROLE ${quoteIdent(plan.role)} NOLOGIN) and restore again, or name a role to replay such DDL as with --ddl-role ROLE`,
        { details: { role: plan.role, xid: at.xid, commitLsn: formatLsn(at.commitLsn) } },
      );
    }
    plan.role = opts.ddlRole;
  }
}
