import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import pg from 'pg';
import { fingerprint, withClient } from './helpers.js';

// Proof harness of issue 9 ("the restored schema equals the source's at the target, not only the
// rows"): `pg_dump --schema-only` of two databases compared after normalisation, and their whole
// contents compared table by table. Both return null when equal, else a readable account of every
// difference (what only one side has, and a line diff of what both have but differently).
//
// Normalisations, each for a reason:
// - Comment lines (`--`) go: the dump's header and footer, "Dumped from/by" versions, and the
//   per-object TOC comments. The TOC comment's fields (name, type, schema, owner) are parsed
//   first and become the entry's key, so the diff still names every object.
// - `\restrict KEY` / `\unrestrict KEY` go: newer pg_dump releases (15.14+, 17.6+) wrap the
//   script in them with a random key per dump.
// - `SET ...;` and `SELECT pg_catalog.set_config(...)` lines go: they are pg_dump's session set-up
//   (statement_timeout, search_path, default_tablespace, default_table_access_method ...), emitted
//   between objects as the dump needs them, not objects of the database.
// - The engine's own objects go: schema katya_cdp (DDL capture functions, its key table) and
//   schema _cdp_restore (restore's resume cursor, dropped at the end of a restore but harmless to
//   ignore), every object in them, comments and ACLs on them, and event triggers named
//   katya_cdp_*. pg_dump also gets --exclude-schema for both; the entry filter is what guarantees
//   it (an event trigger lives in no schema).
// - Publications and subscriptions are not dumped (--no-publications --no-subscriptions): the
//   engine's publication lives on the source only, and a base never carries publications or
//   subscriptions (basebackup.ts), so a restore cannot have them; comparing them would only ever
//   report that.
// - Entries are compared as a set keyed by (type, schema, name), not in dump order: pg_dump breaks
//   ties between objects of the same kind and name (overloaded functions ...) and orders around
//   dependencies partly by OID, which differ between source and restore without meaning anything.
// - Owners (`ALTER ... OWNER TO`, the TOC comment's Owner) are compared unless ignoreOwners:
//   restore keeps the source's owners when the target has all those roles (base-restore.ts) and
//   replays DDL as the role that ran it; pass ignoreOwners for a restore that ran with --no-owner
//   (roles missing on the target), where the restore role owns everything by design.
// - Privileges (GRANT / REVOKE, default privileges) are compared unless ignoreAcl, for the same
//   reason (a restore with --no-acl would lose them by design).
// - Nothing else is normalised: column order, defaults, constraint and index names, view text,
//   function bodies, comments, partition bounds, replica identity all must match exactly.

const exec = promisify(execFile);

export const ENGINE_SCHEMAS = ['katya_cdp', '_cdp_restore'];

export interface SchemaCompareOptions {
  ignoreOwners?: boolean;
  ignoreAcl?: boolean;
  /** pg_dump binary (default `pg_dump` on the PATH, as the engine's basebackup uses). */
  pgDump?: string;
}

interface Entry {
  key: string;
  type: string;
  body: string[];
}

/** `pg_dump --schema-only` of a database (engine schemas, publications and subscriptions left out). */
export async function schemaDump(url: string, opts: SchemaCompareOptions = {}): Promise<string> {
  const args = ['--schema-only', '--no-publications', '--no-subscriptions', ...ENGINE_SCHEMAS.map((s) => `--exclude-schema=${s}`), `--dbname=${url}`];
  const { stdout } = await exec(opts.pgDump ?? 'pg_dump', args, { maxBuffer: 256 * 1024 * 1024 });
  return stdout;
}

const HEADER = /^-- (?:Data for )?Name: (.*); Type: (.*); Schema: (.*); Owner: (.*)$/;

