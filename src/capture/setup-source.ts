// Setup, source database: the checks of the server, the role, the slot and the configured tables
// (the publication's in setup-publication.ts, DDL capture's in setup-ddl-capture.ts), and the one
// transaction that creates the publication and installs DDL capture. The slot is created last, by
// setup.ts.

import type pg from 'pg';
import type { Config } from '../config/config.js';
import { CdpError, ErrorCodes, pgError } from '../errors.js';
import type { Logger } from '../util/log.js';
import { checkDdlCapture, installDdlCapture } from './setup-ddl-capture.js';
import type { Findings } from './setup-findings.js';
import { checkPublication, checkPublishedTables } from './setup-publication.js';

export interface SourceState {
  superuser: boolean;
  serverVersionNum: number;
  publicationExists: boolean;
  slotExists: boolean;
  ddlCaptureInstalled: boolean;
  ddlCapturePossible: boolean;
  /** Resolved "schema"."table" names of source.tables (FOR TABLE list). */
  tableIdents: string[];
  /** Published tables without a usable replica identity (format('%I.%I')). */
  keyless: string[];
}

/** One catalog query of the checks; a failure is a CdpError naming setup. */
export type Query = <R extends pg.QueryResultRow>(text: string, values?: unknown[]) => Promise<R[]>;

export interface ServerFacts {
  wal_level: string;
  max_slots: number;
  max_senders: number;
  version_num: number;
  rolsuper: boolean;
  rolreplication: boolean;
  can_create: boolean;
  used_slots: number;
}

/** Every check of the source, in order; each adds what it finds to `f` (problems block, warnings do not). */
export async function checkSource(client: pg.Client, cfg: Config, f: Findings): Promise<SourceState | undefined> {
  const q: Query = async <R extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<R[]> => {
    try {
      return (await client.query<R>(text, values)).rows;
    } catch (err) {
      throw pgError('setup check failed', err);
    }
  };
  const s = await checkServer(q, f);
  const slotExists = await checkSlot(q, cfg, s, f);
  const { tableIdents, tableOids } = await resolveTables(q, cfg, f);
  const publicationExists = await checkPublication(q, cfg, s, tableIdents, tableOids, f);
  const ddlCaptureInstalled = await checkDdlCapture(q, s, f);
  const keyless = await checkPublishedTables(q, cfg, tableOids, f);
  await checkLargeObjects(q, f);
  return {
    superuser: s.rolsuper,
    serverVersionNum: s.version_num,
    publicationExists,
    slotExists,
    ddlCaptureInstalled,
    ddlCapturePossible: s.rolsuper,
    tableIdents,
    keyless,
  };
}

/** Server version, wal_level, WAL senders and the role's rights. */
async function checkServer(q: Query, f: Findings): Promise<ServerFacts> {
  const [s] = await q<ServerFacts>(`SELECT current_setting('wal_level') AS wal_level,
             current_setting('max_replication_slots')::int AS max_slots,
             current_setting('max_wal_senders')::int AS max_senders,
             current_setting('server_version_num')::int AS version_num,
             r.rolsuper, r.rolreplication,
             has_database_privilege(current_database(), 'CREATE') AS can_create,
             (SELECT count(*)::int FROM pg_replication_slots) AS used_slots
        FROM pg_roles r WHERE r.rolname = current_user`);
  if (!s) throw new CdpError(ErrorCodes.PG_ERROR, 'cannot read the current role from pg_roles');
  if (s.version_num < 150000) f.problems.push(`PostgreSQL ${s.version_num} is not supported: PostgreSQL 15 or newer is required`);
  if (s.wal_level !== 'logical') {
    f.problems.push(`wal_level is '${s.wal_level}', logical decoding needs 'logical': run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL`);
  }
  if (s.max_senders < 1) f.problems.push('max_wal_senders is 0: set it to at least 2 in postgresql.conf and restart PostgreSQL');
  if (!s.rolsuper && !s.rolreplication) {
    f.problems.push('the role has neither SUPERUSER nor REPLICATION: run ALTER ROLE <role> REPLICATION (needed for the slot and for capture)');
  }

  return s;
}

