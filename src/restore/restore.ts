import { chmod, copyFile, readFile, rm } from 'node:fs/promises';
import { createWriteStream, type WriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { sleep } from '../util/retry.js';
import copyStreams from 'pg-copy-streams';
import type { CommandContext } from '../context.js';
import { archiveRoot } from '../config/config.js';
import { readArchiveManifest, restorablePoint } from '../archive/catalog.js';
import { gapCrossedError, gapsCrossed, listGaps, type StoredGap } from '../archive/chain.js';
import { loadKeyring } from '../archive/crypto.js';
import type { BaseManifestExt } from '../base/basebackup.js';
import { redactUrl } from '../util/redact.js';
import { CURSOR_SCHEMA } from './cursor.js';
import { faultValue } from '../testing/faults.js';
import { pgConnection, type PgTlsConfig } from '../pg/tls.js';
import { CdpError, ErrorCodes, pgError, toError } from '../errors.js';
import { createStore, missingBucketError } from '../s3/client.js';
import { formatLsn, microsToIso, type Lsn } from '../util/lsn.js';
import { Applier, parseTableList, sequencesSql, type SqlSink, type TableFilter } from './apply.js';
import { fractionOf, pollEvery, Progress, type ProgressTerminal } from './progress.js';
import { loadParser, SESSION_SETTINGS } from './ddl-replay.js';
import { tableOf, type DdlObjects } from './ddl-filter.js';
import { Limiter, listPartitionSegments, partitionChunks, type SegmentReadStats } from './archive-source.js';
import { downloadBase, listBaseManifests, restoreBase, writeBaseList } from './base-restore.js';
import { groupTransactionBatches, mergePartitions, type MergeStats, type ReplayItem } from './merge.js';
import { describeTarget, makeCut, makeWatermarkCut, parseTarget, xidMatches, type RestoreTarget } from './target.js';

// `cdp restore` (DESIGN.md section 5): newest base at or before the target, then the archived
// transactions with commit LSN in [base LSN, target], merged across partitions in commit order,
// deduplicated by identity, each applied atomically (G2); never beyond the restorable point (G3).

export interface RestoreOptions {
  into: string;
  time?: string;
  lsn?: string;
  xid?: number;
  latest: boolean;
  tables?: string[];
  dryRun: boolean;
  sqlFile?: string;
  force: boolean;
  jobs?: number;
  /** --ddl-override FILE: JSON {"<commit LSN>#<position>": "SQL"} run in place of DDL events restore cannot replay exactly. */
  ddlOverride?: string;
  /** --ddl-role ROLE: replay DDL as this role instead of the role that ran it on the source. */
  ddlRole?: string;
  /**
   * --trust-legacy-ddl: replay DDL captured by an earlier version (no role, whole query text) as
   * the restore role. Without it or --ddl-role, such DDL stops the restore (UNSUPPORTED).
   */
  trustLegacyDdl?: boolean;
}

/** Reads --ddl-override FILE: a JSON object mapping "<commit LSN>#<position>" (as restore's error names it) to SQL. */
export async function readDdlOverrides(file: string | undefined): Promise<Map<string, string> | undefined> {
  if (!file) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new CdpError(ErrorCodes.USAGE, `--ddl-override ${file}: ${toError(err).message}; the file must be JSON: {"<commit LSN>#<position>": "<SQL>"}`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new CdpError(ErrorCodes.USAGE, `--ddl-override ${file}: expected a JSON object {"<commit LSN>#<position>": "<SQL>"}`);
  }
  const out = new Map<string, string>();
  for (const [k, v] of Object.entries(parsed)) {
    if (!/^[0-9A-F]{1,8}\/[0-9A-F]{1,8}#\d+$/.test(k) || typeof v !== 'string') {
      throw new CdpError(
        ErrorCodes.USAGE,
        `--ddl-override ${file}: entry ${JSON.stringify(k)} must be "<commit LSN>#<position>": "<SQL>" (as the restore error names it)`,
      );
    }
    out.set(k, v);
  }
  return out;
}

/**
 * The live restore session's settings (also put back after every DDL statement). Beyond
 * SESSION_SETTINGS: synchronous_commit off (a crash of the target loses whole recent groups
 * together with their cursor update, so the resume stays exact); no hash or merge joins: batched
 * UPDATE ... FROM (VALUES ...) / DELETE ... USING (VALUES ...) join at most batchMaxRows rows against
 * the table, and without statistics (a freshly restored table has none) the planner would pick a
 * hash join over a sequential scan of the whole table for each batch.
 */
/**
 * Tables whose row writes may run code a user wrote, with their owner. Conservative: a table is
 * written as the restore's superuser only when every expression its writes evaluate uses
 * immutable functions that are PostgreSQL's own or an extension's. Flagged: CHECK constraints,
 * indexes, generated columns, partition keys and exclusion operators calling a function
 * that is outside pg_catalog and no extension's, or not immutable (pg_catalog has functions that
 * run SQL text: query_to_xml); enabled ALWAYS/REPLICA triggers and
 * any rule (both act despite session_replication_role = replica); columns of a domain or
 * composite type or arrays of them (a domain's CHECK); and every partition of a flagged
 * partitioned table (inserting into a partition checks its ancestors' keys). Restore writes their
 * rows as the owner (Applier.ownerRunner), never as its superuser.
 */
const USER_CODE_TABLES_SQL = `
  WITH RECURSIVE untrusted_fn AS (
    SELECT p.oid FROM pg_catalog.pg_proc p
     WHERE p.provolatile <> 'i'
        OR (p.pronamespace <> 'pg_catalog'::pg_catalog.regnamespace
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND e.objid = p.oid AND e.deptype = 'e'))
  ), expr AS (
    -- Stored expression trees name every function they call (FuncExpr :funcid, OpExpr
    -- :opfuncid); pg_depend does not record PostgreSQL's own (pinned) functions, so it cannot say.
    SELECT con.conrelid AS rel, con.conbin::pg_catalog.text AS t FROM pg_catalog.pg_constraint con WHERE con.conrelid <> 0 AND con.conbin IS NOT NULL
    UNION ALL SELECT i.indrelid, i.indexprs::pg_catalog.text FROM pg_catalog.pg_index i WHERE i.indexprs IS NOT NULL
    UNION ALL SELECT i.indrelid, i.indpred::pg_catalog.text FROM pg_catalog.pg_index i WHERE i.indpred IS NOT NULL
    -- Generated columns only: restore writes every column, so a plain DEFAULT is never evaluated.
    UNION ALL SELECT d.adrelid, d.adbin::pg_catalog.text FROM pg_catalog.pg_attrdef d
      JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE a.attgenerated <> ''
    UNION ALL SELECT pt.partrelid, pt.partexprs::pg_catalog.text FROM pg_catalog.pg_partitioned_table pt WHERE pt.partexprs IS NOT NULL
  ), called AS (
    SELECT e.rel, m[1]::pg_catalog.oid AS fn FROM expr e, pg_catalog.regexp_matches(e.t, ':(?:op)?funcid (\\d+)', 'g') AS m
    UNION ALL
    SELECT con.conrelid, o.oprcode::pg_catalog.oid FROM pg_catalog.pg_constraint con, pg_catalog.unnest(con.conexclop) AS x(op)
      JOIN pg_catalog.pg_operator o ON o.oid = x.op WHERE con.conexclop IS NOT NULL
  ), direct AS (
    SELECT c.oid FROM pg_catalog.pg_class c
     WHERE c.relkind IN ('r', 'p')
       AND (EXISTS (SELECT 1 FROM called k WHERE k.rel = c.oid AND k.fn IN (SELECT oid FROM untrusted_fn))
         OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND t.tgenabled IN ('A', 'R'))
         OR EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN')
         OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
                     LEFT JOIN pg_catalog.pg_type el ON el.oid = ty.typelem AND ty.typlen = -1
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                       AND (ty.typtype IN ('d', 'c') OR el.typtype IN ('d', 'c'))))
  ), flagged AS (
    SELECT oid FROM direct
    UNION
    SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN flagged f ON f.oid = i.inhparent
  )
  SELECT pg_catalog.format('%s.%s', n.nspname, c.relname) AS name, pg_catalog.pg_get_userbyid(c.relowner) AS owner
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid IN (SELECT oid FROM flagged) AND n.nspname NOT IN ('pg_catalog', 'information_schema')`;

const LIVE_SESSION_SQL = `${SESSION_SETTINGS} SET synchronous_commit = off; SET enable_hashjoin = off; SET enable_mergejoin = off;`;

function outOfRange(why: string, bases: BaseManifestExt[], point: { lsn: Lsn; time: number } | undefined): CdpError {
  const first = bases[0];
  const range =
    first && point ? `available range: ${first.lsnText} (${first.time}) .. ${formatLsn(point.lsn)} (${microsToIso(point.time)})` : 'nothing is restorable yet';
  return new CdpError(ErrorCodes.TARGET_OUT_OF_RANGE, `${why}; ${range}. Nothing was written.`, {
    details: {
      earliest: first ? { lsn: first.lsnText, time: first.time } : null,
      latest: point ? { lsn: formatLsn(point.lsn), time: microsToIso(point.time) } : null,
    },
  });
}

/** Chooses the base and the replay limit for a target, or refuses it with the available range. */
/**
 * The --sql file's header. client_encoding: the file is written in UTF-8, and psql would otherwise
 * send it in its own client encoding (PGCLIENTENCODING, the locale), garbling non-ASCII text.
 */
/** Text for a -- comment line: no line break or other control character can end the comment. */
function oneLine(s: string): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return s.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, '?');
}

