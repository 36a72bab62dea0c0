import type pg from 'pg';
import { CdpError, ErrorCodes } from '../errors.js';
import { SESSION_SETTINGS } from './ddl-replay.js';

// What the live replay needs to know about the target's catalog, read before the replay and again
// after every DDL statement (Applier's afterDdl): which tables and roles exist, which tables'
// changes may be coalesced, and which tables' writes run code a user wrote.

/**
 * Tables whose row writes may run code a user wrote, with their owner. Conservative: a table is
 * written as the restore's superuser only when every expression its writes evaluate uses
 * immutable functions that are PostgreSQL's own or an extension's. Flagged: CHECK constraints,
 * indexes, generated columns, partition keys and exclusion operators calling a function
 * that is outside pg_catalog and no extension's, or not immutable (pg_catalog has functions that
 * run SQL text: query_to_xml); enabled ALWAYS/REPLICA triggers and
 * any rule (both act despite session_replication_role = replica); columns of a domain or
 * composite type, of a range or multirange over one, or arrays of them (a domain's CHECK); and every partition of a flagged
 * partitioned table (inserting into a partition checks its ancestors' keys). Restore writes their
 * rows as the owner (CatalogView.ownerRunner), never as its superuser.
 */
const USER_CODE_TABLES_SQL = `
  WITH RECURSIVE untrusted_fn AS (
    SELECT p.oid FROM pg_catalog.pg_proc p
     WHERE p.provolatile <> 'i'
        OR (p.pronamespace <> 'pg_catalog'::pg_catalog.regnamespace
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND e.objid = p.oid AND e.deptype = 'e'))
  ), expr AS (
    -- Stored expression trees name every function they call (FuncExpr :funcid, OpExpr
    -- :opfuncid); pg_depend does not record PostgreSQL's own (pinned) functions, so it cannot say.
    SELECT con.conrelid AS rel, con.conbin::pg_catalog.text AS t FROM pg_catalog.pg_constraint con WHERE con.conrelid <> 0 AND con.conbin IS NOT NULL
    UNION ALL SELECT i.indrelid, i.indexprs::pg_catalog.text FROM pg_catalog.pg_index i WHERE i.indexprs IS NOT NULL
    UNION ALL SELECT i.indrelid, i.indpred::pg_catalog.text FROM pg_catalog.pg_index i WHERE i.indpred IS NOT NULL
    -- Generated columns only: restore writes every column, so a plain DEFAULT is never evaluated.
    UNION ALL SELECT d.adrelid, d.adbin::pg_catalog.text FROM pg_catalog.pg_attrdef d
      JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE a.attgenerated <> ''
    UNION ALL SELECT pt.partrelid, pt.partexprs::pg_catalog.text FROM pg_catalog.pg_partitioned_table pt WHERE pt.partexprs IS NOT NULL
  ), called AS (
    SELECT e.rel, m[1]::pg_catalog.oid AS fn FROM expr e, pg_catalog.regexp_matches(e.t, ':(?:op)?funcid (\\d+)', 'g') AS m
    UNION ALL
    SELECT con.conrelid, o.oprcode::pg_catalog.oid FROM pg_catalog.pg_constraint con, pg_catalog.unnest(con.conexclop) AS x(op)
      JOIN pg_catalog.pg_operator o ON o.oid = x.op WHERE con.conexclop IS NOT NULL
  ), direct AS (
    SELECT c.oid FROM pg_catalog.pg_class c
     WHERE c.relkind IN ('r', 'p')
       AND (EXISTS (SELECT 1 FROM called k WHERE k.rel = c.oid AND k.fn IN (SELECT oid FROM untrusted_fn))
         OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND t.tgenabled IN ('A', 'R'))
         OR EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN')
         OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
                     LEFT JOIN pg_catalog.pg_type el ON el.oid = ty.typelem AND ty.typlen = -1
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                       AND (ty.typtype IN ('d', 'c') OR el.typtype IN ('d', 'c')
                         -- A range or multirange (or an array of one) over a domain or composite:
                         -- reading its value reads the subtype's, the domain's CHECK included.
                         OR EXISTS (SELECT 1 FROM pg_catalog.pg_range rg JOIN pg_catalog.pg_type st ON st.oid = rg.rngsubtype
                                     WHERE st.typtype IN ('d', 'c') AND (rg.rngtypid IN (ty.oid, el.oid) OR rg.rngmultitypid IN (ty.oid, el.oid))))))
  ), flagged AS (
    SELECT oid FROM direct
    UNION
    SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN flagged f ON f.oid = i.inhparent
  )
  SELECT pg_catalog.format('%s.%s', n.nspname, c.relname) AS name, pg_catalog.pg_get_userbyid(c.relowner) AS owner
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid IN (SELECT oid FROM flagged) AND n.nspname NOT IN ('pg_catalog', 'information_schema')`;

