import pg from 'pg';
import { pgError } from '../errors.js';
import { counter } from '../util/metrics.js';
import type { Relation, RelationColumn, Type } from '../pg/pgoutput.js';
import { quoteIdent } from '../pg/quote.js';
import { sleep } from '../util/retry.js';

// Column type names for RelationInfo.types: format_type(type oid, typmod), so that restore can
// cast text values back ('12.50'::numeric(10,2), '{1,2}'::public.mood[]). pgoutput sends only
// oids; the names come from the catalog through a normal (non-replication) connection whose
// search_path is pg_catalog alone, which makes format_type schema-qualify every type outside
// pg_catalog (format_type qualifies a type whose schema is not on the search path:
// PostgreSQL docs 9.26 "System Information Functions", format_type).
//
// Names must be the ones valid at the change's point, which moves under renames:
// - A type or domain renamed, moved (ALTER TYPE / DOMAIN ... RENAME TO / SET SCHEMA) or its schema
//   renamed does not make pgoutput send the tables' Relation messages again (it only does after DDL
//   on the table itself: checked on PostgreSQL 15), so the mapper would keep the old name for every
//   later change, and restore fails with `type "public.mood" does not exist`. The cached names of
//   user-defined types are therefore dropped at every DDL event in the stream (afterDdl), and every
//   relation seen so far with such a column is resolved again then; those whose names changed go to the mapper again, before the next change of the
//   same transaction. (A DDL event is emitted at ddl_command_end, after the rename, in the same
//   transaction: changes before it keep the old name, changes after it get the new one.)
// - Decoding runs later than the source did (a backlog after downtime), so the catalog read now
//   can be newer than the change: a type renamed twice (mood -> feeling, rows, feeling -> emotion)
//   and decoded after both would read `emotion` at the first rename. What we do about it:
//   * At a Relation message pgoutput first sends a Type message for every column type outside the
//     built-in range, with the name read under the decoding's historic snapshot: the name AT the
//     change. For plain (non-domain, non-array, no typmod) types that name wins over the
//     catalog's. (For a domain pgoutput sends its base type's name, for an array the `_x` array
//     type name, so those keep the catalog's name.)
// - The catalog can also be BEHIND the stream: PostgreSQL writes and flushes a commit record (which
//   the walsender may then decode and send) before it takes the transaction out of the running set
//   (ProcArrayEndTransaction, after any synchronous-replication wait) and before it sends its cache
//   invalidations. A lookup made in that window reads the names from before the DDL: after a
//   rename the changes kept the old name and restore stopped on `type "public.mood" does not
//   exist` (seen once in CI, on a loaded machine). So a lookup made for a transaction being decoded
//   first waits until that transaction is visible in the lookup's own snapshot, and builds the
//   names of user-defined types from pg_type / pg_namespace rows read under that snapshot, not
//   from format_type's system caches, which may hold the old name until the invalidation arrives.
//   (If it never becomes visible within TypeNamesOptions.visibleWaitMs, e.g. with this capture
//   named in synchronous_standby_names, the names are taken as they are and reported.)
//   * At a DDL event there is no historic source: a name that changed, where the catalog rows it
//     is built from (the type, its element type, their schemas) were last written by a transaction
//     other than the one being decoded, came from a transaction decoded later (or from DDL that was
//     not captured): it may be newer than the change. Capture cannot know the name in between; it
//     logs a warning and counts it in cdp_capture_type_names_uncertain_total. A wrong name makes
//     restore stop (the type does not exist yet on the target) unless another type has that name
//     by then (two types swapping names). Exact in every case needs the name recorded in the
//     source transaction by the DDL event trigger (oid -> qualified name of the types a command
//     renamed or moved), which the DDL event format does not carry yet.

/** Session options for the catalog connection (libpq `options`). */
export const CATALOG_SESSION_OPTIONS = '-c search_path=pg_catalog -c application_name=katya-cdp-capture';

/** Type oids below this are built-in (FirstNormalObjectId): their names never change. */
const FIRST_NORMAL_OID = 16384;

const uncertain = counter(
  'cdp_capture_type_names_uncertain_total',
  'Column type names resolved after a DDL event from a catalog already changed by a later transaction: possibly newer than the change',
);

interface Resolved {
  name: string;
  /** pg_type.typtype ('d' domain, 'e' enum, 'b' base, ...). */
  typtype: string;
  schema: string;
  typname: string;
  array: boolean;
  /** xmin of the catalog rows the name is built from (the type, its element type, their namespaces). */
  xmins: string[];
}

interface Known {
  rel: Relation;
  names: string[];
}

export interface TypeNameWarning {
  relation: string;
  column: string;
  before: string;
  after: string;
  xid: number;
}

/** Called when a transaction being decoded did not become visible in time (see the header). */
export type InvisibleWarning = (w: { xid: number; waitedMs: number }) => void;

export interface TypeNamesOptions {
  /** How long a lookup waits for the decoded transaction to become visible (default 30 s). */
  visibleWaitMs?: number;
  invisible?: InvisibleWarning;
}

