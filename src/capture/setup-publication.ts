// Setup, publication: the existing publication against the configuration, and what publishing the
// tables would break (no replica identity) or leave out (unlogged tables).

import type { Config } from '../config/config.js';
import type { Findings } from './setup-findings.js';
import type { Query, ServerFacts } from './setup-source.js';

/** The publication: whether the role can create it, or whether the existing one matches the configuration. */
export async function checkPublication(q: Query, cfg: Config, s: ServerFacts, tableIdents: string[], tableOids: number[], f: Findings): Promise<boolean> {
  const [pub] = await q<{ oid: number; puballtables: boolean; pubinsert: boolean; pubupdate: boolean; pubdelete: boolean; pubtruncate: boolean }>(
    'SELECT oid::int, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = $1',
    [cfg.source.publication],
  );
  const wanted =
    cfg.source.tables.length > 0
      ? `FOR TABLE ${tableIdents.join(', ')}`
      : cfg.source.schemas.length > 0
        ? `FOR TABLES IN SCHEMA ${cfg.source.schemas.join(', ')}`
        : 'FOR ALL TABLES';
  if (pub) {
    const schemas = (
      await q<{ nspname: string }>('SELECT n.nspname FROM pg_publication_namespace pn JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE pn.pnpubid = $1', [
        pub.oid,
      ])
    ).map((r) => r.nspname);
    const rels = (await q<{ oid: number }>('SELECT prrelid::int AS oid FROM pg_publication_rel WHERE prpubid = $1', [pub.oid])).map((r) => r.oid);
    const matches =
      cfg.source.tables.length > 0
        ? !pub.puballtables && schemas.length === 0 && sameSet(rels, tableOids)
        : cfg.source.schemas.length > 0
          ? !pub.puballtables && rels.length === 0 && sameSet(schemas, cfg.source.schemas)
          : pub.puballtables;
    if (!matches) {
      f.problems.push(
        `publication ${cfg.source.publication} exists with a different definition than configured (${wanted}): change it with ALTER PUBLICATION, or DROP PUBLICATION ${cfg.source.publication} and run setup again`,
      );
    }
    if (!(pub.pubinsert && pub.pubupdate && pub.pubdelete && pub.pubtruncate)) {
      f.problems.push(
        `publication ${cfg.source.publication} does not publish every operation: ALTER PUBLICATION ${cfg.source.publication} SET (publish = 'insert, update, delete, truncate')`,
      );
    }
    await checkPublishedShape(q, cfg.source.publication, pub.oid, f);
  } else {
    if (cfg.source.tables.length === 0 && !s.rolsuper) {
      f.problems.push(`creating a publication ${wanted} needs a superuser: run setup as a superuser, or configure source.tables (tables the role owns)`);
    } else if (!s.can_create) {
      f.problems.push('the role lacks CREATE on the database (needed for CREATE PUBLICATION): GRANT CREATE ON DATABASE <db> TO <role>');
    } else if (tableOids.length > 0) {
      const notOwned = await q<{ ident: string }>(
        `SELECT format('%I.%I', n.nspname, c.relname) AS ident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid = ANY($1::oid[]) AND NOT pg_has_role(current_user, c.relowner, 'MEMBER')`,
        [tableOids],
      );
      for (const r of notOwned) f.problems.push(`the role does not own ${r.ident}: only the owner (or a superuser) can add it to a publication`);
    }
  }

  return Boolean(pub);
}

/**
 * An existing publication may publish less than every row and column of its tables, or name
 * partitions' rows by their root; the archive would then restore something other than the source,
 * silently. Such a publication is refused (the one setup creates has none of this).
 */
