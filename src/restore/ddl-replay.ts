import { CdpError, ErrorCodes } from '../errors.js';
import type { DdlContent } from '../format/ddl.js';
import { formatLsn } from '../util/lsn.js';
import {
  addedColumns,
  type AddedColumn,
  firesDdlEvent,
  firstWord,
  innerStatement,
  isRollback,
  nodeType,
  splitStatements,
  temporaryRelations,
  type Statement,
} from './ddl-parse.js';
import { quoteIdent, quoteLiteral } from './sql.js';

// How one captured DDL event becomes SQL on the target (DESIGN.md, "DDL replay").
//
// The event trigger (src/capture/ddl-capture.sql) records the client's whole query string, the
// ordinal of the event among the top-level DDL events of that query, the role and the session
// settings. Restore runs exactly one statement per event:
// - top-level: the query string is split by PostgreSQL's own parser (libpg-query, the server's
//   grammar compiled to WebAssembly); the event's statement is the seq-th statement that fires
//   ddl_command_end. DML in the same string (seed rows, backfills) is not run again: its effects
//   are in the stream as rows. A parse failure stops the restore with the text shown.
// - nested (DDL run by a DO block, function or procedure): the inner statement PL/pgSQL reports
//   in its error context ("SQL statement \"...\""), never the whole block.
// - commands of an extension script: skipped, CREATE / ALTER EXTENSION replays them.
// It runs as the role that ran it on the source, through a SECURITY DEFINER function owned by that
// role (pg_temp.cdp_as, made for each call): code the statement runs (a CHECK calling a user function, a USING
// expression) cannot RESET ROLE or SET SESSION AUTHORIZATION back to the restore's superuser
// inside a security-definer function, as it could after a plain SET ROLE. It runs with the session
// settings that change how DDL text parses or evaluates, and travels as base64 inside a DO block,
// so that no text from the stream can end a quote, smuggle a psql meta-command into the --sql
// file, or be read under other settings than the ones it was written under. Afterwards the
// restore session's own settings are put back whole (RESET ALL + its own SETs): replayed code may
// have changed any user-settable one (client_encoding would garble every later value).

export { blankLiterals, innerStatement, loadParser, splitStatements } from './ddl-parse.js';

/** DDL content: described in the format module (src/format/ddl.ts), with the other payloads. */
export type { DdlContent };

/** Where the event sits in the stream, for error messages and --ddl-override keys. */
export interface DdlAt {
  commitLsn: number;
  xid: number;
  position: number;
}

export interface DdlPlan {
  /** The statement to run; undefined = nothing to run (an extension script's command). */
  statement?: string;
  /** Role to run it as; undefined = the restore role (v1 events, --ddl-override SQL). */
  role?: string;
  settings: Record<string, string>;
  searchPath?: string;
  /** SQL run right after the statement, under the same role and settings. */
  after?: string;
  /** The target transaction must commit at the end of this source transaction (ALTER TYPE ... ADD VALUE). */
  commitAfterTransaction: boolean;
  /** From --ddl-override. */
  overridden: boolean;
}

/**
 * The restore session's own settings, set at its start and again after every DDL statement (after
 * RESET ALL). pg_temp last in the search_path: a temporary type cannot shadow a catalog type in
 * the restore's own SQL (types and tables are looked up in pg_temp first unless it is listed).
 */
export const SESSION_SETTINGS =
  `SET client_encoding = 'UTF8'; SET standard_conforming_strings = on; SET session_replication_role = replica; ` +
  `SET search_path = pg_catalog, pg_temp; SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; ` +
  `SET default_transaction_read_only = off;`;

/** --ddl-override key: commit LSN and position (an xid alone repeats after wraparound). */
export function overrideKey(at: DdlAt): string {
  return `${formatLsn(at.commitLsn)}#${at.position}`;
}

function unsupported(at: DdlAt, c: DdlContent, why: string): CdpError {
  const key = overrideKey(at);
  return new CdpError(
    ErrorCodes.UNSUPPORTED,
    `cannot replay the ${c.tag ?? 'DDL'} of transaction xid ${at.xid} (commit LSN ${formatLsn(at.commitLsn)}, position ${at.position}) exactly: ${why}. ` +
      `Restore to a point before it, or supply the SQL to run in its place with --ddl-override FILE ` +
      `(JSON: {"${key}": "<SQL>"}; "" runs nothing; the SQL runs as the restore role)`,
    {
      details: {
        xid: at.xid,
        commitLsn: formatLsn(at.commitLsn),
        position: at.position,
        tag: c.tag ?? null,
        overrideKey: key,
        command: c.command?.slice(0, 500) ?? null,
      },
    },
  );
}

