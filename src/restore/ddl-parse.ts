import { loadModule, parseSync } from 'libpg-query';

// The statements of a captured query string, through PostgreSQL's own parser (libpg-query, the
// server's grammar compiled to WebAssembly): splitting, which statements fire ddl_command_end, and
// what a statement's parse tree says about temporary relations and added columns. Pure functions
// of text and parse trees; how an event becomes SQL is ddl-replay.ts (split from it, issue 12 item 5).

let parserReady: Promise<void> | undefined;

/** Loads the parser (WebAssembly) once; call before the first plan. */
export function loadParser(): Promise<void> {
  parserReady ??= loadModule();
  return parserReady;
}

/** Node type name of a parse tree statement ({"CreateStmt": {...}} -> "CreateStmt"). */
export function nodeType(stmt: Record<string, unknown>): string {
  return Object.keys(stmt)[0] ?? '';
}

/**
 * Statements that never fire ddl_command_end (PostgreSQL docs, "Event Trigger Firing Matrix":
 * DML, session and transaction control, shared objects — databases, roles, tablespaces — and the
 * event trigger commands themselves). Every other utility statement fires exactly once.
 */
const NOT_DDL = new Set([
  'InsertStmt',
  'UpdateStmt',
  'DeleteStmt',
  'MergeStmt',
  'VariableSetStmt',
  'VariableShowStmt',
  'TransactionStmt',
  'DoStmt',
  'CallStmt',
  'ExplainStmt',
  'CopyStmt',
  'VacuumStmt',
  'ClusterStmt',
  'CheckPointStmt',
  'LockStmt',
  'ListenStmt',
  'NotifyStmt',
  'UnlistenStmt',
  'DiscardStmt',
  'PrepareStmt',
  'ExecuteStmt',
  'DeallocateStmt',
  'DeclareCursorStmt',
  'FetchStmt',
  'ClosePortalStmt',
  'LoadStmt',
  'ConstraintsSetStmt',
  'CreateRoleStmt',
  'AlterRoleStmt',
  'AlterRoleSetStmt',
  'DropRoleStmt',
  'GrantRoleStmt',
  'CreatedbStmt',
  'AlterDatabaseStmt',
  'AlterDatabaseSetStmt',
  'AlterDatabaseRefreshCollStmt',
  'DropdbStmt',
  'CreateTableSpaceStmt',
  'DropTableSpaceStmt',
  'AlterTableSpaceOptionsStmt',
  'AlterSystemStmt',
  'CreateEventTrigStmt',
  'AlterEventTrigStmt',
  'ReassignOwnedStmt',
  'ReindexStmt',
  'ReturnStmt',
  'PLAssignStmt',
  'CallContext',
]);

export function isRollback(stmt: Record<string, unknown>): boolean {
  const kind = (stmt.TransactionStmt as { kind?: string } | undefined)?.kind;
  return kind === 'TRANS_STMT_ROLLBACK' || kind === 'TRANS_STMT_ROLLBACK_TO' || kind === 'TRANS_STMT_ROLLBACK_PREPARED';
}

/** Object types that live outside the database (docs: event triggers do not fire for them). */
const SHARED_OBJECTS = new Set(['OBJECT_DATABASE', 'OBJECT_ROLE', 'OBJECT_TABLESPACE', 'OBJECT_PARAMETER_ACL']);

export function firesDdlEvent(stmt: Record<string, unknown>, serverVersion: number): boolean {
  const t = nodeType(stmt);
  const body = stmt[t] as Record<string, unknown>;
  // GRANT / COMMENT / RENAME / OWNER / SECURITY LABEL on a database, role or tablespace fire nothing.
  const objType = String(body?.objtype ?? body?.renameType ?? body?.objectType ?? '');
  if (['GrantStmt', 'CommentStmt', 'RenameStmt', 'AlterOwnerStmt', 'SecLabelStmt'].includes(t) && SHARED_OBJECTS.has(objType)) return false;
  if (t === 'SelectStmt') return Boolean((stmt.SelectStmt as { intoClause?: unknown }).intoClause);
  // REINDEX fires ddl_command_end from PostgreSQL 17 on.
  if (t === 'ReindexStmt') return serverVersion >= 170000;
  return !NOT_DDL.has(t);
}

export interface Statement {
  node: Record<string, unknown>;
  text: string;
}

/**
 * With standard_conforming_strings = off, '...' literals take backslash escapes, which the parser
 * (always on) would read differently. For splitting only, the contents of every quoted literal are
 * blanked byte for byte, so that statement boundaries and locations stay those of the real text.
 */
export function blankLiterals(text: Buffer): Buffer {
  const out = Buffer.from(text);
  const n = out.length;
  let i = 0;
  const blank = (from: number, to: number) => {
    for (let k = from; k < to; k++) if (out[k] !== 0x0a) out[k] = 0x78; // 'x', newlines kept
  };
  while (i < n) {
    const ch = out[i]!;
    if (ch === 0x2d && out[i + 1] === 0x2d) {
      while (i < n && out[i] !== 0x0a) i++;
    } else if (ch === 0x2f && out[i + 1] === 0x2a) {
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (out[i] === 0x2f && out[i + 1] === 0x2a) {
          depth++;
          i += 2;
        } else if (out[i] === 0x2a && out[i + 1] === 0x2f) {
          depth--;
          i += 2;
        } else i++;
      }
    } else if (ch === 0x22) {
      i++;
      while (i < n && !(out[i] === 0x22 && out[i + 1] !== 0x22)) i += out[i] === 0x22 ? 2 : 1;
      i++;
    } else if (ch === 0x24 && (i === 0 || !/[A-Za-z0-9_]/.test(String.fromCharCode(out[i - 1]!)))) {
      const m = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(out.subarray(i, i + 64).toString('latin1'));
      if (!m) {
        i++;
        continue;
      }
      const tag = Buffer.from(m[0], 'latin1');
      const end = out.indexOf(tag, i + tag.length);
      i = end < 0 ? n : end + tag.length;
    } else if (ch === 0x27) {
      const start = i + 1;
      i++;
      while (i < n) {
        if (out[i] === 0x5c) i += 2;
        else if (out[i] === 0x27 && out[i + 1] === 0x27) i += 2;
        else if (out[i] === 0x27) break;
        else i++;
      }
      blank(start, Math.min(i, n));
      i++;
    } else i++;
  }
  return out;
}

