import type { RelationInfo } from '../format/change-event.js';
import { quoteIdent } from '../pg/quote.js';

// SQL text for replay. Values travel as PostgreSQL text output (DESIGN.md section 3), so every value
// becomes a string literal cast to its column type ('42'::integer): the type's input function reads
// back exactly what its output function wrote, for every type (numeric, arrays, ranges, enums,
// domains, user types). Literals and identifiers are always quoted; the session and the --sql file
// both set standard_conforming_strings = on, so a backslash in a literal is an ordinary character
// (PostgreSQL docs 4.1.2.1 "String Constants").

export { quoteIdent };

/** A lookup table of the ASCII characters whose presence sends a value down an escaping slow path. */
function charSet(...chars: string[]): Uint8Array {
  const t = new Uint8Array(128);
  for (const c of chars) t[c.charCodeAt(0)] = 1;
  return t;
}

/** Whether `v` holds any character of `set` (all ASCII): a scan is cheaper than a RegExp per value. */
function holdsAny(v: string, set: Uint8Array): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 128 && set[c] === 1) return true;
  }
  return false;
}

const LITERAL_SPECIAL = charSet("'", '\u0000');

/** `value` as the inside of a standard string literal: quotes doubled, NUL refused. */
function literalBody(value: string): string {
  if (!holdsAny(value, LITERAL_SPECIAL)) return value;
  if (value.includes('\u0000')) throw new Error('a text value cannot contain NUL');
  return value.replace(/'/g, "''");
}

export function quoteLiteral(value: string): string {
  return `'${literalBody(value)}'`;
}

export function qualify(schema: string, table: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(table)}`;
}

/** A value as a typed SQL expression. `type` is format_type() output, valid SQL type syntax. */
export function typed(value: string | null, type: string): string {
  return value === null ? `NULL::${type}` : `${quoteLiteral(value)}::${type}`;
}

/**
 * Types without a default btree/hash equality operator: rows of REPLICA IDENTITY FULL tables are
 * matched on their text output for these columns instead (output is deterministic for one type).
 */
const NO_EQUALITY = new Set(['json', 'xml', 'point', 'line', 'lseg', 'box', 'path', 'polygon', 'circle', 'json[]', 'xml[]', 'point[]']);

export function hasEquality(type: string): boolean {
  return !NO_EQUALITY.has(type);
}

/**
 * One column of a REPLICA IDENTITY FULL match: the same value, not merely an equal one. A type's
 * `=` can hold between distinguishable values (float -0 = 0, numeric 1.0 = 1.00, citext, jsonb
 * key order in json): changing the first `=` match could change the wrong one of two such rows.
 * So the row's text output must equal the captured value's, read back through the type's input and
 * written by its output function in this same session (no dependence on the session's DateStyle or
 * extra_float_digits); `=` is kept first where the type has one, so an index can narrow the scan.
 */
function matchFull(alias: string, col: string, value: string | null, type: string): string {
  const c = `${alias}${quoteIdent(col)}`;
  if (value === null) return `${c} IS NULL`;
  const v = typed(value, type);
  // The text output through format's %s (the type's output function), not a ::text cast: a cast
  // to text may be a function the type's owner wrote (CREATE CAST), run here as the superuser.
  // format gives '' for NULL (an xml '' would match a NULL row): the column must not be NULL. Its
  // right side in a scalar subquery, computed once (format is not immutable, so not folded).
  const same = `${c} IS NOT NULL AND pg_catalog.format('%s', ${c}) = (SELECT pg_catalog.format('%s', ${v}))`;
  return hasEquality(type) ? `${c} = ${v} AND ${same}` : same;
}

export interface TableRef {
  schema: string;
  table: string;
  relation: RelationInfo;
  /**
   * The target's table has inheritance children (a plain table, not a partitioned one): its
   * UPDATE and DELETE name it ONLY, or they would change a child's rows of the same key too.
   */
  only?: boolean;
  /**
   * Types beyond commaArrayType's built-in ones whose values may travel in a typed array literal:
   * the target's enums, domains, ranges and multiranges with ',' as their array delimiter
   * (TargetCatalog.arrayType). Absent (the --sql file) = none.
   */
  arrayType?: (type: string) => boolean;
}

/** Whether the table's column type may travel in a typed array literal. */
function arrayOk(t: TableRef, type: string): boolean {
  return commaArrayType(type) || (t.arrayType?.(type) ?? false);
}

/** The table an UPDATE or DELETE (or its row lookup) reads: ONLY for an inheritance parent. */
function own(t: TableRef): string {
  return `${t.only ? 'ONLY ' : ''}${qualify(t.schema, t.table)}`;
}

/** Multi-row INSERT. OVERRIDING SYSTEM VALUE: identity columns GENERATED ALWAYS take the source's value. */
export function insertSql(t: TableRef, rows: Array<(string | null)[]>): string {
  const r = t.relation;
  const cols = r.columns.map(quoteIdent).join(', ');
  const values = rows.map((row) => `(${r.columns.map((_, i) => typed(row[i] ?? null, r.types[i]!)).join(', ')})`).join(',\n  ');
  return `INSERT INTO ${qualify(t.schema, t.table)} (${cols}) OVERRIDING SYSTEM VALUE VALUES\n  ${values};\n`;
}

const COPY_SPECIAL = charSet('\\', '\n', '\r', '\t');
const COPY_SPECIAL_ALL = /[\\\n\r\t]/g;
function copyEscape(v: string): string {
  return holdsAny(v, COPY_SPECIAL) ? v.replace(COPY_SPECIAL_ALL, (c) => (c === '\\' ? '\\\\' : c === '\n' ? '\\n' : c === '\r' ? '\\r' : '\\t')) : v;
}

/** COPY text format (docs, COPY "Text Format"): backslash escapes for \ newline CR tab; \N is NULL. */
export function copyRow(row: (string | null)[], ncols: number): string {
  return copyRows([row], ncols, 0, 1);
}

/**
 * Rows start..end-1 as COPY text, built as one flat string (Array.join): concatenating row by row
 * leaves a tree of small string pieces that lives until the data is sent, and restore's garbage
 * collector copied those trees on every young-generation collection (bench/restore.ts, bulk).
 */
export function copyRows(rows: ReadonlyArray<(string | null)[]>, ncols: number, start = 0, end = rows.length): string {
  if (end <= start) return '';
  // One line per row, then one join: 5x faster than joining every value and separator (a 10,000-row
  // COPY, bench/restore.ts's table). The lines' small trees die inside this call. The last, empty
  // part gives the final newline. A table without columns still has rows: one empty line each.
  const lines = new Array<string>(end - start + 1);
  for (let j = start; j < end; j++) {
    const row = rows[j]!;
    let line = '';
    for (let i = 0; i < ncols; i++) {
      const v = row[i] ?? null;
      line += (i === 0 ? '' : '\t') + (v === null ? '\\N' : copyEscape(v));
    }
    lines[j - start] = line;
  }
  lines[end - start] = '';
  return lines.join('\n');
}

export function copySql(t: TableRef): string {
  return `COPY ${qualify(t.schema, t.table)} (${t.relation.columns.map(quoteIdent).join(', ')}) FROM STDIN`;
}

/** The key of a row change: old key when the server sent one (K or O), else key columns of new. */
export function keyValues(ev: {
  relation: RelationInfo | null;
  oldKind: string | null;
  old: (string | null)[] | null;
  new: (string | null)[] | null;
}): (string | null)[] {
  const key = ev.relation!.key;
  const src = ev.oldKind && ev.old ? ev.old : ev.new!;
  const out = new Array<string | null>(key.length);
  for (let k = 0; k < key.length; k++) out[k] = src[key[k]!] ?? null;
  return out;
}

/** Per relation description: [non-key columns, all columns], the answers without unchanged TOAST. */
const plainUpdateColumns = new WeakMap<RelationInfo, [number[], number[]]>();

/**
 * Columns an UPDATE sets: all but unchanged TOAST values; key columns only when the key changed.
 * Ascending, no repeats (the coalescer merges these lists as sorted). The result may be shared
 * between calls: callers must not modify it.
 */
export function updateColumns(ev: { relation: RelationInfo | null; oldKind: string | null; unchanged: number[] }): readonly number[] {
  const r = ev.relation!;
  if (ev.unchanged.length === 0) {
    // The common case, once per relation description instead of two Sets per change.
    let p = plainUpdateColumns.get(r);
    if (!p) {
      const all = r.columns.map((_, i) => i);
      p = [all.filter((i) => !r.key.includes(i)), all];
      plainUpdateColumns.set(r, p);
    }
    return ev.oldKind !== null ? p[1] : p[0];
  }
  const unchanged = new Set(ev.unchanged);
  const keySet = new Set(r.key);
  const keyMayChange = ev.oldKind !== null;
  const out: number[] = [];
  for (let i = 0; i < r.columns.length; i++) {
    if (unchanged.has(i)) continue;
    // A key that did not change is not set: identity columns GENERATED ALWAYS refuse any
    // non-DEFAULT assignment, and the WHERE clause already pins the value.
    if (keySet.has(i) && !keyMayChange) continue;
    out.push(i);
  }
  return out;
}

/** What arrayLiteral escapes: an element's double quote and backslash, the literal's quote, NUL. */
const ARRAY_SPECIAL = charSet('"', '\\', "'", '\u0000');

/**
 * A one-dimensional array literal of text values: every element double-quoted (backslash and
 * double quote escaped), NULL bare (docs 8.15.6 "Array Input and Output Syntax").
 */
export function arrayLiteral(values: Array<string | null>): string {
  // Element by element, then one join: the same text as escaping the elements and then quoting the
  // whole literal (a quote is doubled wherever it stands), without a RegExp pass per value.
  const parts = new Array<string>(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    parts[i] = v === null ? 'NULL' : holdsAny(v, ARRAY_SPECIAL) ? `"${literalBody(v.replace(/["\\]/g, (c) => `\\${c}`))}"` : `"${v}"`;
  }
  return `'{${parts.join(',')}}'`;
}