/**
 * Deferrable triggers that fire during replay (a user's, enabled ALWAYS or REPLICA). A deferred
 * trigger runs at COMMIT as the role current then (PostgreSQL 15, checked): the restore's
 * superuser, not the table's owner as which restore wrote the row (CatalogView.ownerRunner). No
 * function is exempt: a SECURITY DEFINER one, or one a superuser owns, may itself write a table
 * whose trigger is a user's, or create such a trigger and fire it in the same COMMIT. Restore
 * stops rather than run a source user's code with more privilege than it had on the source:
 * when the catalog is read (before the replay, after each DDL statement) and, because user code
 * run during the replay may create one, in the same transaction just before every COMMIT
 * (DEFERRED_TRIGGER_GUARD_SQL). Dropping a trigger with a pending event drops the event, and
 * PostgreSQL refuses to ALTER a table with pending trigger events, so what the guard sees is what
 * would fire.
 */
/** A user's deferrable triggers, with their table (deferrable: only constraint triggers can be). */
const DEFERRABLE_TRIGGERS = `
    FROM pg_catalog.pg_trigger t
    JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace`;
const DEFERRED_USER_TRIGGERS = `${DEFERRABLE_TRIGGERS}
   WHERE t.tgdeferrable AND NOT t.tgisinternal AND t.tgenabled IN ('A', 'R')`;

/**
 * The guard's condition: as DEFERRED_USER_TRIGGERS, or any deferrable trigger of a user whose row
 * this transaction changed. An event queued while a trigger was enabled ALWAYS still fires at
 * COMMIT after the trigger is set back to origin, and PostgreSQL checks pending events only on the
 * table an ALTER TABLE names, not on the partitions it recurses into (a review helper's bypass).
 * "This transaction": the row's xmin is at most 2^31 transaction IDs after this transaction's own
 * (its subtransactions' come after it); a change another session committed since is counted too,
 * which stops the restore (nobody else should change the target's triggers meanwhile) but never
 * lets one through.
 */
const DEFERRED_OR_CHANGED_TRIGGERS = `${DEFERRABLE_TRIGGERS},
    LATERAL (SELECT (pg_catalog.pg_current_xact_id()::xid)::text::bigint AS top, t.xmin::text::bigint AS x) v
   WHERE t.tgdeferrable AND NOT t.tgisinternal
     AND (t.tgenabled IN ('A', 'R') OR (v.x >= 3 AND (v.x - v.top + 4294967296) % 4294967296 < 2147483648))`;
const DEFERRED_USER_TRIGGERS_SQL = `
  SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS tbl, pg_catalog.quote_ident(t.tgname) AS trigger ${DEFERRED_USER_TRIGGERS}
   ORDER BY 1, 2`;

/** What to do about such a trigger, in the catalog's refusal (the guard's text, SQL, says it its own way). */
function deferredTriggerAdvice(tbl: string, trigger: string): string {
  return (
    `a deferred trigger runs at COMMIT as the restore's superuser, not as the table's owner, so restore stops rather than run it with more privilege than on the source. ` +
    `To go on, make it fire on origin only in the target (ALTER TABLE ${tbl} ENABLE TRIGGER ${trigger}: replay then skips it, as every ordinary trigger) and run the same command again; ` +
    `if a DDL statement of the stream creates it, rewrite that statement with --ddl-override`
  );
}