/** An existing slot of that name must be a logical pgoutput slot of this database; else a free slot must remain. */
async function checkSlot(q: Query, cfg: Config, s: ServerFacts, f: Findings): Promise<boolean> {
  const [slot] = await q<{ plugin: string | null; slot_type: string; database: string | null; temporary: boolean }>(
    'SELECT plugin, slot_type, database, temporary FROM pg_replication_slots WHERE slot_name = $1',
    [cfg.source.slot],
  );
  if (slot) {
    const db = (await q<{ db: string }>('SELECT current_database() AS db'))[0]!.db;
    if (slot.slot_type !== 'logical' || slot.plugin !== 'pgoutput' || slot.database !== db) {
      f.problems.push(
        `replication slot ${cfg.source.slot} exists but is ${slot.slot_type}/${slot.plugin ?? '-'} on database ${slot.database ?? '-'}, not logical/pgoutput on ${db}: choose another source.slot or drop it with SELECT pg_drop_replication_slot('${cfg.source.slot}')`,
      );
    }
  } else if (s.used_slots >= s.max_slots) {
    f.problems.push(`all ${s.max_slots} replication slots are in use (max_replication_slots): raise it and restart PostgreSQL, or drop an unused slot`);
  }

  return Boolean(slot);
}

/** Configured tables must exist; resolved to schema-qualified identifiers. Configured schemas must exist. */
async function resolveTables(q: Query, cfg: Config, f: Findings): Promise<{ tableIdents: string[]; tableOids: number[] }> {
  const tableIdents: string[] = [];
  const tableOids: number[] = [];
  for (const t of cfg.source.tables) {
    const rows = await q<{ oid: number | null; ident: string | null }>(
      `SELECT c.oid::int AS oid, format('%I.%I', n.nspname, c.relname) AS ident
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = to_regclass($1)`,
      [t],
    );
    if (!rows[0]) f.problems.push(`source.tables: table ${t} does not exist`);
    else {
      tableIdents.push(rows[0].ident!);
      tableOids.push(rows[0].oid!);
    }
  }
  for (const sch of cfg.source.schemas) {
    const rows = await q('SELECT 1 FROM pg_namespace WHERE nspname = $1', [sch]);
    if (rows.length === 0) f.problems.push(`source.schemas: schema ${sch} does not exist`);
  }

  return { tableIdents, tableOids };
}

/** Large objects are not carried by logical decoding. */
async function checkLargeObjects(q: Query, f: Findings): Promise<void> {
  const [lo] = await q<{ n: number }>('SELECT count(*)::int AS n FROM pg_largeobject_metadata');
  if (lo && lo.n > 0) {
    f.warnings.push(
      `the database holds ${lo.n} large object(s): logical decoding does not carry large objects, so their changes are not captured (base backups include them)`,
    );
  }
}

/** One transaction: the publication if missing, REPLICA IDENTITY FULL if asked, DDL capture if a superuser runs setup. */
export async function createInSource(client: pg.Client, cfg: Config, s: SourceState, log: Logger): Promise<void> {
  try {
    await client.query('BEGIN');
    // Our own DDL must not be captured by the event trigger of an earlier setup.
    await client.query(`SELECT pg_catalog.set_config('katya_cdp.skip', 'on', true)`);
    if (!s.publicationExists) {
      const pub = `"${cfg.source.publication}"`;
      const what =
        cfg.source.tables.length > 0
          ? `FOR TABLE ${s.tableIdents.join(', ')}`
          : cfg.source.schemas.length > 0
            ? `FOR TABLES IN SCHEMA ${cfg.source.schemas.map((n) => `"${n.replace(/"/g, '""')}"`).join(', ')}`
            : 'FOR ALL TABLES';
      await client.query(`CREATE PUBLICATION ${pub} ${what} WITH (publish = 'insert, update, delete, truncate')`);
      log.info({ publication: cfg.source.publication, what }, 'setup: publication created');
    }
    if (cfg.source.keylessTables === 'full') {
      for (const t of s.keyless) await client.query(`ALTER TABLE ${t} REPLICA IDENTITY FULL`);
    }
    if (s.ddlCapturePossible) await installDdlCapture(client, cfg, s.ddlCaptureInstalled, log);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw pgError('setup could not create the publication / DDL capture (nothing was changed)', err);
  }
}
