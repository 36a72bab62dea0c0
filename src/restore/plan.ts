import { readArchiveManifest, restorablePoint } from '../archive/catalog.js';
import { gapCrossedError, gapsCrossed, listGaps, type StoredGap } from '../archive/chain.js';
import type { BaseManifestExt } from '../base/basebackup.js';
import { CdpError, ErrorCodes } from '../errors.js';
import { missingBucketError } from '../s3/client.js';
import type { Logger } from '../util/log.js';
import { formatLsn, microsToIso, type Lsn } from '../util/lsn.js';
import { listPartitionSegments } from './archive-source.js';
import { listBaseManifests } from './base-restore.js';
import { readTransactions, segmentLimiter, type ArchiveAccess } from './stream.js';
import { describeTarget, xidMatches, type RestoreTarget } from './target.js';

// Restore's plan (DESIGN.md section 5): from the archive's manifest, its bases, its restorable
// point and its recorded gaps, the base to start from and the LSN the replay may not pass. Nothing
// is written to the target here: a target that cannot be restored is refused before anything is.

/** The newest point every partition has archived (catalog.restorablePoint). */
export interface RestorablePoint {
  lsn: Lsn;
  time: number;
}

export interface RestorePlan {
  target: RestoreTarget;
  /** The target as the cursor, the report and the messages name it (describeTarget). */
  targetText: string;
  partitions: number;
  bases: BaseManifestExt[];
  point: RestorablePoint;
  gaps: StoredGap[];
  base: BaseManifestExt;
  limitLsn: Lsn;
  /** --xid: the commit LSN of that transaction, found before anything was written. */
  xidCommitLsn: Lsn | undefined;
}

export function outOfRange(why: string, bases: BaseManifestExt[], point: RestorablePoint | undefined): CdpError {
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

/** --xid names no archived transaction after `base` (found by the plan's search, or by the replay). */
export function xidNotFound(xid: number, base: BaseManifestExt, bases: BaseManifestExt[], point: RestorablePoint | undefined): CdpError {
  return outOfRange(
    `--xid ${xid} is not among the archived transactions after base ${base.lsnText} up to the restorable point (a transaction that changed nothing has no record)`,
    bases,
    point,
  );
}

/** Chooses the base and the replay limit for a target, or refuses it with the available range. */
export function planRestore(
  target: RestoreTarget,
  bases: BaseManifestExt[],
  point: RestorablePoint | undefined,
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
  // exactly. An xid target is checked once its commit LSN is known (baseForCommit).
  if (target.kind !== 'xid') {
    const crossed = gapsCrossed(gaps, base, target.kind === 'time' ? { time: target.micros } : { lsn: limitLsn });
    if (crossed.length > 0) throw gapCrossedError(crossed, base);
  }
  return { base, limitLsn };
}

/**
 * An --xid target once its commit LSN is known: the newest base before that commit (else the one
 * the plan chose), refused when the replay from it to the commit crosses a recorded gap.
 */
export function baseForCommit(bases: BaseManifestExt[], planned: BaseManifestExt, commitLsn: Lsn, gaps: StoredGap[]): BaseManifestExt {
  const base = bases.filter((b) => b.lsn - 1 <= commitLsn).at(-1) ?? planned;
  const crossed = gapsCrossed(gaps, base, { lsn: commitLsn });
  if (crossed.length > 0) throw gapCrossedError(crossed, base);
  return base;
}

/** The commit LSN of the --xid target's transaction in the archive after `base`, by reading (not applying) the stream. */
async function findXidCommit(
  archive: ArchiveAccess,
  partitions: number,
  target: Extract<RestoreTarget, { kind: 'xid' }>,
  base: BaseManifestExt,
  limitLsn: Lsn,
  gaps: StoredGap[],
): Promise<Lsn | undefined> {
  const segs = await listPartitionSegments(archive.store, archive.root, partitions, base.lsn, gaps);
  const scan = readTransactions(archive, segs, { limiter: segmentLimiter(partitions), fromLsn: base.lsn, target, limitLsn, sequenceScanMicros: 0 });
  let commitLsn: Lsn | undefined;
  // Keep the search's result for the progress estimate (the replay ends at this LSN).
  for await (const items of scan) {
    for (const it of items) if (it.type === 'commit' && xidMatches(it.txn.xid, target.xid)) commitLsn = it.txn.commitLsn;
    if (commitLsn !== undefined) break;
  }
  return commitLsn;
}

/**
 * Reads the archive's manifest, bases, restorable point and gaps and plans the restore of
 * `target`; refuses (throws) a target that cannot be restored, before anything is written.
 */
export async function planFromArchive(archive: ArchiveAccess, target: RestoreTarget, env: { bucket: string; log: Logger }): Promise<RestorePlan> {
  const { store, root } = archive;
  const manifest = await readArchiveManifest(store, root);
  if (!manifest) {
    throw (
      (await missingBucketError(store)) ??
      new CdpError(
        ErrorCodes.USAGE,
        `no archive at s3://${env.bucket}/${root}/ (archive.json missing): check s3.prefix / CDP_S3_PREFIX and the source database name`,
      )
    );
  }
  const [point, bases, gaps] = await Promise.all([
    restorablePoint(store, root, { partitions: manifest.partitions }),
    listBaseManifests(store, root, archive.keyring),
    listGaps(store, root),
  ]);
  const planned = planRestore(target, bases, point, gaps);
  const plan: RestorePlan = {
    target,
    targetText: describeTarget(target),
    partitions: manifest.partitions,
    bases,
    // planRestore refuses an archive without a restorable point.
    point: point!,
    gaps,
    base: planned.base,
    limitLsn: planned.limitLsn,
    xidCommitLsn: undefined,
  };
  if (target.kind === 'xid') {
    // An xid says nothing about where it committed: find its commit LSN first (reading, not
    // applying), so that an unknown xid is refused before anything is written and the newest base
    // before that commit is used.
    const commitLsn = await findXidCommit(archive, plan.partitions, target, plan.base, plan.limitLsn, gaps);
    if (commitLsn === undefined) throw xidNotFound(target.xid, plan.base, bases, point);
    plan.xidCommitLsn = commitLsn;
    plan.base = baseForCommit(bases, plan.base, commitLsn, gaps);
    env.log.info({ xid: target.xid, commitLsn: formatLsn(commitLsn), base: plan.base.lsnText }, 'restore: transaction found');
  }
  return plan;
}