/** The dump as normalised entries, keyed "TYPE schema.name", sorted by key. */
export function normaliseSchemaDump(dump: string, opts: SchemaCompareOptions = {}): Entry[] {
  const entries: Entry[] = [];
  let cur: Entry = { key: '(preamble)', type: '', body: [] };
  const isEngine = (schema: string, name: string, type: string) =>
    ENGINE_SCHEMAS.includes(schema) ||
    (type === 'SCHEMA' && ENGINE_SCHEMAS.includes(name)) ||
    ENGINE_SCHEMAS.some((s) => name === `SCHEMA ${s}`) ||
    (type === 'EVENT TRIGGER' && name.startsWith('katya_cdp_')) ||
    // A comment / ACL on an event trigger of ours.
    name.startsWith('EVENT TRIGGER katya_cdp_');
  let skip = false;
  const push = () => {
    if (!skip) entries.push(cur);
  };
  for (const raw of dump.split('\n')) {
    const line = raw.replace(/\s+$/, '');
    const h = HEADER.exec(line);
    if (h) {
      push();
      const [, name, type, schema, owner] = h as unknown as [string, string, string, string, string];
      skip = isEngine(schema, name, type) || (opts.ignoreAcl === true && (type === 'ACL' || type === 'DEFAULT ACL'));
      const ownerPart = opts.ignoreOwners ? '' : ` (owner ${owner})`;
      cur = { key: `${type} ${schema === '-' ? '' : `${schema}.`}${name}${ownerPart}`, type, body: [] };
      continue;
    }
    if (line.startsWith('--') || line === '') continue;
    if (/^\\(un)?restrict\b/.test(line)) continue;
    if (/^SET [a-z_]+ = .*;$/.test(line) || /^SELECT pg_catalog\.set_config\(/.test(line)) continue;
    if (opts.ignoreOwners && /^ALTER [A-Z ]+ .* OWNER TO .*;$/.test(line)) continue;
    cur.body.push(line);
  }
  push();
  return entries
    .filter((e) => e.key !== '(preamble)' || e.body.length > 0)
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.body.join('\n') < b.body.join('\n') ? -1 : 1));
}

/**
 * Compares the normalised schema dumps of `expectedUrl` (the source at the target point, or a
 * dump of it taken then) and `actualUrl` (the restore). Null when equal, else a readable diff.
 */
export async function compareSchemas(expected: string | { dump: string }, actualUrl: string, opts: SchemaCompareOptions = {}): Promise<string | null> {
  const a = typeof expected === 'string' ? await schemaDump(expected, opts) : expected.dump;
  const b = await schemaDump(actualUrl, opts);
  return diffSchemaDumps(a, b, opts);
}

/** Null when the two dumps are equal after normalisation, else a readable diff (expected = a, restored = b). */
export function diffSchemaDumps(a: string, b: string, opts: SchemaCompareOptions = {}): string | null {
  const ea = group(normaliseSchemaDump(a, opts));
  const eb = group(normaliseSchemaDump(b, opts));
  const out: string[] = [];
  for (const key of [...new Set([...ea.keys(), ...eb.keys()])].sort()) {
    const x = ea.get(key);
    const y = eb.get(key);
    if (x === y) continue;
    if (y === undefined) out.push(`only in the source: ${key}\n${indent(x!)}`);
    else if (x === undefined) out.push(`only in the restore: ${key}\n${indent(y)}`);
    else out.push(`differs: ${key}\n${lineDiff(x.split('\n'), y.split('\n'))}`);
  }
  return out.length === 0 ? null : `schema dumps differ (- source, + restore) in ${out.length} object(s):\n${out.join('\n')}`;
}

/** Entries with the same key (overloads compare as a sorted multiset) joined into one text. */
function group(entries: Entry[]): Map<string, string> {
  const m = new Map<string, string[]>();
  for (const e of entries) {
    const l = m.get(e.key) ?? [];
    l.push(e.body.join('\n'));
    m.set(e.key, l);
  }
  return new Map([...m].map(([k, v]) => [k, v.sort().join('\n----\n')]));
}

function indent(s: string): string {
  return s
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');
}