export class TypeNames {
  private readonly cache = new Map<string, string>();
  /** Names from pgoutput Type messages: the fallback when the type no longer exists in the catalog. */
  private readonly sent = new Map<number, string>();
  /** Type messages since the last Relation message: they describe that relation's columns (historic names). */
  private readonly fresh = new Map<number, Type>();
  /** Every relation described so far, with the names it was given (for afterDdl). */
  private readonly relations = new Map<number, Known>();

  constructor(
    private readonly client: pg.ClientBase,
    private readonly warn: (w: TypeNameWarning) => void = () => {},
    private readonly opts: TypeNamesOptions = {},
  ) {}

  /** pgoutput Type message: remember the name the server sent for this oid. */
  noteType(t: Type): void {
    this.sent.set(t.oid, t.schema === 'pg_catalog' ? t.name : `${quoteIdentIfNeeded(t.schema)}.${quoteIdentIfNeeded(t.name)}`);
    this.fresh.set(t.oid, t);
  }

  /** Names for a Relation message's columns (in order) in transaction `xid`, remembered for afterDdl. */
  async relation(rel: Relation, xid?: number): Promise<string[]> {
    const fresh = new Map(this.fresh);
    this.fresh.clear();
    // A type with a Type message just now is looked up again: the cache may predate a rename
    // that this relation's historic Type message already shows.
    for (const oid of fresh.keys()) for (const c of rel.columns) if (c.typeOid === oid) this.cache.delete(`${c.typeOid}/${c.typmod}`);
    const found = await this.lookup(rel.columns, xid);
    const names = rel.columns.map((c) => {
      const k = `${c.typeOid}/${c.typmod}`;
      const r = found.get(k);
      const t = fresh.get(c.typeOid);
      if (r && t && c.typmod < 0 && r.typtype !== 'd' && !r.array && (t.schema !== r.schema || t.name !== r.typname)) {
        // The catalog is already past this change (renamed since); the Type message has the name at the change.
        const historic = `${quoteIdent(t.schema)}.${quoteIdent(t.name)}`;
        this.cache.set(k, historic);
        return historic;
      }
      return this.cache.get(k)!;
    });
    this.relations.set(rel.oid, { rel, names });
    return names;
  }

  /** Compatibility: names for columns without remembering a relation. */
  async resolve(columns: RelationColumn[]): Promise<string[]> {
    await this.lookup(columns);
    return columns.map((c) => this.cache.get(`${c.typeOid}/${c.typmod}`)!);
  }

  /**
   * A DDL event in transaction `xid`: drops the cached names and resolves every known relation
   * with a user-defined column type again. Returns the relations whose names changed, with their
   * new names, for the mapper (pgoutput will not resend them after a type rename).
   */
  async afterDdl(xid: number): Promise<Array<[Relation, string[]]>> {
    // Built-in types (below FirstNormalObjectId) cannot be renamed: their names stay cached, and
    // only the distinct user-defined (oid, typmod) pairs are looked up again (a migration of many
    // DDL statements on a database of many tables costs one small query per statement).
    for (const k of [...this.cache.keys()]) if (Number(k.slice(0, k.indexOf('/'))) >= FIRST_NORMAL_OID) this.cache.delete(k);
    const affected = [...this.relations.values()].filter((k) => k.rel.columns.some((c) => c.typeOid >= FIRST_NORMAL_OID));
    if (affected.length === 0) return [];
    const found = await this.lookup(
      affected.flatMap((k) => k.rel.columns),
      xid,
    );
    const changed: Array<[Relation, string[]]> = [];
    for (const k of affected) {
      const names = k.rel.columns.map((c) => this.cache.get(`${c.typeOid}/${c.typmod}`)!);
      if (names.every((n, i) => n === k.names[i])) continue;
      names.forEach((n, i) => {
        if (n === k.names[i]) return;
        const c = k.rel.columns[i]!;
        const r = found.get(`${c.typeOid}/${c.typmod}`);
        if (r && !r.xmins.includes(String(xid))) {
          uncertain.inc();
          this.warn({ relation: `${k.rel.schema}.${k.rel.name}`, column: c.name, before: k.names[i]!, after: n, xid });
        }
      });
      k.names = names;
      changed.push([k.rel, names]);
    }
    return changed;
  }

  /** Fills the cache for the columns' (oid, typmod) pairs it lacks; returns what the catalog said for them. */
  private async lookup(columns: RelationColumn[], xid?: number): Promise<Map<string, Resolved>> {
    const missing = new Map<string, { oid: number; typmod: number }>();
    for (const c of columns) {
      const k = `${c.typeOid}/${c.typmod}`;
      if (!this.cache.has(k)) missing.set(k, { oid: c.typeOid, typmod: c.typmod });
    }
    const out = new Map<string, Resolved>();
    if (missing.size === 0) return out;
    const wanted = [...missing.values()];
    const rows = await this.query(wanted, xid);
    for (const r of rows) {
      const w = wanted[r.i - 1]!;
      const k = `${w.oid}/${w.typmod}`;
      // format_type returns '???' for an oid that no longer exists (dropped since the WAL was written).
      const name = r.name && r.name !== '???' ? r.name : (this.sent.get(w.oid) ?? `oid:${w.oid}`);
      this.cache.set(k, name);
      if (r.typtype !== null) {
        out.set(k, {
          name,
          typtype: r.typtype,
          schema: r.schema ?? '',
          typname: r.typname ?? '',
          array: r.array === true,
          xmins: (r.xmins ?? []).filter((x): x is string => x !== null),
        });
      }
    }
    return out;
  }

