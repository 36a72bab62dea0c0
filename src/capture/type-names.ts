import pg from 'pg';
import { pgError } from '../errors.js';
import type { RelationColumn, Type } from '../pg/pgoutput.js';

// Column type names for RelationInfo.types: format_type(type oid, typmod), so that restore can
// cast text values back ('12.50'::numeric(10,2), '{1,2}'::public.mood[]). pgoutput sends only
// oids; the names come from the catalog through a normal (non-replication) connection whose
// search_path is pg_catalog alone, which makes format_type schema-qualify every type outside
// pg_catalog (format_type qualifies a type whose schema is not on the search path:
// PostgreSQL docs 9.26 "System Information Functions", format_type).
// Cached per (oid, typmod): a relation is re-sent after every DDL, the types rarely change.

/** Session options for the catalog connection (libpq `options`). */
export const CATALOG_SESSION_OPTIONS = '-c search_path=pg_catalog -c application_name=katya-cdp-capture';

export class TypeNames {
  private readonly cache = new Map<string, string>();
  /** Names from pgoutput Type messages: the fallback when the type no longer exists in the catalog. */
  private readonly sent = new Map<number, string>();

  constructor(private readonly client: pg.ClientBase) {}

  /** pgoutput Type message: remember the name the server sent for this oid. */
  noteType(t: Type): void {
    this.sent.set(t.oid, t.schema === 'pg_catalog' ? t.name : `${quoteIdent(t.schema)}.${quoteIdent(t.name)}`);
  }

  async resolve(columns: RelationColumn[]): Promise<string[]> {
    const missing = new Map<string, { oid: number; typmod: number }>();
    for (const c of columns) {
      const k = `${c.typeOid}/${c.typmod}`;
      if (!this.cache.has(k)) missing.set(k, { oid: c.typeOid, typmod: c.typmod });
    }
    if (missing.size > 0) {
      const wanted = [...missing.values()];
      let rows: { i: number; name: string | null }[];
      try {
        const res = await this.client.query<{ i: number; name: string | null }>(
          // format_type(oid, -1) and (oid, NULL) differ only for types with a typmod; pass it as sent.
          `SELECT (o.i)::int AS i, format_type(o.oid, CASE WHEN o.typmod < 0 THEN NULL ELSE o.typmod END) AS name
             FROM unnest($1::oid[], $2::int[]) WITH ORDINALITY AS o(oid, typmod, i)`,
          [wanted.map((w) => w.oid), wanted.map((w) => w.typmod)],
        );
        rows = res.rows;
      } catch (err) {
        throw pgError('cannot look up column types with format_type', err, true);
      }
      for (const r of rows) {
        const w = wanted[r.i - 1]!;
        // format_type returns '???' for an oid that no longer exists (dropped since the WAL was written).
        const name = r.name && r.name !== '???' ? r.name : (this.sent.get(w.oid) ?? `oid:${w.oid}`);
        this.cache.set(`${w.oid}/${w.typmod}`, name);
      }
    }
    return columns.map((c) => this.cache.get(`${c.typeOid}/${c.typmod}`)!);
  }
}

export function quoteIdent(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}
