import type { CommandContext } from '../context.js';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import type pg from 'pg';
import { CURSOR_SCHEMA } from './cursor.js';
import type { Prefetch } from './archive-source.js';
import { archiveRoot } from '../config/config.js';
import { loadKeyring } from '../archive/crypto.js';
import { faultValue } from '../testing/faults.js';
import { createStore } from '../s3/client.js';
import { parseTableList, type TableFilter } from './apply.js';
import { TargetCatalog } from './target-catalog.js';
import { loadParser } from './ddl-replay.js';
import { readDdlOverrides, type RestoreOptions } from './options.js';
import { planFromArchive } from './plan.js';
import { loadBase, openTarget, startLiveSession } from './prepare.js';
import { Progress, type ProgressTerminal } from './progress.js';
import { newApplier, openReplayStream, replay, replayFraction } from './replay.js';
import { restoreReport, type RestoreReport } from './report.js';
import { abandonLive, openOutput } from './sink.js';
import type { ArchiveAccess } from './stream.js';
import { parseTarget } from './target.js';

// `cdp restore` (DESIGN.md section 5): newest base at or before the target, then the archived
// transactions with commit LSN in [base LSN, target], merged across partitions in commit order,
// deduplicated by identity, each applied atomically (G2); never beyond the restorable point (G3).
// The steps live in their own modules: plan.ts (which base, up to where), prepare.ts (the target:
// resume or refuse, the base), replay.ts (the stream through the applier), report.ts.

export type { RestoreOptions } from './options.js';
export type { RestoreReport } from './report.js';
export { readDdlOverrides } from './options.js';
export { planRestore } from './plan.js';
export { missingChosenTables } from './prepare.js';
export { sqlFileHeader } from './sink.js';
export { guardGaps, trackCommitTimes } from './stream.js';

/** A terminal for restore's progress line (the CLI passes stderr when it is a TTY). */
export type RestoreDisplay = ProgressTerminal;

/**
 * Restores and returns the report; throws a CdpError when the restore cannot finish. `display`,
 * when given, shows the progress line (progress.ts); otherwise progress goes to the log.
 */
export async function runRestore(ctx: CommandContext, opts: RestoreOptions, display?: RestoreDisplay): Promise<RestoreReport> {
  const { cfg, log, signal } = ctx;
  const started = Date.now();
  const target = parseTarget(opts);
  const ddlOverrides = await readDdlOverrides(opts.ddlOverride);
  await loadParser();
  const filter: TableFilter | undefined = opts.tables && opts.tables.length > 0 ? parseTableList(opts.tables) : undefined;
  const store = createStore(cfg, log, { signal, maxElapsedMs: 120_000 });
  const archive: ArchiveAccess = { store, root: archiveRoot(cfg), keyring: loadKeyring(cfg) };
  const groupDelayMs = faultValue('restore-group-delay-ms') ?? 0;
  const plan = await planFromArchive(archive, target, { bucket: cfg.s3.bucket, log });

  // Resume or refuse a non-empty target, before anything is written.
  const opened = !opts.dryRun && !opts.sqlFile ? await openTarget(opts, cfg.restore.tls, plan, log) : undefined;
  const client = opened?.client;
  const resumed = opened?.resumed;
  const stream = await openReplayStream(archive, plan, opened?.resumeFrom, cfg.capture.sequenceIntervalMs);
  // The first segments download while the base does and loads (an S3 round trip per partition
  // less at the replay's start, when PostgreSQL would otherwise wait with nothing to apply).
  const early = prefetchFirst(stream, signal);
  const { pgRestorePath } = cfg.basebackup;
  const out = await openOutput(opts, client, { archive, base: plan.base, targetText: plan.targetText, filter, pgRestorePath, signal });
  const catalog = client ? new TargetCatalog(client) : undefined;
  const applier = newApplier(out.sink, catalog, { opts, restoreCfg: cfg.restore, filter, ddlOverrides, log });
  const progress = new Progress({ tty: display, log: (rec, msg) => log.info(rec, msg) });
  const startTime = resumed ? Number(resumed.commit_time) : plan.base.timeMicros;
  const fraction = replayFraction(plan, stream.position, { lsn: stream.fromLsn, time: startTime });

  let replayStarted: number;
  try {
    if (client && !resumed) {
      const jobs = opts.jobs ?? cfg.restore.jobs;
      await loadBaseOrStop(
        { client, archive, plan, into: opts.into, tls: cfg.restore.tls, jobs, pgRestorePath, filter, signal, log, progress, scan: stream.scan },
        early,
      );
    }
    if (client) await startLiveSession(client, catalog!);
    replayStarted = await replay({ plan, stream, applier, sink: out.sink, client, dryRun: opts.dryRun, progress, fraction, signal, groupDelayMs, log });
  } catch (err) {
    if (client) await abandonLive(out.sink, client);
    throw err;
  } finally {
    progress.end();
    if (out.file) await new Promise<void>((r) => out.file!.end(() => r()));
    if (client) await client.end().catch(() => {});
  }

  return restoreReport({
    mode: opts,
    base: plan.base,
    targetText: plan.targetText,
    point: plan.point,
    segLists: stream.segLists,
    segStats: stream.segStats,
    mergeStats: stream.mergeStats,
    maxCommitTime: stream.replayed.maxCommitTime,
    stats: applier.stats,
    resumed,
    baseFile: out.baseFile,
    started,
    replayStarted,
    now: Date.now(),
  });
}

