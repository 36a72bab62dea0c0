import { createHash } from 'node:crypto';
import pg from 'pg';
import { CURSOR_SCHEMA } from '../restore/cursor.js';

// Row fingerprints of a database, for a synthetic base's manifest (compact.ts): per table (and
// populated materialized view) the row count and an order-independent hash of its rows' text
// (sums of two 60-bit slices of each row's md5, exact in numeric), so any table size is hashed in
// one pass with constant memory. The same rows give the same fingerprint in any physical order;
// a changed, missing or added row changes it. Engine schemas are left out: the restore cursor is
// gone when restore ends, and katya_cdp is never part of a base.

const ENGINE_SCHEMAS = ['katya_cdp', CURSOR_SCHEMA];

const quoteIdent = (s: string) => `"${s.replace(/"/g, '""')}"`;

export async function tableFingerprints(url: string): Promise<Record<string, string>> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const rels = await c.query<{ s: string; t: string; k: string }>(
      `SELECT n.nspname AS s, c.relname AS t, c.relkind::text AS k FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE (c.relkind = 'r' OR (c.relkind = 'm' AND c.relispopulated))
          AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname <> ALL ($1)
          AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1, 2`,
      [ENGINE_SCHEMAS],
    );
    const out: Record<string, string> = {};
    for (const { s, t, k } of rels.rows) {
      const q = `${quoteIdent(s)}.${quoteIdent(t)}`;
      const r = await c.query<{ n: string; a: string; b: string }>(
        `SELECT count(*)::text AS n,
                coalesce(sum(('x' || substr(h, 1, 15))::bit(60)::bigint::numeric), 0)::text AS a,
                coalesce(sum(('x' || substr(h, 16, 15))::bit(60)::bigint::numeric), 0)::text AS b
           FROM (SELECT md5((x.*)::text) AS h FROM ${q} x) y`,
      );
      const row = r.rows[0]!;
      const name = k === 'm' ? `${s}.${t} (materialized view)` : `${s}.${t}`;
      out[name] = `${row.n}:${createHash('sha256').update(`${row.a}:${row.b}`).digest('hex').slice(0, 32)}`;
    }
    await c.query('COMMIT');
    return out;
  } finally {
    await c.end().catch(() => {});
  }
}

/** One digest over every table's fingerprint (names included), sorted. */
export function fingerprintDigest(f: Record<string, string>): string {
  const h = createHash('sha256');
  for (const k of Object.keys(f).sort()) h.update(`${k}\t${f[k]}\n`);
  return h.digest('hex');
}

/** The tables whose fingerprints differ between two sets, for an error message. */
export function fingerprintDiff(a: Record<string, string>, b: Record<string, string>): string[] {
  const out: string[] = [];
  for (const k of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
    if (a[k] !== b[k]) out.push(`${k}: ${a[k] ?? '(absent)'} vs ${b[k] ?? '(absent)'}`);
  }
  return out;
}
