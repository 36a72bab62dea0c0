import pg from 'pg';
import { counter } from '../util/metrics.js';
import type { Relation, RelationColumn, Type } from '../pg/pgoutput.js';
import { quoteIdent } from '../pg/quote.js';
import { readTypes, type ReadTypesOptions } from './catalog-read.js';

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
//   relation seen so far with such a column is resolved again then; those whose names changed go
//   to the mapper again, before the next change of the same transaction. (A DDL event is emitted
//   at ddl_command_end, after the rename, in the same transaction: changes before it keep the old
//   name, changes after it get the new one.)
// - Decoding runs later than the source did (a backlog after downtime), so the catalog read now
//   can be newer than the change: a type renamed twice (mood -> feeling, rows, feeling -> emotion)
//   and decoded after both would read `emotion` at the first rename. What we do about it:
//   * At a Relation message pgoutput first sends a Type message for every column type outside the
//     built-in range, with the name read under the decoding's historic snapshot: the name AT the
//     change. For plain (non-domain, non-array, no typmod) types that name wins over the
//     catalog's. (For a domain pgoutput sends its base type's name, for an array the `_x` array
//     type name, so those keep the catalog's name.)
//   * At a DDL event there is no historic source: a name that changed, where the catalog rows it
//     is built from (the type, its element type, their schemas) were last written by a transaction
//     other than the one being decoded, came from a transaction decoded later (or from DDL that was
//     not captured): it may be newer than the change. Capture cannot know the name in between; it
//     logs a warning and counts it in cdp_capture_type_names_uncertain_total. A wrong name makes
//     restore stop (the type does not exist yet on the target) unless another type has that name
//     by then (two types swapping names). Exact in every case needs the name recorded in the
//     source transaction by the DDL event trigger (oid -> qualified name of the types a command
//     renamed or moved), which the DDL event format does not carry yet.
// - The catalog can also be BEHIND the stream: PostgreSQL writes and flushes a commit record (which
//   the walsender may then decode and send) before it takes the transaction out of the running set
//   (ProcArrayEndTransaction, after any synchronous-replication wait) and before it sends its cache
//   invalidations. A lookup made in that window reads the names from before the DDL: after a
//   rename the changes kept the old name and restore stopped on `type "public.mood" does not
//   exist` (seen once in CI, on a loaded machine). So a lookup made for a transaction being decoded
//   first waits until that transaction is visible in the lookup's own snapshot, and builds the
//   names of user-defined types from pg_type / pg_namespace rows read under that snapshot, not
//   from format_type's system caches, which may hold the old name until the invalidation arrives.
//   (catalog-read.ts; it stops waiting only when this capture's own walsender is a synchronous
//   standby, which the transaction waits for: then the names are taken as read, reported, and not
//   kept for later lookups.)

/**
 * Session options for the catalog connection (libpq `options`). synchronous_commit=local: the
 * heartbeat and sequences messages this connection commits must not wait for a synchronous standby,
 * which could be this very capture, blocked in a lookup queued behind them.
 */
export const CATALOG_SESSION_OPTIONS = '-c search_path=pg_catalog -c application_name=katya-cdp-capture -c synchronous_commit=local';

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

export class TypeNames {
  private readonly cache = new Map<string, string>();
  /** Names from pgoutput Type messages: the fallback when the type no longer exists in the catalog. */
  private readonly sent = new Map<number, string>();
  /** Type messages since the last Relation message: they describe that relation's columns (historic names). */
  private readonly fresh = new Map<number, Type>();
  /** Every relation described so far, with the names it was given (for afterDdl). */
  private readonly relations = new Map<number, Known>();
  /** Set when a lookup gave up waiting for its transaction: see settle(). */
  private forgetAfterUse = false;

  constructor(
    private readonly client: pg.ClientBase,
    private readonly warn: (w: TypeNameWarning) => void = () => {},
    private readonly opts: ReadTypesOptions = {},
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
    this.settle();
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
    this.forgetUserTypes();
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
    this.settle();
    return changed;
  }

  /** Drops the cached names of user-defined types (built-in ones, below FirstNormalObjectId, cannot be renamed). */
  private forgetUserTypes(): void {
    for (const k of [...this.cache.keys()]) if (Number(k.slice(0, k.indexOf('/'))) >= FIRST_NORMAL_OID) this.cache.delete(k);
  }

  /** Names read without the decoded transaction (readTypes gave up) serve this lookup only. */
  private settle(): void {
    if (!this.forgetAfterUse) return;
    this.forgetAfterUse = false;
    this.forgetUserTypes();
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
    const read = await readTypes(this.client, wanted, xid, this.opts);
    const rows = read.rows;
    if (read.gaveUp) this.forgetAfterUse = true;
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
}

/**
 * Quoted only when needed, like PostgreSQL's quote_ident() but without its keyword list: the names
 * this writes into events keep their historical form. pg/quote.ts's quoteIdent always quotes (safe for
 * reserved words too).
 */
function quoteIdentIfNeeded(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}