/**
 * Built-in types (format_type spelling, typmods allowed) whose array type is `<type>[]` and whose
 * array elements are delimited by ',': a typed array literal of their text output reads back value
 * by value. Not every type is: box's elements are delimited by ';', PostGIS geometry's by ':', and
 * an extension may choose any delimiter. Others take a typed array only when the live restore's
 * catalog vouches for them (TableRef.arrayType), else typed literals one by one.
 */
const COMMA_ARRAY_TYPE =
  /^(?:smallint|integer|bigint|real|double precision|numeric(?:\(\d+(?:,-?\d+)?\))?|text|character varying(?:\(\d+\))?|character(?:\(\d+\))?|bpchar|uuid|boolean|date|(?:time|timestamp)(?:\(\d\))? with(?:out)? time zone|bytea|jsonb|json|inet|cidr|oid)$/;

export function commaArrayType(type: string): boolean {
  return COMMA_ARRAY_TYPE.test(type);
}

/**
 * One UPDATE for many rows with the same set of assigned columns:
 *   UPDATE t AS _t SET c = _v.c1 FROM unnest('{..}'::type[], ...) AS _v(k0, c1) WHERE _t.k = _v.k0
 * or, when a column's type is not one arrayOk accepts (arrays among them),
 *   UPDATE t AS _t SET c = _v.c1 FROM (VALUES ('..'::type, ...), ...) AS _v(k0, c1) WHERE _t.k = _v.k0
 * whose typed literals (NULL::type too) give every column its type. The batcher guarantees a key
 * appears at most once.
 */