export function sqlFileHeader(base: { lsnText: string; time: string; key: string }, targetText: string, baseFile = 'base.dump'): string {
  return (
    // Fields of the (unauthenticated) base manifest: one comment line each, whatever they hold.
    `-- Katya CDP replay: base ${oneLine(base.lsnText)} (${oneLine(base.time)}, ${oneLine(base.key)}) to ${oneLine(targetText)}\n` +
    `-- Restore the base first, keeping owners (DDL below runs as the role that ran it): pg_restore --exit-on-error -d <target> ${oneLine(baseFile)}\n` +
    `\\set ON_ERROR_STOP on\n${SESSION_SETTINGS}\n`
  );
}

export function planRestore(
  target: RestoreTarget,
  bases: BaseManifestExt[],
  point: { lsn: Lsn; time: number } | undefined,
  gaps: StoredGap[] = [],
): { base: BaseManifestExt; limitLsn: Lsn } {
  if (bases.length === 0) throw outOfRange('the archive has no base backup (run cdp basebackup)', bases, point);
  if (!point) throw outOfRange('the archive has no restorable point yet (is cdp archive running? every partition needs an archived watermark)', bases, point);
  // A base contains the transactions with commit LSN < base.lsn; usable for a target when all of
  // them are at or before the target.
  const usable = (pred: (b: BaseManifestExt) => boolean) => bases.filter(pred).at(-1);
  let base: BaseManifestExt | undefined;
  switch (target.kind) {
    case 'latest':
      base = usable((b) => b.lsn - 1 <= point.lsn);
      break;
    case 'lsn':
      if (target.lsn > point.lsn) throw outOfRange(`--lsn ${formatLsn(target.lsn)} is after the restorable point`, bases, point);
      base = usable((b) => b.lsn - 1 <= target.lsn);
      if (!base) throw outOfRange(`--lsn ${formatLsn(target.lsn)} is before the earliest base`, bases, point);
      break;
    case 'time':
      if (target.micros > point.time) throw outOfRange(`--time ${microsToIso(target.micros)} is after the restorable point`, bases, point);
      // base.timeMicros was read after the snapshot was exported: every transaction in the base
      // committed before it.
      base = usable((b) => b.timeMicros <= target.micros);
      if (!base) throw outOfRange(`--time ${microsToIso(target.micros)} is before the earliest base`, bases, point);
      break;
    case 'xid': {
      // An xid >= the snapshot's xmax was not yet assigned when the base was taken, so it commits
      // after it. Without that fact, the earliest base is the only safe choice.
      const x = target.xid;
      base = usable((b) => b.snapshotXmax !== undefined && x >= (x > 0xffffffff ? b.snapshotXmax : b.snapshotXmax % 2 ** 32)) ?? bases[0];
      break;
    }
  }
  if (!base) throw outOfRange('no base at or before the restorable point', bases, point);
  const limitLsn = target.kind === 'lsn' ? Math.min(target.lsn, point.lsn) : point.lsn;
  // Chain of custody (archive/chain.ts): the chosen base is the newest usable one, so when it is
  // still before a recorded gap that the replay would cross, no base can restore this target
  // exactly. An xid target is checked once its commit LSN is known (runRestore).
  if (target.kind !== 'xid') {
    const crossed = gapsCrossed(gaps, base, target.kind === 'time' ? { time: target.micros } : { lsn: limitLsn });
    if (crossed.length > 0) throw gapCrossedError(crossed, base);
  }
  return { base, limitLsn };
}