/** Every object the event names is temporary (it vanished with its session; the stream holds none of its rows). */
function onlyTemporary(c: DdlContent): boolean {
  const objs = [...(c.objects ?? []), ...(c.dropped ?? [])];
  if (objs.length === 0) return false;
  return objs.every((o) => o.temporary === true || /^pg_temp(_\d+)?$/.test(String(o.schema ?? '')) || /^pg_temp(_\d+)?\./.test(String(o.identity ?? '')));
}

/** Strips CONCURRENTLY from the forms that cannot run in a transaction block; the plain form has the same result. */
function withoutConcurrently(node: Record<string, unknown>, text: string): string {
  const t = nodeType(node);
  const body = node[t] as Record<string, unknown>;
  const concurrentDetach =
    t === 'AlterTableStmt' &&
    ((body.cmds as Array<{ AlterTableCmd?: { subtype?: string; def?: { PartitionCmd?: { concurrent?: boolean } } } }>) ?? []).some(
      (c) => c.AlterTableCmd?.subtype === 'AT_DetachPartition' && c.AlterTableCmd.def?.PartitionCmd?.concurrent,
    );
  if (concurrentDetach) {
    const at = text.toUpperCase().lastIndexOf('CONCURRENTLY');
    const plain = at < 0 ? text : text.slice(0, at) + text.slice(at + 'CONCURRENTLY'.length);
    // DETACH ... CONCURRENTLY also gives the partition a CHECK constraint equal to its partition
    // bound (unless one already implies it); the plain form does not. Both, in one block.
    const cmd = (
      (body.cmds as Array<{ AlterTableCmd?: { subtype?: string; def?: { PartitionCmd?: { name?: { schemaname?: string; relname?: string } } } } }>) ?? []
    ).find((c) => c.AlterTableCmd?.subtype === 'AT_DetachPartition');
    const rv = cmd?.AlterTableCmd?.def?.PartitionCmd?.name;
    if (!rv?.relname) return plain;
    const part = rv.schemaname ? `${quoteIdent(rv.schemaname)}.${quoteIdent(rv.relname)}` : quoteIdent(rv.relname);
    return (
      `DO $cdp_detach$ DECLARE part pg_catalog.regclass := ${encodedText(part)}::pg_catalog.regclass; def pg_catalog.text; BEGIN\n` +
      `  def := pg_catalog.pg_get_partition_constraintdef(part);\n` +
      `  EXECUTE ${encodedText(plain)};\n` +
      `  IF def IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conrelid = part AND c.contype = 'c'\n` +
      `      AND pg_catalog.pg_get_constraintdef(c.oid) = 'CHECK (' || def || ')') THEN\n` +
      `    EXECUTE pg_catalog.format('ALTER TABLE %s ADD CHECK (%s)', part, def);\n` +
      `  END IF;\nEND $cdp_detach$`
    );
  }
  if ((t === 'IndexStmt' || t === 'DropStmt') && body.concurrent) return text.replace(/\bCONCURRENTLY\b/i, '');
  return text;
}

function isEnumAddValue(node: Record<string, unknown> | undefined, c: DdlContent): boolean {
  if (node) return nodeType(node) === 'AlterEnumStmt' && !(node.AlterEnumStmt as { oldVal?: string }).oldVal;
  return c.tag === 'ALTER TYPE' && /\bADD\s+VALUE\b/i.test(c.command ?? '');
}

/** SQL that gives the rows existing before ADD COLUMN the value the source gave them (pg_attribute.attmissingval). */
function missingValuesSql(rows: Array<{ table: string; column: string; value: string }>): string {
  const payload = Buffer.from(JSON.stringify(rows), 'utf8').toString('base64');
  return (
    `DO $cdp_missing$ DECLARE r record; t text; BEGIN\n` +
    `  FOR r IN SELECT * FROM pg_catalog.jsonb_to_recordset(pg_catalog.convert_from(pg_catalog.decode('${payload}', 'base64'), 'UTF8')::jsonb) AS x("table" text, "column" text, value text) LOOP\n` +
    `    SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) INTO t FROM pg_catalog.pg_attribute a WHERE a.attrelid = r."table"::pg_catalog.regclass AND a.attname = r."column";\n` +
    `    EXECUTE pg_catalog.format('UPDATE %s SET %I = (%L::%s[])[1]', r."table"::pg_catalog.regclass, r."column", r.value, t);\n` +
    `  END LOOP;\nEND $cdp_missing$;\n`
  );
}

