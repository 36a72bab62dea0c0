import { rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { BaseManifestExt } from '../base/basebackup.js';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import { pgConnection, type PgTlsConfig } from '../pg/tls.js';
import type { Logger } from '../util/log.js';
import { formatLsn, type Lsn } from '../util/lsn.js';
import { redactUrl } from '../util/redact.js';
import { faultValue } from '../testing/faults.js';
import type { TableFilter } from './apply.js';
import { downloadBase, restoreBase } from './base-restore.js';
import { LIVE_SESSION_SQL, type TargetCatalog } from './target-catalog.js';
import { CURSOR_SCHEMA } from './cursor.js';
import { tableOf, type DdlObjects } from './ddl-filter.js';
import type { ReplayItem } from './merge.js';
import type { RestorePlan } from './plan.js';
import { pollEvery, type Progress } from './progress.js';
import type { ArchiveAccess } from './stream.js';

// Preparing a live restore's target: connect, check --ddl-role, then resume an interrupted restore
// (its cursor) or refuse a target that is not empty, all before anything is written; for a fresh
// restore, load the base and open the cursor; finally set the replay session.

/** The resume cursor (_cdp_restore.cursor) as read back, numbers as text. */
export interface RestoreCursor {
  base_lsn: string;
  target: string;
  commit_lsn: string;
  commit_time: string;
  xid: string;
  transactions: string;
  phase: string;
}

async function connectTarget(url: string, tls?: PgTlsConfig): Promise<pg.Client> {
  const c = new pg.Client(pgConnection(url, tls, 'restore.tls'));
  try {
    await c.connect();
  } catch (err) {
    throw new CdpError(
      ErrorCodes.USAGE,
      `cannot connect to the target ${redactUrl(url)}: ${toError(err).message}; create the database first (createdb) and check --into`,
      { cause: err },
    );
  }
  c.on('error', () => {});
  return c;
}

async function readCursor(c: pg.Client): Promise<RestoreCursor | undefined> {
  const r = await c.query(`SELECT to_regclass('${CURSOR_SCHEMA}.cursor') IS NOT NULL AS present`);
  if (!r.rows[0].present) return undefined;
  const rows = await c.query<RestoreCursor>(
    `SELECT base_lsn::text, target, commit_lsn::text, commit_time::text, xid::text, transactions::text, phase FROM ${CURSOR_SCHEMA}.cursor`,
  );
  return rows.rows[0];
}

async function userTables(c: pg.Client): Promise<string[]> {
  const r = await c.query<{ name: string }>(
    `SELECT n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', '${CURSOR_SCHEMA}')
        AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1 LIMIT 5`,
  );
  return r.rows.map((x) => x.name);
}

/** Why --ddl-role cannot be used, given its pg_roles row on the target (undefined: no such role); undefined when it can. */
export function ddlRoleRefusal(role: string, row: { rolsuper: boolean } | undefined): CdpError | undefined {
  if (row && !row.rolsuper) return undefined;
  return new CdpError(
    ErrorCodes.USAGE,
    !row
      ? `--ddl-role ${role}: no such role on the target; create it first`
      : `--ddl-role ${role} is a superuser: DDL from the stream would run with more privilege than it had on the source; choose a role without superuser`,
  );
}

/** Why an interrupted restore found on the target cannot be resumed by this one; undefined when it can. */
export function cursorRefusal(cursor: RestoreCursor, base: BaseManifestExt, targetText: string): CdpError | undefined {
  if (Number(cursor.base_lsn) !== base.lsn || cursor.target !== targetText) {
    return new CdpError(
      ErrorCodes.TARGET_NOT_EMPTY,
      `the target holds an interrupted restore from base ${formatLsn(Number(cursor.base_lsn))} to ${cursor.target}; resume it with the same target, or use a fresh database`,
    );
  }
  if (cursor.phase === 'base') {
    return new CdpError(
      ErrorCodes.TARGET_NOT_EMPTY,
      'the target holds a restore interrupted while loading its base; drop and recreate the database, then restore again',
    );
  }
  return undefined;
}

/** A target without a cursor that already holds tables (up to 5 named, userTables): refused unless --force. */
export function notEmptyRefusal(tables: string[], force: boolean): CdpError | undefined {
  if (tables.length === 0 || force) return undefined;
  return new CdpError(
    ErrorCodes.TARGET_NOT_EMPTY,
    `the target database is not empty (${tables.join(', ')}${tables.length === 5 ? ', ...' : ''}); restore into a fresh database, or pass --force`,
  );
}

export interface OpenedTarget {
  client: pg.Client;
  /** The interrupted restore being resumed, if any. */
  resumed: RestoreCursor | undefined;
  /** Resuming: the replay starts after the cursor's last applied commit. */
  resumeFrom: Lsn | undefined;
}

/** Connects to the target; resumes an interrupted restore or refuses a non-empty target, before anything is written. */
export async function openTarget(
  opts: { into: string; ddlRole?: string; force: boolean },
  tls: PgTlsConfig | undefined,
  plan: Pick<RestorePlan, 'base' | 'targetText'>,
  log: Logger,
): Promise<OpenedTarget> {
  const client = await connectTarget(opts.into, tls);
  const refuse = async (err: CdpError): Promise<never> => {
    await client.end();
    throw err;
  };
  if (opts.ddlRole) {
    const r = await client.query<{ rolsuper: boolean }>('SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $1', [opts.ddlRole]);
    const refusal = ddlRoleRefusal(opts.ddlRole, r.rows[0]);
    if (refusal) await refuse(refusal);
  }
  const resumed = await readCursor(client);
  if (!resumed) {
    const refusal = notEmptyRefusal(await userTables(client), opts.force);
    if (refusal) await refuse(refusal);
    return { client, resumed, resumeFrom: undefined };
  }
  const refusal = cursorRefusal(resumed, plan.base, plan.targetText);
  if (refusal) await refuse(refusal);
  log.info(
    { from: formatLsn(Number(resumed.commit_lsn)), transactions: Number(resumed.transactions) },
    'restore: resuming an interrupted restore after its last applied transaction',
  );
  return { client, resumed, resumeFrom: Number(resumed.commit_lsn) + 1 };
}

/** What loading the base needs (a fresh live restore only). */
export interface BaseLoad {
  client: pg.Client;
  archive: ArchiveAccess;
  plan: RestorePlan;
  into: string;
  tls: PgTlsConfig | undefined;
  jobs: number;
  pgRestorePath: string;
  filter: TableFilter | undefined;
  signal: AbortSignal;
  log: Logger;
  progress: Progress;
  /** The archive up to the target, read without applying (the --tables check). */
  scan: () => AsyncIterable<ReplayItem[]>;
}

/**
 * 1. The base, downloaded and checked (size, SHA-256, envelope) before anything is written: a base
 * that cannot be read leaves the target as it was, and the same command can simply run again. The
 * cursor exists from the start of pg_restore, in phase 'base', so that a restore interrupted while
 * loading the base is recognised as such (and not mistaken for a user's database) when run again.
 * Ends with the cursor in phase 'replay'.
 */
export async function loadBase(b: BaseLoad): Promise<void> {
  const { client, plan } = b;
  const { base } = plan;
  b.log.info({ base: base.lsnText, key: base.key, size: base.size }, 'restore: downloading the base');
  const dl: { written?: () => number } = {};
  b.progress.begin('download', () => {
    const bytes = dl.written?.() ?? 0;
    return { bytes, totalBytes: base.size, fraction: base.size ? Math.min(1, bytes / base.size) : undefined };
  });
  // b.signal, not only the store's: restore also stops the base load when the replay could not start.
  const { dir, file: dump } = await downloadBase({ ...b.archive.store, signal: b.signal }, base, b.archive.keyring, dl);
  b.progress.end();
  try {
    // Test hook: the time a large base takes to arrive, during which the replay's first segments
    // are fetched and checked.
    const delay = faultValue('restore-base-delay-ms');
    if (delay) await sleep(delay, undefined, { signal: b.signal }).catch(() => {});
    // Stopped meanwhile (a first segment failed its checks, or a signal): nothing written yet.
    b.signal.throwIfAborted();
    await client.query(
      `CREATE SCHEMA ${CURSOR_SCHEMA};
           CREATE TABLE ${CURSOR_SCHEMA}.cursor (base_lsn bigint NOT NULL, target text NOT NULL, commit_lsn bigint NOT NULL, commit_time bigint NOT NULL,
             xid bigint NOT NULL, end_lsn bigint NOT NULL, transactions bigint NOT NULL, phase text NOT NULL, updated_at timestamptz NOT NULL);
           INSERT INTO ${CURSOR_SCHEMA}.cursor VALUES (${base.lsn}, '${plan.targetText.replace(/'/g, "''")}', 0, 0, 0, 0, 0, 'base', clock_timestamp());`,
    );
    await pgRestore(b, dump, dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  if (b.filter) await checkChosenTables(b, b.filter);
  await client.query(`UPDATE ${CURSOR_SCHEMA}.cursor SET phase = 'replay', updated_at = clock_timestamp()`);
}

/** pg_restore of the downloaded base into the target, with its progress line and what it says about owners and materialized views. */
async function pgRestore(b: BaseLoad, dump: string, dir: string): Promise<void> {
  const { client, log } = b;
  const { base } = b.plan;
  log.info({ jobs: b.jobs }, 'restore: pg_restore');
  const targetRoles = new Set((await client.query<{ rolname: string }>('SELECT rolname FROM pg_catalog.pg_roles')).rows.map((x) => x.rolname));
  const targetVersionNum = Number((await client.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`)).rows[0]!.v);
  let ownersKept: boolean;
  let materializedViews: string[];
  // pg_restore reports no fraction: the line shows the target database growing.
  const dbSize = pollEvery(2_000, async () =>
    Number((await client.query<{ b: string }>('SELECT pg_catalog.pg_database_size(pg_catalog.current_database())::text AS b')).rows[0]!.b),
  );
  b.progress.begin('base', () => ({ bytes: dbSize.value || undefined }));
  try {
    ({ ownersKept, materializedViews } = await restoreBase({
      file: dump,
      dir,
      into: b.into,
      tls: b.tls,
      jobs: b.jobs,
      pgRestorePath: b.pgRestorePath,
      filter: b.filter,
      signal: b.signal,
      targetRoles,
      baseDumpVersion: base.pgDumpVersion,
      targetVersionNum,
    }));
  } catch (err) {
    const e = toError(err);
    const what = `${e.message}; the target holds part of the base: drop and recreate the database ${redactUrl(b.into)}, then run the same command again`;
    throw err instanceof CdpError
      ? new CdpError(err.code, what, { cause: err, details: err.details })
      : new CdpError(ErrorCodes.PG_ERROR, what, { cause: err });
  } finally {
    dbSize.stop();
    b.progress.end();
  }
  if (materializedViews.length > 0) {
    log.warn(
      { materializedViews },
      "restore: materialized views are refreshed from the base's tables (pg_dump cannot carry their stored rows): one that was stale on the source holds newer rows until a REFRESH replayed from the stream",
    );
  }
  if (ownersKept) log.info("restore: base loaded with the source's owners");
  else
    log.warn(
      "restore: a role owning objects of the source is missing on the target: the base is loaded with --no-owner, so the restore role owns everything (SECURITY DEFINER functions included); create the source's roles on the target to keep ownership",
    );
}

/**
 * --tables: a chosen table must be in the base or be created by the stream before the target;
 * otherwise (a typo) exit 2 before the replay, the cursor still in phase 'base'.
 */
async function checkChosenTables(b: BaseLoad, filter: TableFilter): Promise<void> {
  const missing = await missingChosenTables(b.client, filter, b.scan);
  if (missing.length > 0) {
    throw new CdpError(
      ErrorCodes.USAGE,
      `--tables: ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} neither in base ${b.plan.base.lsnText} nor created by the stream up to ${b.plan.targetText}: check the name (schema.table; a bare name means public.<name>); the target holds the base: drop and recreate ${redactUrl(b.into)} before restoring again`,
    );
  }
}

/**
 * The chosen tables (restore --tables) that the target does not have after its base and that no
 * event of the stream up to the target creates or writes (a DDL event naming the table, or a row
 * change of it). Read only when one is missing after the base: a typo costs one scan, never a
 * silent success.
 */
export async function missingChosenTables(client: pg.Client, filter: TableFilter, scan: () => AsyncIterable<ReplayItem[]>): Promise<string[]> {
  const r = await client.query<{ name: string }>(
    `SELECT n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'f')`,
  );
  const present = new Set(r.rows.map((x) => x.name));
  const missing = new Set([...filter.tables].filter((t) => !present.has(t)));
  if (missing.size === 0) return [];
  for await (const items of scan()) {
    for (const it of items) {
      if (it.type !== 'changes') continue;
      for (const ev of it.events) {
        if (ev.schema) missing.delete(`${ev.schema}.${ev.table}`);
        if (ev.op !== 'DDL' || !ev.content) continue;
        let c: DdlObjects;
        try {
          c = JSON.parse(ev.content) as DdlObjects;
        } catch {
          continue;
        }
        for (const o of c.objects ?? []) {
          const t = tableOf(String(o.objectType ?? o.object_type ?? '').toLowerCase(), String(o.identity ?? o.object_identity ?? o.objectIdentity ?? ''));
          if (t) missing.delete(t);
        }
      }
    }
    if (missing.size === 0) return [];
  }
  return [...missing].sort();
}

/**
 * The live session for the replay, then the target's catalog as the applier needs it.
 * The stream already holds what the source's triggers, FK actions and defaults did; the
 * target must not do it again (docs, session_replication_role: "replica" fires only
 * ENABLE REPLICA / ALWAYS triggers; FK constraints are implemented as triggers).
 * synchronous_commit off: a crash of the target loses whole recent groups together with
 * their cursor update, so the resume stays exact.
 * Batched UPDATE ... FROM (VALUES ...) / DELETE ... USING (VALUES ...) join at most
 * batchMaxRows rows against the table; without statistics (a freshly restored table has none)
 * the planner picks a hash join over a sequential scan of the whole table for each batch.
 * A nested loop over the key index is always the right plan here.
 */
export async function startLiveSession(client: pg.Client, catalog: TargetCatalog): Promise<void> {
  await client.query(LIVE_SESSION_SQL);
  await catalog.read();
}