export function updateSql(t: TableRef, setCols: readonly number[], rows: Array<{ key: (string | null)[]; values: (string | null)[] }>): string {
  const r = t.relation;
  if (setCols.length === 0) return '';
  if (rows.length === 1) {
    const row = rows[0]!;
    const set = setCols.map((i) => `${quoteIdent(r.columns[i]!)} = ${typed(row.values[i] ?? null, r.types[i]!)}`).join(', ');
    const where = r.key.map((ci, k) => `${quoteIdent(r.columns[ci]!)} = ${typed(row.key[k] ?? null, r.types[ci]!)}`).join(' AND ');
    return `UPDATE ${own(t)} SET ${set} WHERE ${where};\n`;
  }
  // Via arrays: one typed array per column, zipped by unnest. Postgres parses one literal per column
  // instead of analysing and coercing a VALUES list of rows x columns constants (~20% less Postgres
  // time per updated row, measured with bench/restore.ts). Only when arrayOk accepts every
  // column's type: an array of arrays is one multi-dimensional array to Postgres (unnest
  // would flatten it), and a type may delimit its array elements otherwise (box ';', PostGIS
  // geometry ':'). Else a VALUES list of typed literals: each value is read by its type's input
  // function, as an array's elements are. Never a cast from text: that may be a function the
  // type's owner wrote (CREATE CAST), run here as the restore's superuser, and for some types it
  // differs from the input function (text to regclass refuses a numeric OID).
  const viaArrays = [...r.key, ...setCols].every((i) => arrayOk(t, r.types[i]!));
  const cols = [...r.key.map((_, k) => `k${k}`), ...setCols.map((i) => `c${i}`)];
  const set = setCols.map((i) => `${quoteIdent(r.columns[i]!)} = _v.c${i}`).join(', ');
  const where = r.key.map((ci, k) => `_t.${quoteIdent(r.columns[ci]!)} = _v.k${k}`).join(' AND ');
  let from: string;
  if (viaArrays) {
    const arrays = [
      ...r.key.map((ci, k) => `${arrayLiteral(rows.map((row) => row.key[k] ?? null))}::${r.types[ci]}[]`),
      ...setCols.map((i) => `${arrayLiteral(rows.map((row) => row.values[i] ?? null))}::${r.types[i]}[]`),
    ];
    from = `unnest(${arrays.join(',\n  ')})`;
  } else {
    const values = (row: { key: (string | null)[]; values: (string | null)[] }) => [
      ...r.key.map((ci, k) => typed(row.key[k] ?? null, r.types[ci]!)),
      ...setCols.map((i) => typed(row.values[i] ?? null, r.types[i]!)),
    ];
    from = `(VALUES\n  ${rows.map((row) => `(${values(row).join(', ')})`).join(',\n  ')})`;
  }
  return `UPDATE ${own(t)} AS _t SET ${set}\nFROM ${from} AS _v(${cols.join(', ')})\nWHERE ${where};\n`;
}