/** A nested event's statement: the inner statement PL/pgSQL reports in its error context. */
function nestedStatement(c: DdlContent, at: DdlAt, settings: Record<string, string>): Statement {
  const inner = innerStatement(c.context);
  if (inner === undefined)
    throw unsupported(at, c, `it ran inside a function whose statement text PostgreSQL does not report (${(c.context ?? '').split('\n')[0]})`);
  let stmts: Statement[];
  try {
    stmts = splitStatements(inner, settings.standard_conforming_strings === 'off');
  } catch (err) {
    throw unsupported(at, c, `its statement does not parse (${(err as Error).message}): ${JSON.stringify(inner.slice(0, 300))}`);
  }
  if (stmts.length !== 1) throw unsupported(at, c, `its context holds ${stmts.length} statements: ${JSON.stringify(inner.slice(0, 300))}`);
  return stmts[0]!;
}

/** A top-level event's statement: the seq-th statement of the query string that fires ddl_command_end. */
function topLevelStatement(c: DdlContent, at: DdlAt, settings: Record<string, string>): Statement {
  let stmts: Statement[];
  try {
    stmts = splitStatements(c.command, settings.standard_conforming_strings === 'off');
  } catch (err) {
    throw unsupported(
      at,
      c,
      `the query string does not parse with the PostgreSQL parser (${(err as Error).message}): ${JSON.stringify(c.command.slice(0, 300))}`,
    );
  }
  // A DDL statement rolled back (ROLLBACK, ROLLBACK TO SAVEPOINT) left no event, so the events
  // of the statements after it cannot be told apart by their ordinal.
  if (stmts.some((x) => isRollback(x.node)) && stmts.filter((x) => firesDdlEvent(x.node, c.serverVersion ?? 150000)).length > 1) {
    throw unsupported(
      at,
      c,
      `its query string rolls back part of its work (ROLLBACK / ROLLBACK TO SAVEPOINT) between DDL statements, so which statement this event is cannot be told: ${JSON.stringify(c.command.slice(0, 300))}`,
    );
  }
  const ddl = stmts.filter((s) => firesDdlEvent(s.node, c.serverVersion ?? 150000));
  const seq = c.seq ?? 0;
  const s = ddl[seq - 1];
  if (!s)
    throw unsupported(at, c, `the query string holds ${ddl.length} DDL statement(s), the event is number ${seq}: ${JSON.stringify(c.command.slice(0, 300))}`);
  return s;
}

/** Refuses a rewrite that gave rows values the stream does not carry. */
function refuseRewrites(c: DdlContent, at: DdlAt, added: AddedColumn[]): void {
  for (const r of c.rewrites ?? []) {
    // Rows the rewrite gave new values the stream does not carry (identity, serial, a volatile
    // DEFAULT): the target's rewrite would compute others (its own heap order, its own clock).
    // Reason bit 2 = AT_REWRITE_DEFAULT_VAL (src/include/commands/event_trigger.h).
    if ((Number(r.reason) & 2) !== 0 && r.hadRows && (c.nested || added.length === 0 || added.some((a) => a.perRow))) {
      throw unsupported(
        at,
        c,
        `it rewrote ${r.table ?? 'a table'} holding rows with values computed per row (identity, serial or a volatile DEFAULT) that the stream does not carry`,
      );
    }
  }
}

/**
 * The plan for one DDL event, or an UNSUPPORTED error saying why it cannot be replayed exactly and
 * how to go on. `overrides` (from --ddl-override) replace an event's SQL by the operator's.
 */
export function planDdl(c: DdlContent, at: DdlAt, overrides?: Map<string, string>): DdlPlan {
  const settings = c.settings ?? {};
  const override = overrides?.get(overrideKey(at));
  if (override !== undefined) {
    // The operator's SQL, run as the restore role (it is not data from the stream).
    // The operator's SQL, in the restore session's own settings: not the captured ones, which the
    // source's user chose (a search_path could redirect the operator's operators and functions).
    return { statement: override.trim() === '' ? undefined : override, settings: {}, commitAfterTransaction: isEnumAddValue(undefined, c), overridden: true };
  }
  if (!c.v || c.v < 2) {
    // Written by a version before statement-level capture: the whole query text, as then.
    return { statement: c.command, settings: {}, searchPath: c.searchPath, commitAfterTransaction: isEnumAddValue(undefined, c), overridden: false };
  }
  if (c.inExtension || onlyTemporary(c)) return { settings, commitAfterTransaction: false, overridden: false };
  // A role that could not be vouched for (the DDL ran inside another role's SECURITY DEFINER
  // function): neither that role nor the login may be right; ddl-apply.ts stops unless --ddl-role.
  const role = c.roleVerified ? c.role : undefined;
  const { node, text } = c.nested ? nestedStatement(c, at, settings) : topLevelStatement(c, at, settings);
  const temp = temporaryRelations(node);
  if (temp === 'all') return { settings, commitAfterTransaction: false, overridden: false };
  if (temp === 'some') throw unsupported(at, c, `it names temporary and permanent relations together: ${JSON.stringify(text.slice(0, 300))}`);
  const tagWord = (c.tag ?? '').split(' ')[0]!.toUpperCase();
  const word = firstWord(text);
  if (tagWord && word !== tagWord && !(tagWord === 'SELECT' && (word === 'WITH' || word === ''))) {
    throw unsupported(at, c, `the statement found for it (${JSON.stringify(text.slice(0, 200))}) is not a ${c.tag}`);
  }
  const added = addedColumns(node);
  refuseRewrites(c, at, added);
  let after: string | undefined;
  const computed = new Set(added.filter((a) => a.computedDefault).map((a) => a.name));
  const missing = (c.missing ?? []).filter((m) => computed.has(m.column));
  if (missing.length > 0) after = missingValuesSql(missing);
  return {
    statement: withoutConcurrently(node, text),
    role,
    settings,
    searchPath: c.searchPath,
    after,
    commitAfterTransaction: isEnumAddValue(node, c),
    overridden: false,
  };
}