/**
 * The replay's own check of the same rule, transaction by transaction: a time target's cut is by
 * commit time, which is not strictly ordered with the LSN, so the plan's check is repeated on each
 * transaction before it is applied.
 */
export async function* guardGaps<T extends ReplayItem>(batches: AsyncIterable<T[]>, gaps: StoredGap[], base: BaseManifestExt): AsyncGenerator<T[]> {
  for await (const items of batches) {
    for (const it of items) {
      if (it.type !== 'begin') continue;
      const crossed = gapsCrossed(gaps, base, { lsn: it.txn.commitLsn });
      if (crossed.length > 0) throw gapCrossedError(crossed, base);
    }
    yield items;
  }
}

/** Notes the highest commit time among the transactions replayed (for cdp compact's synthetic base). */
export async function* trackCommitTimes<T extends ReplayItem>(batches: AsyncIterable<T[]>, seen: { maxCommitTime: number }): AsyncGenerator<T[]> {
  for await (const items of batches) {
    for (const it of items) if (it.type === 'commit' && it.txn.commitTime > seen.maxCommitTime) seen.maxCommitTime = it.txn.commitTime;
    yield items;
  }
}

/** A live session: SQL text as simple queries, two in flight so JS builds while Postgres executes. */
class PgSink implements SqlSink {
  private inflight: Array<Promise<void>> = [];
  private error: Error | undefined;
  constructor(private readonly client: pg.Client) {}
  private track(p: Promise<unknown>): void {
    this.inflight.push(
      p.then(
        () => undefined,
        (err: unknown) => {
          this.error ??= toError(err);
        },
      ),
    );
  }
  private async room(): Promise<void> {
    while (this.inflight.length >= 2) await this.inflight.shift();
    if (this.error) throw pgError('restore: applying a change failed', this.error);
  }
  async exec(sql: string): Promise<void> {
    await this.room();
    this.track(this.client.query(sql));
  }
  async copy(sql: string, data: string): Promise<void> {
    await this.room();
    const stream = this.client.query(copyStreams.from(sql));
    this.track(pipeline(Readable.from([Buffer.from(data)]), stream));
  }
  async drain(): Promise<void> {
    while (this.inflight.length > 0) await this.inflight.shift();
    if (this.error) throw pgError('restore: applying a change failed', this.error);
  }
}

