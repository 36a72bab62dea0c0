import type { BaseManifestExt } from '../base/basebackup.js';
import { formatLsn, microsToIso, type Lsn } from '../util/lsn.js';
import type { RestorablePoint } from './plan.js';

// What a finished restore did: the CLI prints it as one JSON line, `cdp verify --deep` embeds it,
// `cdp compact` dates its synthetic base by it. The field order is the JSON's.

export type RestoreReport = {
  ok: boolean;
  mode: 'dry-run' | 'sql' | 'apply';
  base: { lsn: string; time: string; key: string; size: number; synthetic: boolean };
  target: string;
  restorablePoint: { lsn: string; time: string };
  /** Segments listed for the replay. */
  segments: number;
  segmentsRead: number;
  bytesRead: number;
  duplicatesDropped: number;
  maxCommitTime: string | null;
  maxCommitTimeMicros: number;
  /** The last transaction the target holds (the base's point when none was replayed). */
  lsn: string;
  time: string;
  xid: number | null;
  transactions: number;
  changes: number;
  targetCommits: number;
  seconds: number;
  replaySeconds: number;
  replayChangesPerSecond: number;
  resumed: boolean;
  sqlFile: string | null;
  baseFile: string | null;
};

export interface ReportInput {
  mode: { dryRun: boolean; sqlFile?: string };
  base: BaseManifestExt;
  targetText: string;
  point: RestorablePoint;
  /** Segments listed for the replay, per partition. */
  segLists: ReadonlyArray<readonly unknown[]>;
  segStats: { segments: number; bytes: number };
  mergeStats: { duplicates: number };
  maxCommitTime: number;
  /** The applier's counts; `last` is the last transaction this run applied. */
  stats: { transactions: number; changes: number; targetCommits: number; last: { commitLsn: Lsn; commitTime: number; xid: number } | undefined };
  /** The cursor of the interrupted restore this run resumed (numbers as text). */
  resumed: { commit_lsn: string; commit_time: string; xid: string } | undefined;
  baseFile: string | undefined;
  /** Date.now() when the restore started, when the replay started, and now. */
  started: number;
  replayStarted: number;
  now: number;
}

/** The report of a finished restore. */
export function restoreReport(r: ReportInput): RestoreReport {
  const { base, stats, resumed } = r;
  const reached =
    stats.last ?? (resumed ? { commitLsn: Number(resumed.commit_lsn), commitTime: Number(resumed.commit_time), xid: Number(resumed.xid) } : undefined);
  const seconds = (r.now - r.started) / 1000;
  return {
    ok: true,
    mode: r.mode.dryRun ? 'dry-run' : r.mode.sqlFile ? 'sql' : 'apply',
    base: { lsn: base.lsnText, time: base.time, key: base.key, size: base.size, synthetic: Boolean(base.synthetic) },
    target: r.targetText,
    restorablePoint: { lsn: formatLsn(r.point.lsn), time: microsToIso(r.point.time) },
    segments: r.segLists.reduce((n, s) => n + s.length, 0),
    segmentsRead: r.segStats.segments,
    bytesRead: r.segStats.bytes,
    duplicatesDropped: r.mergeStats.duplicates,
    // Commit times are not strictly ordered with LSNs: cdp compact dates a synthetic base by this.
    maxCommitTime: r.maxCommitTime ? microsToIso(r.maxCommitTime) : null,
    maxCommitTimeMicros: r.maxCommitTime,
    lsn: reached ? formatLsn(reached.commitLsn) : base.lsnText,
    time: reached ? microsToIso(reached.commitTime) : base.time,
    xid: reached?.xid ?? null,
    transactions: stats.transactions,
    changes: stats.changes,
    targetCommits: stats.targetCommits,
    seconds: Math.round(seconds * 1000) / 1000,
    replaySeconds: Math.round(r.now - r.replayStarted) / 1000,
    replayChangesPerSecond: Math.round(stats.changes / Math.max((r.now - r.replayStarted) / 1000, 0.001)),
    resumed: Boolean(resumed),
    sqlFile: r.mode.sqlFile ?? null,
    baseFile: r.baseFile ?? null,
  };
}