/** SQL text that came from the stream, as an expression that never places it in the SQL itself. */
export function encodedText(sql: string): string {
  return `pg_catalog.convert_from(pg_catalog.decode('${Buffer.from(sql, 'utf8').toString('base64')}', 'base64'), 'UTF8')`;
}

const SETTING_NAME = /^[A-Za-z_][A-Za-z0-9_.]*$/;

/**
 * The SECURITY DEFINER function that runs SQL as a role. Created again (by the restore's
 * superuser) right before every call and gone right after it (DISCARD TEMP): the role owns it,
 * so its own code could otherwise replace it with an invoker's-rights one that a later call would
 * run as the superuser; and whatever that code left in pg_temp (a type shadowing a catalog one)
 * goes too. `expr` is an SQL expression yielding the statement text (see encodedText).
 */
export function runAsSql(role: string, expr: string): string {
  const name = 'pg_temp.cdp_as';
  return (
    `CREATE OR REPLACE FUNCTION ${name}(q pg_catalog.text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $cdp_fn$BEGIN EXECUTE q; END$cdp_fn$;\n` +
    `ALTER FUNCTION ${name}(pg_catalog.text) OWNER TO ${quoteIdent(role)};\n` +
    `DO $cdp_run$ BEGIN PERFORM ${name}(${expr}); END $cdp_run$;\n` +
    // A cursor WITH HOLD the code left open would be filled in at COMMIT, as the superuser: closed
    // here, before it ran anything.
    `CLOSE ALL;\n` +
    `DISCARD TEMP;\n`
  );
}

/**
 * The SQL for a plan: the captured settings, the statement run as its role, then the restore
 * session's own settings again (`sessionSql`, after RESET ALL).
 */
export function ddlReplaySql(plan: DdlPlan, sessionSql: string = SESSION_SETTINGS): string {
  if (plan.statement === undefined && plan.after === undefined) return '';
  const set: string[] = [];
  for (const [name, value] of Object.entries(plan.settings)) {
    if (!SETTING_NAME.test(name)) continue;
    // Values come from the stream: base64, never SQL text (a schema name holding "$cdp_set$\\! cmd"
    // would otherwise end the dollar quote in the --sql file and hand psql a shell command).
    set.push(`pg_catalog.set_config(${quoteLiteral(name)}, ${encodedText(value)}, false)`);
  }
  // pg_temp listed last: otherwise it is searched first for types and tables, and code the replay
  // ran could have left a pg_temp type there shadowing the one the statement names.
  if (plan.searchPath && !plan.overridden) set.push(`pg_catalog.set_config('search_path', ${encodedText(plan.searchPath)} || ', pg_temp', false)`);
  // The restore session's own literals assume standard_conforming_strings = on: set it last (each
  // query string is parsed before any of it runs, so this is belt and braces).
  const scs = set.findIndex((x) => x.includes("'standard_conforming_strings'"));
  if (scs >= 0) set.push(...set.splice(scs, 1));
  let sql = '';
  const role = plan.role && !plan.overridden ? plan.role : undefined;
  // In a DO block so that psql prints nothing for it; the settings live for the session until reset.
  if (set.length > 0) sql += `DO $cdp_set$ BEGIN PERFORM ${set.join(', ')}; END $cdp_set$;\n`;
  const run = (text: string) => (role ? runAsSql(role, encodedText(text)) : `DO $cdp_ddl$ BEGIN EXECUTE ${encodedText(text)}; END $cdp_ddl$;\n`);
  if (plan.statement !== undefined) sql += run(plan.statement);
  if (plan.after) sql += run(plan.after);
  sql += `RESET ALL; ${sessionSql}\n`;
  return sql;
}