/** A minimal LCS line diff: '  ' common, '- ' only in a, '+ ' only in b. Bodies are small. */
export function lineDiff(a: string[], b: string[]): string {
  const n = a.length;
  const m = b.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--) lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
  const out: string[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      out.push(`     ${a[i]}`);
      i++;
      j++;
    } else if (i < n && (j === m || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) out.push(`   - ${a[i++]}`);
    else out.push(`   + ${b[j++]}`);
  }
  return out.join('\n');
}

/**
 * Every table's and materialized view's whole content, one fingerprint each (helpers.ts's
 * fingerprint for ordinary tables and partitions, the same ordered md5 for materialized views,
 * which a REFRESH replayed on the target must fill alike), read in one snapshot.
 */
export async function contentFingerprint(c: pg.Client): Promise<Record<string, string>> {
  const out = await fingerprint(c);
  const mv = await c.query<{ s: string; t: string }>(
    `SELECT n.nspname AS s, c.relname AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'm' AND c.relispopulated AND n.nspname <> ALL ($1) ORDER BY 1, 2`,
    [ENGINE_SCHEMAS],
  );
  for (const { s, t } of mv.rows) {
    const q = `"${s.replace(/"/g, '""')}"."${t.replace(/"/g, '""')}"`;
    const r = await c.query(
      `SELECT count(*)::int AS n, md5(coalesce(string_agg(x.r, E'\\n' ORDER BY x.r), '')) AS h FROM (SELECT (${q}.*)::text AS r FROM ${q}) x`,
    );
    out[`${s}.${t} (materialized view)`] = `${r.rows[0].n}:${r.rows[0].h}`;
  }
  return out;
}

/**
 * Compares recorded contents (contentFingerprint of the source at the target) with a restored
 * database. Null when equal, else the tables that differ, with up to `rows` rows only on each side
 * when `sourceRows` (the source's rows per table, as text, recorded at the same moment) is given.
 */
export async function compareContents(
  expected: Record<string, string>,
  actualUrl: string,
  sourceRows?: Record<string, string[]>,
  rows = 5,
): Promise<string | null> {
  const got = await withClient(actualUrl, contentFingerprint);
  const out: string[] = [];
  for (const t of [...new Set([...Object.keys(expected), ...Object.keys(got)])].sort()) {
    const x = expected[t];
    const y = got[t];
    if (x === y) continue;
    if (y === undefined) out.push(`only in the source: ${t} (${x})`);
    else if (x === undefined) out.push(`only in the restore: ${t} (${y})`);
    else {
      let detail = '';
      if (sourceRows?.[t]) {
        const mine = await withClient(actualUrl, (c) => tableRows(c, t));
        const a = new Set(sourceRows[t]);
        const b = new Set(mine);
        const onlyA = [...a].filter((r) => !b.has(r)).slice(0, rows);
        const onlyB = [...b].filter((r) => !a.has(r)).slice(0, rows);
        detail = [...onlyA.map((r) => `\n   - ${r}`), ...onlyB.map((r) => `\n   + ${r}`)].join('');
      }
      out.push(`differs: ${t} (source rows:md5 ${x}, restore ${y})${detail}`);
    }
  }
  return out.length === 0 ? null : `contents differ (- source, + restore) in ${out.length} table(s):\n${out.join('\n')}`;
}

/** A table's rows as text (row output of the whole row), sorted; `t` as contentFingerprint names it. */
export async function tableRows(c: pg.Client, t: string): Promise<string[]> {
  const name = t.replace(/ \(materialized view\)$/, '');
  const dot = name.indexOf('.');
  const q = `"${name.slice(0, dot).replace(/"/g, '""')}"."${name.slice(dot + 1).replace(/"/g, '""')}"`;
  const r = await c.query<{ r: string }>(`SELECT (${q}.*)::text AS r FROM ${q} ORDER BY 1`);
  return r.rows.map((x) => x.r);
}

/** Every table's rows (tableRows), for compareContents's row-level detail. Only for small databases. */
export async function allRows(c: pg.Client): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const t of Object.keys(await contentFingerprint(c))) out[t] = await tableRows(c, t);
  return out;
}