  /**
   * The catalog's rows for `wanted`, read under one snapshot in which transaction `xid` (the one
   * being decoded) is visible: asked again, with a short backoff, while it is not (see the header).
   */
  private async query(wanted: Array<{ oid: number; typmod: number }>, xid: number | undefined): Promise<LookupRow[]> {
    const waitMs = this.opts.visibleWaitMs ?? 30_000;
    const started = Date.now();
    for (let delay = 1; ; delay = Math.min(delay * 2, 100)) {
      let rows: LookupRow[];
      try {
        const res = await this.client.query<LookupRow>(LOOKUP_SQL, [wanted.map((w) => w.oid), wanted.map((w) => w.typmod), xid ?? null]);
        rows = res.rows;
      } catch (err) {
        throw pgError('cannot look up column types with format_type', err, true);
      }
      if (rows[0]?.visible !== false) return rows;
      const waited = Date.now() - started;
      if (waited >= waitMs) {
        uncertain.inc();
        this.opts.invisible?.({ xid: xid!, waitedMs: waited });
        return rows;
      }
      await sleep(delay);
    }
  }
}

interface LookupRow {
  i: number;
  name: string | null;
  typtype: string | null;
  schema: string | null;
  typname: string | null;
  array: boolean | null;
  xmins: string[] | null;
  /** Whether the decoded transaction ($3) is visible in the snapshot the row was read under (null: none given). */
  visible: boolean | null;
}

// One statement, one snapshot (READ COMMITTED): pg_current_snapshot() is the snapshot the joins read
// under. $3 is a 32-bit xid as pgoutput sends it, widened to the xid8 nearest the snapshot's xmax
// (which is latestCompletedXid + 1: a transaction still running can be past it).
// A user-defined type without typmod is named from the rows read here, as format_type would name it
// (schema-qualified unless in pg_catalog, the search path; an array is its element's name and []),
// because format_type reads through the system caches; with a typmod only format_type knows the
// type's own typmod output, and built-in types (oid < 16384) are never renamed.
const LOOKUP_SQL = `
WITH s AS (SELECT pg_current_snapshot() AS snap),
     x AS (SELECT snap, ((pg_snapshot_xmax(snap)::text::bigint >> 32) << 32) + $3::bigint AS wide, pg_snapshot_xmax(snap)::text::bigint AS mx FROM s),
     v AS (SELECT CASE WHEN $3::bigint IS NULL THEN NULL
                       ELSE (SELECT CASE WHEN w < 3 THEN true ELSE pg_visible_in_snapshot(w::text::xid8, snap) END
                               FROM (SELECT CASE WHEN wide - mx > 2147483648 THEN wide - 4294967296 WHEN mx - wide > 2147483648 THEN wide + 4294967296 ELSE wide END AS w) y) END AS visible
             FROM x)
SELECT (o.i)::int AS i,
       CASE WHEN o.oid >= 16384 AND o.typmod < 0 AND t.oid IS NOT NULL THEN
              CASE WHEN e.oid IS NOT NULL
                   THEN CASE WHEN en.nspname = 'pg_catalog' THEN '' ELSE quote_ident(en.nspname) || '.' END || quote_ident(e.typname) || '[]'
                   ELSE CASE WHEN n.nspname = 'pg_catalog' THEN '' ELSE quote_ident(n.nspname) || '.' END || quote_ident(t.typname) END
            -- format_type(oid, -1) and (oid, NULL) differ only for types with a typmod; pass it as sent.
            ELSE format_type(o.oid, CASE WHEN o.typmod < 0 THEN NULL ELSE o.typmod END) END AS name,
       t.typtype::text AS typtype, n.nspname::text AS schema, t.typname::text AS typname,
       (e.oid IS NOT NULL) AS array,
       ARRAY[t.xmin::text, n.xmin::text, e.xmin::text, en.xmin::text] AS xmins,
       v.visible
  FROM unnest($1::oid[], $2::int[]) WITH ORDINALITY AS o(oid, typmod, i)
  CROSS JOIN v
  LEFT JOIN pg_type t ON t.oid = o.oid
  LEFT JOIN pg_namespace n ON n.oid = t.typnamespace
  -- An array as format_type tells one: varlena, an element type, subscripted like an array.
  LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typlen = -1 AND t.typsubscript = 'array_subscript_handler'::regproc
  LEFT JOIN pg_namespace en ON en.oid = e.typnamespace`;

/**
 * Quoted only when needed, like PostgreSQL's quote_ident() but without its keyword list: the names
 * this writes into events keep their historical form. pg/quote.ts's quoteIdent always quotes (safe for
 * reserved words too).
 */
function quoteIdentIfNeeded(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}