/** The restore stops before a deferred trigger could run a user's code as its superuser (DEFERRED_USER_TRIGGERS_SQL). */
function refuseDeferredTriggers(rows: Array<{ tbl: string; trigger: string }>): void {
  const t = rows[0];
  if (!t) return;
  throw new CdpError(
    ErrorCodes.UNSUPPORTED,
    `the target's table ${t.tbl} has the deferrable trigger ${t.trigger}, which fires during replay (ENABLE ALWAYS or REPLICA)` +
      `${rows.length > 1 ? ` (and ${rows.length - 1} more such trigger(s))` : ''}: ${deferredTriggerAdvice(t.tbl, t.trigger)}`,
    { details: { table: t.tbl, trigger: t.trigger } },
  );
}

/**
 * Sent just before every COMMIT of the live replay, in the same transaction: fails it (so the
 * group never commits and the restore stops) if user code run during the group made a deferrable
 * trigger that fires during replay (the catalog read refuses those that exist before).
 */
export const DEFERRED_TRIGGER_GUARD_SQL =
  `DO $cdp_guard$ DECLARE r record; BEGIN ` +
  `SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS tbl, pg_catalog.quote_ident(t.tgname) AS trg INTO r ${DEFERRED_OR_CHANGED_TRIGGERS.trim().replace(/\s+/g, ' ')} LIMIT 1; ` +
  `IF FOUND THEN RAISE EXCEPTION 'restore stopped before COMMIT: the table % has the deferrable trigger %, which fires during replay (ENABLE ALWAYS or REPLICA) or was changed in this group, ` +
  `made by user code the replay ran in this group (an ALWAYS or REPLICA trigger, a CHECK, a replayed DDL statement); the group is rolled back. ` +
  `A deferred trigger runs at COMMIT as the restore''s superuser, not as the table''s owner. To go on, make the code that creates it fire on origin only in the target ` +
  `(ALTER TABLE ... ENABLE TRIGGER ...) or rewrite the DDL statement with --ddl-override, and run the same command again', r.tbl, r.trg ` +
  `USING ERRCODE = 'feature_not_supported'; END IF; END $cdp_guard$;\n`;

/**
 * The live restore session's settings (also put back after every DDL statement). Beyond
 * SESSION_SETTINGS: synchronous_commit off (a crash of the target loses whole recent groups
 * together with their cursor update, so the resume stays exact); no hash or merge joins: batched
 * UPDATE ... FROM (VALUES ...) / DELETE ... USING (VALUES ...) join at most batchMaxRows rows against
 * the table, and without statistics (a freshly restored table has none) the planner would pick a
 * hash join over a sequential scan of the whole table for each batch.
 */
export const LIVE_SESSION_SQL = `${SESSION_SETTINGS} SET synchronous_commit = off; SET enable_hashjoin = off; SET enable_mergejoin = off;`;

/**
 * Enums, domains, ranges and multiranges whose array elements are delimited by ',' (a domain has
 * its base type's delimiter: over PostGIS geometry it is ':'), that are neither arrays nor
 * composites (a domain has its base type's category: over an array 'A', over a composite 'C';
 * unnest in FROM would nest the one and split the other into its fields) and have an array type:
 * their typed array literal is read element by element by their own input function. Named as
 * capture names them (catalog-read.ts): quoted, schema-qualified unless in pg_catalog.
 */
const ARRAY_TYPES_SQL = `
  SELECT CASE WHEN n.nspname = 'pg_catalog' THEN '' ELSE pg_catalog.quote_ident(n.nspname) || '.' END || pg_catalog.quote_ident(t.typname) AS name
    FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
   WHERE t.typtype IN ('e', 'd', 'r', 'm') AND t.typdelim = ',' AND t.typcategory NOT IN ('A', 'C')
     AND EXISTS (SELECT 1 FROM pg_catalog.pg_type a WHERE a.oid = t.typarray AND a.typelem = t.oid)`;

