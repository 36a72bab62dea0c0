import type pg from 'pg';
import type { ListedSegment } from '../archive/catalog.js';
import type { Config } from '../config/config.js';
import { CdpError, ErrorCodes } from '../errors.js';
import { sleep } from '../util/retry.js';
import type { Logger } from '../util/log.js';
import { formatLsn, type Lsn } from '../util/lsn.js';
import { Applier, sequencesSql, type SqlSink, type TableFilter } from './apply.js';
import { LIVE_SESSION_SQL, type TargetCatalog } from './target-catalog.js';
import { CURSOR_SCHEMA } from './cursor.js';
import { SESSION_SETTINGS } from './ddl-replay.js';
import { listPartitionSegments, type Prefetch, type SegmentReadStats } from './archive-source.js';
import type { MergeStats, ReplayItem } from './merge.js';
import type { RestoreOptions } from './options.js';
import { xidNotFound, type RestorePlan } from './plan.js';
import { fractionOf, type Progress } from './progress.js';
import { guardGaps, readTransactions, segmentLimiter, trackCommitTimes, type ArchiveAccess } from './stream.js';
import { xidMatches } from './target.js';

// The replay (DESIGN.md section 5): the archived transactions with commit LSN in [base LSN,
// target], merged across partitions in commit order, deduplicated by identity, each applied
// atomically (G2); then the sequences, and the resume cursor goes.

/** The replay's input, and what it counts while it is read (the report's figures). */
export interface ReplayStream {
  fromLsn: Lsn;
  segLists: ListedSegment[][];
  segStats: SegmentReadStats;
  mergeStats: MergeStats;
  /** The highest commit time replayed (trackCommitTimes). */
  replayed: { maxCommitTime: number };
  /** Where the replay stands, watermarks included (progress). */
  position: { lsn: Lsn; time: number };
  batches: AsyncIterable<ReplayItem[]>;
  /** Each partition's Prefetch (archive-source.ts), called before the base loads. */
  prefetch: Prefetch;
  /** The same transactions read again, without applying or counting (restore --tables' check). */
  scan: () => AsyncIterable<ReplayItem[]>;
}

/** Lists the segments from the base (or the resume point) and sets up the replay's reading; lazy. */
export async function openReplayStream(
  archive: ArchiveAccess,
  plan: RestorePlan,
  resumeFrom: Lsn | undefined,
  sequenceIntervalMs: number,
): Promise<ReplayStream> {
  const { base, target, limitLsn, gaps } = plan;
  const segStats: SegmentReadStats = { segments: 0, bytes: 0 };
  const replayed = { maxCommitTime: 0 };
  const mergeStats: MergeStats = { duplicates: 0 };
  const fromLsn = Math.max(base.lsn, resumeFrom ?? 0);
  const segLists = await listPartitionSegments(archive.store, archive.root, plan.partitions, fromLsn, gaps);
  const read = { limiter: segmentLimiter(plan.partitions), fromLsn, target, limitLsn };
  // Watermarks flow through the merge: the replay stops at the first one past the target instead of
  // reading every segment up to the restorable point (an idle stretch after the target holds only
  // heartbeats' watermarks), and progress moves through such stretches.
  const position = { lsn: fromLsn, time: base.timeMicros };
  const grouped = readTransactions(archive, segLists, {
    ...read,
    sequenceScanMicros: Math.max(5 * 60 * 1e6, 4 * sequenceIntervalMs * 1000),
    segStats,
    mergeStats,
    position,
  });
  // No recorded gap (the usual case): nothing to check per transaction.
  const batches = trackCommitTimes(gaps.length > 0 ? guardGaps(grouped, gaps, base) : grouped, replayed);
  const scan = () => readTransactions(archive, segLists, { ...read, sequenceScanMicros: 0 });
  return { fromLsn, segLists, segStats, mergeStats, replayed, position, batches, scan, prefetch: (onFatal) => grouped.prefetch(onFatal) };
}