/** The --sql file: the same statements, COPY data inline as psql reads it. */
class FileSink implements SqlSink {
  constructor(private readonly out: WriteStream) {}
  private async write(s: string): Promise<void> {
    if (!this.out.write(s)) await new Promise<void>((r) => this.out.once('drain', () => r()));
  }
  async exec(sql: string): Promise<void> {
    await this.write(sql);
  }
  async copy(sql: string, data: string): Promise<void> {
    await this.write(`${sql};\n${data}\\.\n`);
  }
  async drain(): Promise<void> {}
}

/** Counts without applying (--dry-run). */
class NullSink implements SqlSink {
  async exec(): Promise<void> {}
  async copy(): Promise<void> {}
  async drain(): Promise<void> {}
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

interface Cursor {
  base_lsn: string;
  target: string;
  commit_lsn: string;
  commit_time: string;
  xid: string;
  transactions: string;
  phase: string;
}

async function readCursor(c: pg.Client): Promise<Cursor | undefined> {
  const r = await c.query(`SELECT to_regclass('${CURSOR_SCHEMA}.cursor') IS NOT NULL AS present`);
  if (!r.rows[0].present) return undefined;
  const rows = await c.query<Cursor>(
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

/** A terminal for restore's progress line (the CLI passes stderr when it is a TTY). */
export type RestoreDisplay = ProgressTerminal;

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

/** What a finished restore did: the CLI prints it as one JSON line; `cdp verify --deep` embeds it. */
export type RestoreReport = Awaited<ReturnType<typeof runRestore>>;

/**
 * Restores and returns the report; throws a CdpError when the restore cannot finish. `display`,
 * when given, shows the progress line (progress.ts); otherwise progress goes to the log.
 */
export async function runRestore(ctx: CommandContext, opts: RestoreOptions, display?: RestoreDisplay) {
  const { cfg, log } = ctx;
  const started = Date.now();
  const target = parseTarget(opts);
  const ddlOverrides = await readDdlOverrides(opts.ddlOverride);
  let legacyDdlSeen = 0;
  await loadParser();
  const filter: TableFilter | undefined = opts.tables && opts.tables.length > 0 ? parseTableList(opts.tables) : undefined;
  const store = createStore(cfg, log, { signal: ctx.signal, maxElapsedMs: 120_000 });
  const root = archiveRoot(cfg);
  const keyring = loadKeyring(cfg);
  const groupDelayMs = faultValue('restore-group-delay-ms') ?? 0;

  const manifest = await readArchiveManifest(store, root);
  if (!manifest) {
    throw (
      (await missingBucketError(store)) ??
      new CdpError(
        ErrorCodes.USAGE,
        `no archive at s3://${cfg.s3.bucket}/${root}/ (archive.json missing): check s3.prefix / CDP_S3_PREFIX and the source database name`,
      )
    );
  }
  const [point, bases, gaps] = await Promise.all([
    restorablePoint(store, root, { partitions: manifest.partitions }),
    listBaseManifests(store, root, keyring),
    listGaps(store, root),
  ]);
  const planned = planRestore(target, bases, point, gaps);
  let base = planned.base;
  const limitLsn = planned.limitLsn;
  const targetText = describeTarget(target);

  let xidCommitLsn: Lsn | undefined;
  if (target.kind === 'xid') {
    // An xid says nothing about where it committed: find its commit LSN first (reading, not
    // applying), so that an unknown xid is refused before anything is written and the newest base
    // before that commit is used.
    const segs = await listPartitionSegments(store, root, manifest.partitions, base.lsn, gaps);
    const lim = new Limiter(Math.max(2, Math.min(8, manifest.partitions * 2)));
    const scan = groupTransactionBatches(
      mergePartitions(
        segs.map((ss, p) => ({ partition: p, chunks: partitionChunks(store, ss, { keyring, readAhead: 2, limiter: lim }) })),
        { fromLsn: base.lsn, watermarks: true },
      ),
      makeCut(target, limitLsn),
      { sequenceScanMicros: 0, passed: makeWatermarkCut(target, limitLsn) },
    );
    let commitLsn: Lsn | undefined;
    // Keep the search's result for the progress estimate (the replay ends at this LSN).
    for await (const items of scan) {
      for (const it of items) if (it.type === 'commit' && xidMatches(it.txn.xid, target.xid)) commitLsn = it.txn.commitLsn;
      if (commitLsn !== undefined) break;
    }
    if (commitLsn === undefined) {
      throw outOfRange(
        `--xid ${target.xid} is not among the archived transactions after base ${base.lsnText} up to the restorable point (a transaction that changed nothing has no record)`,
        bases,
        point,
      );
    }
    xidCommitLsn = commitLsn;
    base = bases.filter((b) => b.lsn - 1 <= commitLsn!).at(-1) ?? base;
    const crossed = gapsCrossed(gaps, base, { lsn: commitLsn });
    if (crossed.length > 0) throw gapCrossedError(crossed, base);
    log.info({ xid: target.xid, commitLsn: formatLsn(commitLsn), base: base.lsnText }, 'restore: transaction found');
  }

  // Resume or refuse a non-empty target, before anything is written.
  let client: pg.Client | undefined;
  let resumeFrom: Lsn | undefined;
  let resumed: Cursor | undefined;
  if (!opts.dryRun && !opts.sqlFile) {
    client = await connectTarget(opts.into, cfg.restore.tls);
    if (opts.ddlRole) {
      const r = await client.query<{ rolsuper: boolean }>('SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $1', [opts.ddlRole]);
      if (r.rows.length === 0 || r.rows[0]!.rolsuper) {
        await client.end();
        throw new CdpError(
          ErrorCodes.USAGE,
          r.rows.length === 0
            ? `--ddl-role ${opts.ddlRole}: no such role on the target; create it first`
            : `--ddl-role ${opts.ddlRole} is a superuser: DDL from the stream would run with more privilege than it had on the source; choose a role without superuser`,
        );
      }
    }
    resumed = await readCursor(client);
    if (resumed) {
      if (Number(resumed.base_lsn) !== base.lsn || resumed.target !== targetText) {
        await client.end();
        throw new CdpError(
          ErrorCodes.TARGET_NOT_EMPTY,
          `the target holds an interrupted restore from base ${formatLsn(Number(resumed.base_lsn))} to ${resumed.target}; resume it with the same target, or use a fresh database`,
        );
      }
      if (resumed.phase === 'base') {
        await client.end();
        throw new CdpError(
          ErrorCodes.TARGET_NOT_EMPTY,
          'the target holds a restore interrupted while loading its base; drop and recreate the database, then restore again',
        );
      }
      resumeFrom = Number(resumed.commit_lsn) + 1;
      log.info(
        { from: formatLsn(Number(resumed.commit_lsn)), transactions: Number(resumed.transactions) },
        'restore: resuming an interrupted restore after its last applied transaction',
      );
    } else {
      const tables = await userTables(client);
      if (tables.length > 0 && !opts.force) {
        await client.end();
        throw new CdpError(
          ErrorCodes.TARGET_NOT_EMPTY,
          `the target database is not empty (${tables.join(', ')}${tables.length === 5 ? ', ...' : ''}); restore into a fresh database, or pass --force`,
        );
      }
    }
  }

  const segStats: SegmentReadStats = { segments: 0, bytes: 0 };
  const replayed = { maxCommitTime: 0 };
  const mergeStats: MergeStats = { duplicates: 0 };
  const fromLsn = Math.max(base.lsn, resumeFrom ?? 0);
  const segLists = await listPartitionSegments(store, root, manifest.partitions, fromLsn, gaps);
  const limiter = new Limiter(Math.max(2, Math.min(8, manifest.partitions * 2)));
  const sources = segLists.map((segs, p) => ({ partition: p, chunks: partitionChunks(store, segs, { keyring, readAhead: 2, limiter, stats: segStats }) }));
  // Watermarks flow through the merge: the replay stops at the first one past the target instead of
  // reading every segment up to the restorable point (an idle stretch after the target holds only
  // heartbeats' watermarks), and progress moves through such stretches.
  const position = { lsn: fromLsn, time: base.timeMicros };
  const grouped = groupTransactionBatches(mergePartitions(sources, { fromLsn, stats: mergeStats, watermarks: true }), makeCut(target, limitLsn), {
    sequenceScanMicros: Math.max(5 * 60 * 1e6, 4 * cfg.capture.sequenceIntervalMs * 1000),
    passed: makeWatermarkCut(target, limitLsn),
    position,
  });
  // No recorded gap (the usual case): nothing to check per transaction.
  const batches = trackCommitTimes(gaps.length > 0 ? guardGaps(grouped, gaps, base) : grouped, replayed);

  const planInfo = {
    base: { lsn: base.lsnText, time: base.time, key: base.key, size: base.size, synthetic: Boolean(base.synthetic) },
    target: targetText,
    restorablePoint: { lsn: formatLsn(point!.lsn), time: microsToIso(point!.time) },
    segments: segLists.reduce((n, s) => n + s.length, 0),
  };

  let sink: SqlSink;
  let file: WriteStream | undefined;
  let baseFile: string | undefined;
  if (opts.dryRun) sink = new NullSink();
  else if (opts.sqlFile) {
    // The file holds the data: readable by its owner only (an existing file is narrowed first).
    await chmod(opts.sqlFile, 0o600).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    // The base beside it (issue 14: --sql used to leave fetching the base to the operator): the
    // stored dump, checked against its SHA-256 and decrypted, as <file>.base.dump.
    baseFile = `${opts.sqlFile}.base.dump`;
    const fetched = await downloadBase(store, base, keyring);
    try {
      await copyFile(fetched.file, baseFile);
      await chmod(baseFile, 0o600);
      await writeBaseList(cfg.basebackup.pgRestorePath, baseFile, `${opts.sqlFile}.base.list`, filter, ctx.signal);
    } finally {
      await rm(fetched.dir, { recursive: true, force: true });
    }
    file = createWriteStream(opts.sqlFile, { mode: 0o600 });
    sink = new FileSink(file);
    await sink.exec(sqlFileHeader(base, targetText, `--use-list=${opts.sqlFile}.base.list ${baseFile}`));
  } else sink = new PgSink(client!);

  // Tables whose changes may be coalesced inside a target transaction: all but those with a unique
  // index other than the replica identity, or an exclusion constraint (see Applier.netRow).
  let noReorder = new Set<string>();
  let tables = new Set<string>();
  let roles = new Set<string>();
  let userCode = new Map<string, string>();
  const readCatalog = async () => {
    roles = new Set((await client!.query<{ rolname: string }>('SELECT rolname FROM pg_catalog.pg_roles')).rows.map((x) => x.rolname));
    const t = await client!.query<{ name: string }>(
      `SELECT n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_temp%'`,
    );
    tables = new Set(t.rows.map((x) => x.name));
    const r = await client!.query<{ name: string }>(
      `SELECT DISTINCT n.nspname || '.' || c.relname AS name
         FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE i.indisexclusion
           OR (i.indisunique AND NOT (CASE c.relreplident WHEN 'i' THEN i.indisreplident ELSE i.indisprimary END))
           OR c.relreplident IN ('f', 'n')`,
    );
    noReorder = new Set(r.rows.map((x) => x.name));
    const u = await client!.query<{ name: string; owner: string }>(USER_CODE_TABLES_SQL);
    userCode = new Map(u.rows.map((x) => [x.name, x.owner]));
  };
  const applier = new Applier(sink, {
    cursor: !opts.dryRun && !opts.sqlFile,
    coalesceMaxChanges: cfg.restore.coalesceMaxChanges,
    netMaxBytes: cfg.restore.coalesceMaxBytes,
    reorderable: client ? (schema, table) => !noReorder.has(`${schema}.${table}`) : undefined,
    tableExists: client ? (schema, table) => tables.has(`${schema}.${table}`) : undefined,
    afterDdl: client ? readCatalog : undefined,
    onePerSource: Boolean(opts.sqlFile),
    filter,
    ddlOverrides,
    ddlRole: opts.ddlRole,
    trustLegacyDdl: Boolean(opts.trustLegacyDdl),
    sessionSql: client ? LIVE_SESSION_SQL : SESSION_SETTINGS,
    roleExists: client ? (role) => roles.has(role) : undefined,
    runAsOwner: client ? (schema, table) => userCode.get(`${schema}.${table}`) : undefined,
    onDdlOverridden: (ev, sql) =>
      log.warn({ xid: ev.xid, position: ev.position, commitLsn: formatLsn(ev.commitLsn), sql: sql.slice(0, 200) }, 'restore: DDL replaced by --ddl-override'),
    onLegacyDdl: (ev) => {
      if (legacyDdlSeen++ === 0) {
        log.warn(
          { xid: ev.xid, commitLsn: formatLsn(ev.commitLsn) },
          `restore: DDL captured by an earlier version (no role, whole query text) is replayed as ${opts.ddlRole ? `--ddl-role ${opts.ddlRole}` : 'the restore role (--trust-legacy-ddl)'}; run \`cdp setup\` on the source to capture DDL statement by statement with its role`,
        );
      }
    },
    onDdlSkipped: (ev) => log.debug({ commitLsn: formatLsn(ev.commitLsn), position: ev.position }, 'restore: DDL not about the chosen tables, skipped'),
  });
  const progress = new Progress({ tty: display, log: (rec, msg) => log.info(rec, msg) });
  // The replay's fraction: by LSN between where it starts and where it must end, or by commit
  // time for a --time target. Watermarks move `position` through idle stretches too.
  const endLsn = target.kind === 'xid' ? (xidCommitLsn ?? limitLsn) : limitLsn;
  const startTime = resumed ? Number(resumed.commit_time) : base.timeMicros;
  const replayFraction = () =>
    target.kind === 'time' ? fractionOf(position.time, startTime, Math.min(target.micros, point!.time)) : fractionOf(position.lsn, fromLsn, endLsn);

  let end: Extract<ReplayItem, { type: 'end' }> | undefined;
  let replayStarted: number;
  try {
    if (client && !resumed) {
      // 1. The base, downloaded and checked (size, SHA-256, envelope) before anything is written:
      // a base that cannot be read leaves the target as it was, and the same command can simply
      // run again. The cursor exists from the start of pg_restore, in phase 'base', so that a
      // restore interrupted while loading the base is recognised as such (and not mistaken for a
      // user's database) when run again.
      log.info({ base: base.lsnText, key: base.key, size: base.size }, 'restore: downloading the base');
      const dl: { written?: () => number } = {};
      progress.begin('download', () => {
        const bytes = dl.written?.() ?? 0;
        return { bytes, totalBytes: base.size, fraction: base.size ? Math.min(1, bytes / base.size) : undefined };
      });
      const { dir, file: dump } = await downloadBase(store, base, keyring, dl);
      progress.end();
      try {
        await client.query(
          `CREATE SCHEMA ${CURSOR_SCHEMA};
           CREATE TABLE ${CURSOR_SCHEMA}.cursor (base_lsn bigint NOT NULL, target text NOT NULL, commit_lsn bigint NOT NULL, commit_time bigint NOT NULL,
             xid bigint NOT NULL, end_lsn bigint NOT NULL, transactions bigint NOT NULL, phase text NOT NULL, updated_at timestamptz NOT NULL);
           INSERT INTO ${CURSOR_SCHEMA}.cursor VALUES (${base.lsn}, '${targetText.replace(/'/g, "''")}', 0, 0, 0, 0, 0, 'base', clock_timestamp());`,
        );
        log.info({ jobs: opts.jobs ?? cfg.restore.jobs }, 'restore: pg_restore');
        const targetRoles = new Set((await client.query<{ rolname: string }>('SELECT rolname FROM pg_catalog.pg_roles')).rows.map((x) => x.rolname));
        const targetVersionNum = Number((await client.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`)).rows[0]!.v);
        let ownersKept: boolean;
        let materializedViews: string[];
        // pg_restore reports no fraction: the line shows the target database growing.
        const dbSize = pollEvery(2_000, async () =>
          Number((await client.query<{ b: string }>('SELECT pg_catalog.pg_database_size(pg_catalog.current_database())::text AS b')).rows[0]!.b),
        );
        progress.begin('base', () => ({ bytes: dbSize.value || undefined }));
        try {
          ({ ownersKept, materializedViews } = await restoreBase({
            file: dump,
            dir,
            into: opts.into,
            tls: cfg.restore.tls,
            jobs: opts.jobs ?? cfg.restore.jobs,
            pgRestorePath: cfg.basebackup.pgRestorePath,
            filter,
            signal: ctx.signal,
            targetRoles,
            baseDumpVersion: base.pgDumpVersion,
            targetVersionNum,
          }));
        } catch (err) {
          const e = toError(err);
          const what = `${e.message}; the target holds part of the base: drop and recreate the database ${redactUrl(opts.into)}, then run the same command again`;
          throw err instanceof CdpError
            ? new CdpError(err.code, what, { cause: err, details: err.details })
            : new CdpError(ErrorCodes.PG_ERROR, what, { cause: err });
        } finally {
          dbSize.stop();
          progress.end();
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
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
      if (filter) {
        // --tables: a chosen table must be in the base or be created by the stream before the
        // target; otherwise (a typo) exit 2 before the replay, the cursor still in phase 'base'.
        const scan = () =>
          groupTransactionBatches(
            mergePartitions(
              segLists.map((ss, p) => ({ partition: p, chunks: partitionChunks(store, ss, { keyring, readAhead: 2, limiter }) })),
              { fromLsn, watermarks: true },
            ),
            makeCut(target, limitLsn),
            { sequenceScanMicros: 0, passed: makeWatermarkCut(target, limitLsn) },
          );
        const missing = await missingChosenTables(client, filter, scan);
        if (missing.length > 0) {
          throw new CdpError(
            ErrorCodes.USAGE,
            `--tables: ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} neither in base ${base.lsnText} nor created by the stream up to ${targetText}: check the name (schema.table; a bare name means public.<name>); the target holds the base: drop and recreate ${redactUrl(opts.into)} before restoring again`,
          );
        }
      }
      await client.query(`UPDATE ${CURSOR_SCHEMA}.cursor SET phase = 'replay', updated_at = clock_timestamp()`);
    }
    if (client) {
      // The stream already holds what the source's triggers, FK actions and defaults did; the
      // target must not do it again (docs, session_replication_role: "replica" fires only
      // ENABLE REPLICA / ALWAYS triggers; FK constraints are implemented as triggers).
      // synchronous_commit off: a crash of the target loses whole recent groups together with
      // their cursor update, so the resume stays exact.
      // Batched UPDATE ... FROM (VALUES ...) / DELETE ... USING (VALUES ...) join at most
      // batchMaxRows rows against the table; without statistics (a freshly restored table has none)
      // the planner picks a hash join over a sequential scan of the whole table for each batch.
      // A nested loop over the key index is always the right plan here.
      await client.query(LIVE_SESSION_SQL);
    }
    if (client) await readCatalog();
    progress.begin('replay', () => ({
      fraction: replayFraction(),
      changes: applier.stats.changes,
      transactions: applier.stats.transactions,
      at: position.time,
    }));
    replayStarted = Date.now();
    for await (const items of batches) {
      if (ctx.signal.aborted) break;
      const commitsBefore = applier.stats.targetCommits;
      await applier.handleBatch(items);
      // TEST-ONLY (restore-group-delay-ms, src/testing/faults.ts): slows the replay after each
      // target commit so the resume tests can interrupt it mid-way on a fast machine,
      // deterministically. Refused outside the test suite; it only adds a wait.
      if (groupDelayMs > 0 && applier.stats.targetCommits > commitsBefore) await sleep(groupDelayMs);
      const last = items[items.length - 1]!;
      if (last.type === 'end') end = last;
    }
    if (ctx.signal.aborted) {
      // Whole groups only: roll back the open one; the cursor says where to resume.
      await sink.drain().catch(() => {});
      if (client) await client.query('ROLLBACK').catch(() => {});
      const at = applier.stats.last ? formatLsn(applier.stats.last.commitLsn) : null;
      log.warn({ at }, 'restore: interrupted; run the same command again to resume');
      // Not exit 0: a script must not take a half-restored database for a finished restore.
      throw new CdpError(
        ErrorCodes.INTERRUPTED,
        `restore interrupted${at ? ` after commit LSN ${at}` : ''}; the target is incomplete: run the same command again to resume`,
      );
    }
    if (target.kind === 'xid' && !(end?.stoppedBy === 'target' && applier.stats.last !== undefined && xidMatches(applier.stats.last.xid, target.xid))) {
      throw outOfRange(
        `--xid ${target.xid} is not among the archived transactions after base ${base.lsnText} up to the restorable point (a transaction that changed nothing has no record)`,
        bases,
        point,
      );
    }
    // 2. Sequences, then the cursor goes.
    const seqSql = sequencesSql(applier.sequences);
    if (!opts.dryRun) await sink.exec(seqSql);
    if (client) await sink.exec(`DROP SCHEMA ${CURSOR_SCHEMA} CASCADE;\n`);
    await sink.drain();
  } catch (err) {
    if (client) await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    progress.end();
    if (file) await new Promise<void>((r) => file!.end(() => r()));
    if (client) await client.end().catch(() => {});
  }

  const reached =
    applier.stats.last ?? (resumed ? { commitLsn: Number(resumed.commit_lsn), commitTime: Number(resumed.commit_time), xid: Number(resumed.xid) } : undefined);
  const seconds = (Date.now() - started) / 1000;
  const report = {
    ok: true,
    mode: opts.dryRun ? 'dry-run' : opts.sqlFile ? 'sql' : 'apply',
    ...planInfo,
    segmentsRead: segStats.segments,
    bytesRead: segStats.bytes,
    duplicatesDropped: mergeStats.duplicates,
    // Commit times are not strictly ordered with LSNs: cdp compact dates a synthetic base by this.
    maxCommitTime: replayed.maxCommitTime ? microsToIso(replayed.maxCommitTime) : null,
    maxCommitTimeMicros: replayed.maxCommitTime,
    lsn: reached ? formatLsn(reached.commitLsn) : base.lsnText,
    time: reached ? microsToIso(reached.commitTime) : base.time,
    xid: reached?.xid ?? null,
    transactions: applier.stats.transactions,
    changes: applier.stats.changes,
    targetCommits: applier.stats.targetCommits,
    seconds: Math.round(seconds * 1000) / 1000,
    replaySeconds: Math.round(Date.now() - replayStarted) / 1000,
    replayChangesPerSecond: Math.round(applier.stats.changes / Math.max((Date.now() - replayStarted) / 1000, 0.001)),
    resumed: Boolean(resumed),
    sqlFile: opts.sqlFile ?? null,
    baseFile: baseFile ?? null,
  };
  return report;
}