export function splitStatements(command: string, scsOff: boolean): Statement[] {
  const bytes = Buffer.from(command, 'utf8');
  const forParse = scsOff && command.includes('\\') ? blankLiterals(bytes).toString('utf8') : command;
  const tree = parseSync(forParse) as { stmts?: Array<{ stmt: Record<string, unknown>; stmt_location?: number; stmt_len?: number }> };
  return (tree.stmts ?? []).map((s) => {
    const from = s.stmt_location ?? 0;
    const to = s.stmt_len ? from + s.stmt_len : bytes.length;
    return { node: s.stmt, text: bytes.subarray(from, to).toString('utf8').trim() };
  });
}

/** Relations a parse tree names (RangeVar nodes). */
function rangeVars(node: unknown, out: Array<{ schemaname?: string; relpersistence?: string }> = []): Array<{ schemaname?: string; relpersistence?: string }> {
  if (Array.isArray(node)) for (const x of node) rangeVars(x, out);
  else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === 'RangeVar' && v && typeof v === 'object') out.push(v as { schemaname?: string; relpersistence?: string });
      else if (
        (k === 'relation' || k === 'rel' || k === 'view' || k === 'sequence' || k === 'name') &&
        v &&
        typeof v === 'object' &&
        'relname' in (v as object)
      )
        out.push(v as { schemaname?: string; relpersistence?: string });
      rangeVars(v, out);
    }
  }
  return out;
}

/**
 * 'all': every relation the statement names is temporary (TEMP, or in pg_temp): nothing for
 * restore to do. 'some': temporary and permanent ones mixed (REVOKE ... ON t, pg_temp.x): neither
 * skipping it nor running it is exact. 'none' otherwise.
 */
export function temporaryRelations(node: Record<string, unknown> | undefined): 'all' | 'some' | 'none' {
  if (!node) return 'none';
  const rvs = rangeVars(node);
  const temp = rvs.filter((r) => r.relpersistence === 't' || /^pg_temp(_\d+)?$/.test(r.schemaname ?? ''));
  if (temp.length === 0) return 'none';
  return temp.length === rvs.length ? 'all' : 'some';
}

/** First keyword of a statement, past whitespace and comments. */
export function firstWord(text: string): string {
  const m = /^(?:\s+|--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*([A-Za-z]+)/.exec(text);
  return (m?.[1] ?? '').toUpperCase();
}

/** The inner statement of a nested event, from PL/pgSQL's context: SQL statement "<text>" + frames. */
export function innerStatement(context: string | null | undefined): string | undefined {
  if (!context || !context.startsWith('SQL statement "')) return undefined;
  const rest = context.slice('SQL statement "'.length);
  const m = /"\n(?:PL\/pgSQL function |SQL function |SQL statement ")/.exec(rest);
  if (m) return rest.slice(0, m.index);
  // The only frame: a statement run through SPI by the server itself (REFRESH MATERIALIZED VIEW
  // CONCURRENTLY's diff table).
  if (rest.endsWith('"')) return rest.slice(0, -1);
  return undefined;
}

/** Default expressions that evaluate the same everywhere: a constant, or a constant cast. */
function constantExpr(e: Record<string, unknown> | undefined): boolean {
  if (!e) return true;
  if ('A_Const' in e) return true;
  if ('TypeCast' in e) return constantExpr((e.TypeCast as { arg?: Record<string, unknown> }).arg);
  return false;
}

export interface AddedColumn {
  name: string;
  /** DEFAULT expression is not a constant (now(), a function call...). */
  computedDefault: boolean;
  /** Values per row that a rewrite computes and the stream does not carry: identity, a volatile default. */
  perRow: boolean;
}

export function addedColumns(node: Record<string, unknown> | undefined): AddedColumn[] {
  if (!node || nodeType(node) !== 'AlterTableStmt') return [];
  const out: AddedColumn[] = [];
  for (const c of ((node.AlterTableStmt as { cmds?: unknown[] }).cmds ?? []) as Array<{
    AlterTableCmd?: { subtype?: string; def?: { ColumnDef?: Record<string, unknown> } };
  }>) {
    const def = c.AlterTableCmd?.subtype === 'AT_AddColumn' ? c.AlterTableCmd.def?.ColumnDef : undefined;
    if (!def) continue;
    const cons = ((def.constraints as Array<{ Constraint?: { contype?: string; raw_expr?: Record<string, unknown> } }>) ?? []).map((x) => x.Constraint ?? {});
    const dflt = cons.find((x) => x.contype === 'CONSTR_DEFAULT');
    const identity = cons.some((x) => x.contype === 'CONSTR_IDENTITY');
    const serial = /^(small|big)?serial[248]?$/i.test(
      ((def.typeName as { names?: Array<{ String?: { sval?: string } }> })?.names ?? []).map((n) => n.String?.sval ?? '').at(-1) ?? '',
    );
    out.push({
      name: String(def.colname ?? ''),
      computedDefault: Boolean(dflt && !constantExpr(dflt.raw_expr)),
      perRow: identity || serial || Boolean(dflt && !constantExpr(dflt.raw_expr)),
    });
  }
  return out;
}