/** The applier for this restore: live (with the target's catalog), the --sql file or the dry run. */
export function newApplier(
  sink: SqlSink,
  catalog: TargetCatalog | undefined,
  o: {
    opts: RestoreOptions;
    restoreCfg: Pick<Config['restore'], 'coalesceMaxChanges' | 'coalesceMaxBytes'>;
    filter: TableFilter | undefined;
    ddlOverrides: Map<string, string> | undefined;
    log: Logger;
  },
): Applier {
  const { opts, log } = o;
  let legacyDdlSeen = 0;
  return new Applier(sink, {
    cursor: !opts.dryRun && !opts.sqlFile,
    coalesceMaxChanges: o.restoreCfg.coalesceMaxChanges,
    netMaxBytes: o.restoreCfg.coalesceMaxBytes,
    // Tables whose changes may be coalesced inside a target transaction: all but those with a
    // unique index other than the replica identity, or an exclusion constraint (see RowWriter.netRow).
    reorderable: catalog ? (schema, table) => catalog.reorderable(schema, table) : undefined,
    inheritanceParent: catalog ? (schema, table) => catalog.inheritanceParent(schema, table) : undefined,
    arrayType: catalog ? (type) => catalog.arrayType(type) : undefined,
    tableExists: catalog ? (schema, table) => catalog.tableExists(schema, table) : undefined,
    afterDdl: catalog ? () => catalog.read() : undefined,
    onePerSource: Boolean(opts.sqlFile),
    filter: o.filter,
    ddlOverrides: o.ddlOverrides,
    ddlRole: opts.ddlRole,
    trustLegacyDdl: Boolean(opts.trustLegacyDdl),
    sessionSql: catalog ? LIVE_SESSION_SQL : SESSION_SETTINGS,
    roleExists: catalog ? (role) => catalog.roleExists(role) : undefined,
    runAsOwner: catalog ? (schema, table) => catalog.runAsOwner(schema, table) : undefined,
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
}

/**
 * The replay's fraction: by LSN between where it starts and where it must end, or by commit
 * time for a --time target. Watermarks move `position` through idle stretches too.
 */
export function replayFraction(
  plan: Pick<RestorePlan, 'target' | 'point' | 'limitLsn' | 'xidCommitLsn'>,
  position: { lsn: Lsn; time: number },
  from: { lsn: Lsn; time: number },
): () => number | undefined {
  const { target, point, limitLsn } = plan;
  const endLsn = target.kind === 'xid' ? (plan.xidCommitLsn ?? limitLsn) : limitLsn;
  return () =>
    target.kind === 'time' ? fractionOf(position.time, from.time, Math.min(target.micros, point.time)) : fractionOf(position.lsn, from.lsn, endLsn);
}

export interface ReplayRun {
  plan: RestorePlan;
  stream: ReplayStream;
  applier: Applier;
  sink: SqlSink;
  /** The live target; undefined for --sql and --dry-run. */
  client: pg.Client | undefined;
  dryRun: boolean;
  progress: Progress;
  fraction: () => number | undefined;
  signal: AbortSignal;
  /** TEST-ONLY delay after each target commit (restore-group-delay-ms). */
  groupDelayMs: number;
  log: Logger;
}

/** Applies the stream, then the sequences, and drops the cursor. Returns when the replay started (Date.now()). */
export async function replay(r: ReplayRun): Promise<number> {
  const { applier, plan } = r;
  r.progress.begin('replay', () => ({
    fraction: r.fraction(),
    changes: applier.stats.changes,
    transactions: applier.stats.transactions,
    at: r.stream.position.time,
  }));
  const replayStarted = Date.now();
  let end: Awaited<ReturnType<typeof applyAll>>;
  try {
    end = await applyAll(r);
  } catch (err) {
    // SIGTERM while the stream waits on S3 ends the download with the shutdown error, which the
    // CLI maps to exit 0: still an interrupted restore (exit 1, whole groups kept, resumable).
    if (r.signal.aborted) await interrupted(r);
    throw err;
  }
  if (r.signal.aborted) await interrupted(r);
  const target = plan.target;
  if (target.kind === 'xid' && !(end?.stoppedBy === 'target' && applier.stats.last !== undefined && xidMatches(applier.stats.last.xid, target.xid))) {
    throw xidNotFound(target.xid, plan.base, plan.bases, plan.point);
  }
  // 2. Sequences, then the cursor goes.
  const seqSql = sequencesSql(applier.sequences);
  if (!r.dryRun) await r.sink.exec(seqSql);
  // The groups committed with synchronous_commit off (prepare.ts): this last commit waits for the
  // WAL to be flushed, which covers every earlier commit, so a restore that reports success is
  // durable (a crash of the target right after it would otherwise lose its last groups and leave
  // the cursor behind, a restore to run again that nobody knows about).
  if (r.client) await r.sink.exec(`SET synchronous_commit = on; DROP SCHEMA ${CURSOR_SCHEMA} CASCADE;\n`);
  await r.sink.drain();
  return replayStarted;
}

/** The replay loop: every batch through the applier until the stream ends or the signal aborts. */
async function applyAll(r: ReplayRun): Promise<Extract<ReplayItem, { type: 'end' }> | undefined> {
  const { applier } = r;
  let end: Extract<ReplayItem, { type: 'end' }> | undefined;
  for await (const items of r.stream.batches) {
    if (r.signal.aborted) break;
    const commitsBefore = applier.stats.targetCommits;
    await applier.handleBatch(items);
    // TEST-ONLY (restore-group-delay-ms, src/testing/faults.ts): slows the replay after each
    // target commit so the resume tests can interrupt it mid-way on a fast machine,
    // deterministically. Refused outside the test suite; it only adds a wait.
    if (r.groupDelayMs > 0 && applier.stats.targetCommits > commitsBefore) await sleep(r.groupDelayMs);
    const last = items[items.length - 1]!;
    if (last.type === 'end') end = last;
  }
  return end;
}

/**
 * Where a live target stands after its open group is rolled back: the cursor of the last committed
 * group (the open one may have handled many more transactions), or null when the session cannot say.
 */
async function committedAt(client: pg.Client): Promise<string | null> {
  await client.query('ROLLBACK').catch(() => {});
  const c = await client.query<{ l: string }>(`SELECT commit_lsn::text AS l FROM ${CURSOR_SCHEMA}.cursor`).catch(() => undefined);
  const l = c?.rows[0]?.l;
  return l !== undefined && Number(l) > 0 ? formatLsn(Number(l)) : null;
}

/** An interrupted replay: whole groups only, so the open one is rolled back; the cursor says where to resume. */
async function interrupted(r: ReplayRun): Promise<never> {
  await r.sink.drain().catch(() => {});
  const at = r.client ? await committedAt(r.client) : r.applier.stats.last ? formatLsn(r.applier.stats.last.commitLsn) : null;
  r.log.warn({ at }, 'restore: interrupted; run the same command again to resume');
  // Not exit 0: a script must not take a half-restored database for a finished restore.
  throw new CdpError(
    ErrorCodes.INTERRUPTED,
    `restore interrupted${at ? ` after commit LSN ${at}` : ''}; the target is incomplete: run the same command again to resume`,
  );
}