export class TargetCatalog {
  /** Tables whose changes may not be coalesced inside a target transaction (see reorderable). */
  private noReorder = new Set<string>();
  private tables = new Set<string>();
  private roles = new Set<string>();
  private userCode = new Map<string, string>();
  /** Plain tables with inheritance children, as schema NUL table (no name holds a NUL). */
  private parents = new Set<string>();
  /** ARRAY_TYPES_SQL: the target's enums, domains, ranges and multiranges that take a typed array literal. */
  private arrayTypes = new Set<string>();

  constructor(private readonly client: pg.Client) {}

  async read(): Promise<void> {
    const client = this.client;
    this.roles = new Set((await client.query<{ rolname: string }>('SELECT rolname FROM pg_catalog.pg_roles')).rows.map((x) => x.rolname));
    const t = await client.query<{ name: string }>(
      `SELECT n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_temp%'`,
    );
    this.tables = new Set(t.rows.map((x) => x.name));
    const r = await client.query<{ name: string }>(
      `SELECT DISTINCT n.nspname || '.' || c.relname AS name
         FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE i.indisexclusion
           OR (i.indisunique AND NOT (CASE c.relreplident WHEN 'i' THEN i.indisreplident ELSE i.indisprimary END))
           OR c.relreplident IN ('f', 'n')`,
    );
    this.noReorder = new Set(r.rows.map((x) => x.name));
    const u = await client.query<{ name: string; owner: string }>(USER_CODE_TABLES_SQL);
    this.userCode = new Map(u.rows.map((x) => [x.name, x.owner]));
    // relhassubclass may stay true after the last child is gone: ONLY is then merely redundant.
    const p = await client.query<{ schema: string; table: string }>(
      `SELECT n.nspname::text AS schema, c.relname::text AS table FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND c.relhassubclass`,
    );
    this.parents = new Set(p.rows.map((x) => `${x.schema}\u0000${x.table}`));
    this.arrayTypes = new Set((await client.query<{ name: string }>(ARRAY_TYPES_SQL)).rows.map((x) => x.name));
    refuseDeferredTriggers((await client.query<{ tbl: string; trigger: string }>(DEFERRED_USER_TRIGGERS_SQL)).rows);
  }

  /**
   * Tables whose changes may be coalesced inside a target transaction: all but those with a unique
   * index other than the replica identity, or an exclusion constraint (see RowWriter.netRow).
   */
  reorderable(schema: string, table: string): boolean {
    return !this.noReorder.has(`${schema}.${table}`);
  }

  /**
   * A plain table with inheritance children: the stream reports each child's rows under the child,
   * so a change of the parent's row must not reach a child's row of the same key (UPDATE and
   * DELETE without ONLY do). A partitioned table is not one: it holds no rows of its own, and
   * ONLY would make its UPDATE and DELETE change nothing.
   */
  inheritanceParent(schema: string, table: string): boolean {
    return this.parents.has(`${schema}\u0000${table}`);
  }

  /**
   * Whether a column type (as the stream names it) is an enum, domain, range or multirange of the
   * target whose typed array literal reads back value by value (sql.ts commaArrayType covers the
   * built-in scalar types): its values may travel in one '{..}'::type[] literal.
   */
  arrayType(type: string): boolean {
    return this.arrayTypes.has(type);
  }

  tableExists(schema: string, table: string): boolean {
    return this.tables.has(`${schema}.${table}`);
  }

  roleExists(role: string): boolean {
    return this.roles.has(role);
  }

  /** The owner of a table whose row writes run user-written code (USER_CODE_TABLES_SQL), else undefined. */
  runAsOwner(schema: string, table: string): string | undefined {
    return this.userCode.get(`${schema}.${table}`);
  }
}