export function deleteSql(t: TableRef, keys: Array<(string | null)[]>): string {
  const r = t.relation;
  if (r.key.length === 1) {
    const ci = r.key[0]!;
    const col = quoteIdent(r.columns[ci]!);
    const type = r.types[ci]!;
    if (keys.length === 1) return `DELETE FROM ${own(t)} WHERE ${col} = ${typed(keys[0]![0] ?? null, type)};\n`;
    // One typed array literal: PostgreSQL parses one constant instead of a list of typed ones
    // (1,000-key DELETEs ran ~20% faster, psql on PostgreSQL 15). Only for types whose array literal
    // reads back value by value (arrayOk); any other key keeps the list.
    if (arrayOk(t, type)) {
      return `DELETE FROM ${own(t)} WHERE ${col} = ANY(${arrayLiteral(keys.map((k) => k[0] ?? null))}::${type}[]);\n`;
    }
    // IN (list) becomes = ANY(array) as well: one index scan with a ScalarArrayOpExpr.
    return `DELETE FROM ${own(t)} WHERE ${col} IN (${keys.map((k) => typed(k[0] ?? null, type)).join(', ')});\n`;
  }
  // Typed literals, never a cast from text (see updateSql).
  const vcols = r.key.map((_, k) => `k${k}`);
  const values = keys.map((k) => `(${r.key.map((ci, j) => typed(k[j] ?? null, r.types[ci]!)).join(', ')})`).join(',\n  ');
  const where = r.key.map((ci, k) => `_t.${quoteIdent(r.columns[ci]!)} = _v.k${k}`).join(' AND ');
  return `DELETE FROM ${own(t)} AS _t USING (VALUES\n  ${values}) AS _v(${vcols.join(', ')})\nWHERE ${where};\n`;
}

/**
 * REPLICA IDENTITY FULL without a usable key: the old row is matched on every column with
 * IS NOT DISTINCT FROM semantics, and exactly one matching row is changed (duplicates are legal in
 * such tables; the source changed one of them), chosen by ctid as PostgreSQL's own apply worker
 * does (RelationFindReplTupleSeq takes the first match).
 */
function fullMatch(t: TableRef, old: (string | null)[]): string {
  const r = t.relation;
  const conds = r.columns.map((c, i) => matchFull('', c, old[i] ?? null, r.types[i]!));
  return `ctid = (SELECT ctid FROM ${own(t)} WHERE ${conds.join(' AND ')} LIMIT 1)`;
}

export function updateFullSql(t: TableRef, old: (string | null)[], values: (string | null)[], unchanged: number[]): string {
  const r = t.relation;
  const skip = new Set(unchanged);
  const set = r.columns
    .map((c, i) => (skip.has(i) ? undefined : `${quoteIdent(c)} = ${typed(values[i] ?? null, r.types[i]!)}`))
    .filter((s): s is string => s !== undefined);
  if (set.length === 0) return '';
  return `UPDATE ${own(t)} SET ${set.join(', ')} WHERE ${fullMatch(t, old)};\n`;
}

export function deleteFullSql(t: TableRef, old: (string | null)[]): string {
  return `DELETE FROM ${own(t)} WHERE ${fullMatch(t, old)};\n`;
}

/**
 * A table as the stream describes it: its columns with their format_type() types, nothing else.
 * Used for the table of a CREATE TABLE AS / SELECT INTO, whose rows reach the stream before the
 * command does (see DdlApplier.createFromRows); such a table has no constraints or defaults of its own.
 */
export function createTableSql(t: TableRef): string {
  const r = t.relation;
  const cols = r.columns.map((c, i) => `${quoteIdent(c)} ${r.types[i]}`).join(', ');
  return `CREATE TABLE IF NOT EXISTS ${qualify(t.schema, t.table)} (${cols});\n`;
}

/**
 * The stream lists every table a TRUNCATE emptied (a parent's children too, unless the source said
 * ONLY): `only` names the inheritance parents (TableRef.only), which must not empty their children.
 */
export function truncateSql(
  relations: Array<[string, string]>,
  cascade: boolean,
  restartIdentity: boolean,
  only?: (schema: string, table: string) => boolean,
): string {
  if (relations.length === 0) return '';
  return `TRUNCATE ${relations.map(([s, t]) => `${only?.(s, t) ? 'ONLY ' : ''}${qualify(s, t)}`).join(', ')}${restartIdentity ? ' RESTART IDENTITY' : ''}${cascade ? ' CASCADE' : ''};\n`;
}