/**
 * Starts the prefetch (ReplayStream.prefetch) and watches it: one of the first segments that fails
 * its checks stops the base load at once rather than after it (hours, for a large base), since the
 * replay would stop at that segment anyway. Not once the command itself is stopping.
 */
function prefetchFirst(stream: { prefetch: Prefetch }, signal: AbortSignal): EarlyStop {
  const stop = new AbortController();
  let fatal: Error | undefined;
  stream.prefetch((err) => {
    if (signal.aborted) return;
    fatal ??= toError(err);
    stop.abort();
  });
  return { signal: stop.signal, fatal: () => fatal };
}

interface EarlyStop {
  signal: AbortSignal;
  fatal: () => Error | undefined;
}

/** loadBase, stopped by `early` too; throws what baseLoadStopped says, or the segment's error if the load finished first. */
async function loadBaseOrStop(b: Parameters<typeof loadBase>[0], early: EarlyStop): Promise<void> {
  const signal = b.signal;
  try {
    await loadBase({ ...b, signal: AbortSignal.any([signal, early.signal]) });
  } catch (err) {
    throw await baseLoadStopped(err, early.fatal(), signal, b.client);
  }
  const fatal = early.fatal();
  if (fatal && !signal.aborted) throw fatal;
}

/**
 * What a base load that failed reports. Stopped for a first segment that failed its checks: that
 * error (exit 3), and whether the target now holds part of the base. Stopped by a signal while the
 * base downloaded (CDP_SHUTDOWN, which alone would exit 0): an interrupted restore (exit 1).
 */
async function baseLoadStopped(err: unknown, fatal: Error | undefined, signal: AbortSignal, client: pg.Client): Promise<unknown> {
  if (signal.aborted) {
    if (!(err instanceof CdpError && err.code === ErrorCodes.SHUTDOWN)) return err;
    return new CdpError(
      ErrorCodes.INTERRUPTED,
      'restore interrupted while loading the base: run the same command again (a target that holds part of the base is refused then: drop and recreate it)',
      { cause: err },
    );
  }
  if (!fatal) return err;
  const partial = await client
    .query<{ c: boolean }>(`SELECT to_regclass('${CURSOR_SCHEMA}.cursor') IS NOT NULL AS c`)
    .then((r) => r.rows[0]?.c !== false)
    .catch(() => true);
  if (!partial || !(fatal instanceof CdpError)) return fatal;
  return new CdpError(
    fatal.code,
    `${fatal.message}; the base load was stopped for it, and the target holds part of the base: drop and recreate the database before the next restore`,
    {
      cause: fatal,
    },
  );
}