async function checkPublishedShape(q: Query, name: string, oid: number, f: Findings): Promise<void> {
  const [p] = await q<{ viaroot: boolean; filtered: string[]; columns: string[] }>(
    `SELECT p.pubviaroot AS viaroot,
            coalesce(array_agg(format('%I.%I', n.nspname, c.relname) ORDER BY n.nspname, c.relname) FILTER (WHERE r.prqual IS NOT NULL), '{}') AS filtered,
            coalesce(array_agg(format('%I.%I', n.nspname, c.relname) ORDER BY n.nspname, c.relname) FILTER (WHERE r.prattrs IS NOT NULL), '{}') AS columns
       FROM pg_publication p
       LEFT JOIN pg_publication_rel r ON r.prpubid = p.oid
       LEFT JOIN pg_class c ON c.oid = r.prrelid
       LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE p.oid = $1
      GROUP BY p.pubviaroot`,
    [oid],
  );
  if (!p) return;
  if (p.filtered.length > 0) {
    f.problems.push(
      `publication ${name} filters the rows of ${p.filtered.join(', ')} (a WHERE clause): changes of other rows would be missing from the archive and restores would differ from the source; publish the whole tables (ALTER PUBLICATION ${name} SET TABLE ... without WHERE), or DROP PUBLICATION ${name} and run setup again`,
    );
  }
  if (p.columns.length > 0) {
    f.problems.push(
      `publication ${name} publishes only some columns of ${p.columns.join(', ')} (a column list): restores would lose the others; publish every column (ALTER PUBLICATION ${name} SET TABLE ... without a column list), or DROP PUBLICATION ${name} and run setup again`,
    );
  }
  if (p.viaroot) {
    f.problems.push(
      `publication ${name} sets publish_via_partition_root: the stream would report partitions' rows as their root's, which restore cannot match exactly (REPLICA IDENTITY FULL rows are found by ctid, which repeats across partitions): ALTER PUBLICATION ${name} SET (publish_via_partition_root = false)`,
    );
  }
}

/**
 * What would break or be incomplete once published: unlogged tables (not captured), and tables
 * without a replica identity (their UPDATE and DELETE would fail). Returns the latter.
 */
export async function checkPublishedTables(q: Query, cfg: Config, tableOids: number[], f: Findings): Promise<string[]> {
  const [scope, scopeParams] =
    cfg.source.tables.length > 0
      ? ['c.oid = ANY($1::oid[])', [tableOids]]
      : cfg.source.schemas.length > 0
        ? ['n.nspname = ANY($1::text[])', [cfg.source.schemas]]
        : ['true', []];
  const tables = await q<{ ident: string; relreplident: string; relpersistence: string; has_pk: boolean; has_ri: boolean }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS ident, c.relreplident::text, c.relpersistence::text,
            EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_pk,
            EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) AS has_ri
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND c.relpersistence <> 't'
        AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'katya_cdp')
        AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
        AND ${scope}
      ORDER BY 1`,
    scopeParams,
  );
  const keyless: string[] = [];
  for (const t of tables) {
    if (t.relpersistence === 'u') {
      f.warnings.push(`table ${t.ident} is UNLOGGED: it writes no WAL, so its changes are not captured (ALTER TABLE ${t.ident} SET LOGGED to protect it)`);
      continue;
    }
    const noIdentity = t.relreplident === 'n' || (t.relreplident === 'd' && !t.has_pk) || (t.relreplident === 'i' && !t.has_ri);
    if (noIdentity) keyless.push(t.ident);
  }
  // A backup tool must never make the source's writes fail: publishing a table without a replica
  // identity does (its UPDATE and DELETE are refused from then on). Refused unless told what to do.
  if (keyless.length > 0) {
    if (cfg.source.keylessTables === 'full') {
      f.warnings.push(
        `setting REPLICA IDENTITY FULL on ${keyless.length} table(s) without a primary key or replica identity (${keyless.join(', ')}): their UPDATE and DELETE log whole old rows`,
      );
    } else {
      f.problems.push(
        `table(s) without a primary key or replica identity: ${keyless.join(', ')}; once published, their UPDATE and DELETE would FAIL on the source. ` +
          `Add a primary key (ALTER TABLE ... ADD PRIMARY KEY), or run setup with --replica-identity-full (source.keylessTables: full) to set REPLICA IDENTITY FULL on them, ` +
          `or leave them out (source.schemas / source.tables)`,
      );
    }
  }
  return keyless;
}

function sameSet<T>(a: T[], b: T[]): boolean {
  const sa = new Set(a);
  return sa.size === new Set(b).size && b.every((x) => sa.has(x));
}
