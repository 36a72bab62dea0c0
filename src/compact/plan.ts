import { restorablePoint, type ListedSegment } from '../archive/catalog.js';
import { listGaps } from '../archive/chain.js';
import type { Keyring } from '../archive/crypto.js';
import type { SyntheticBaseInfo } from '../archive/layout.js';
import type { BaseManifestExt } from '../base/basebackup.js';
import { listBaseManifests } from '../base/manifest.js';
import { CdpError, ErrorCodes } from '../errors.js';
import { listPartitionSegments } from '../restore/archive-source.js';
import type { Store } from '../s3/client.js';

// Step 0 of cdp compact (compact.ts): choosing the point. A synthetic base is made from the newest
// base (source-taken or synthetic) through the archive's restorable point, unless there is nothing
// worth compacting: nothing archived after that base, a base at the point already, or fewer
// segment bytes than compact.minSegmentBytes.

/** What a compaction restores: from `newest` through `throughLsn`, reading `segLists`. */
export interface CompactPlan {
  newest: BaseManifestExt;
  throughLsn: number;
  /** Per partition, the segments after the newest base (restore's listing). */
  segLists: ListedSegment[][];
  segBytes: number;
  /** The source base at the root of the chain (a synthetic base names its own). */
  rootBase: SyntheticBaseInfo['rootBase'];
  /** The source's PostgreSQL major: the scratch server's. */
  major: number;
}

/** A compaction that is not worth doing: why, from which base, through which point. */
export interface CompactSkip {
  skip: string;
  newest: BaseManifestExt;
  throughLsn: number;
}

/**
 * The newest base and the point to compact through, or why not to (before any segment is listed).
 * Throws (USAGE) when there is no base or no restorable point yet.
 */
export function compactionStart(bases: BaseManifestExt[], point: { lsn: number } | undefined): { newest: BaseManifestExt; throughLsn: number; skip?: string } {
  const newest = bases.at(-1);
  if (!newest) throw new CdpError(ErrorCodes.USAGE, 'cdp compact needs a base to start from: run cdp basebackup (or cdp setup) first');
  if (!point) throw new CdpError(ErrorCodes.USAGE, 'the archive has no restorable point yet (is cdp archive running?): nothing to compact');
  const throughLsn = point.lsn;
  // A base at lsn L holds the commits below L: with L - 1 at or past the point, nothing is newer.
  if (newest.lsn - 1 >= throughLsn) return { newest, throughLsn, skip: 'nothing archived after the newest base' };
  if (bases.some((b) => b.lsn === throughLsn + 1)) return { newest, throughLsn, skip: 'a base at the restorable point exists already' };
  return { newest, throughLsn };
}

/** The plan, once the segments after the newest base are known; or why they are too few. */
export function compactionPlan(newest: BaseManifestExt, throughLsn: number, segLists: ListedSegment[][], minSegmentBytes: number): CompactPlan | CompactSkip {
  const segBytes = segLists.flat().reduce((n, s) => n + s.size, 0);
  if (segBytes < minSegmentBytes)
    return { skip: `only ${segBytes} bytes of segments follow the newest base (compact.minSegmentBytes ${minSegmentBytes})`, newest, throughLsn };
  const rootBase = newest.synthetic ? newest.synthetic.rootBase : { lsn: newest.lsn, lsnText: newest.lsnText, timeMicros: newest.timeMicros, key: newest.key };
  return { newest, throughLsn, segLists, segBytes, rootBase, major: Math.floor(newest.serverVersionNum / 10000) };
}

/** Reads the archive's restorable point, bases and segments, and chooses what to compact. */
export async function planCompaction(
  store: Store,
  root: string,
  partitions: number,
  keyring: Keyring | undefined,
  minSegmentBytes: number,
): Promise<CompactPlan | CompactSkip> {
  const [point, bases, gaps] = await Promise.all([
    restorablePoint(store, root, { partitions }),
    listBaseManifests(store, root, keyring),
    listGaps(store, root),
  ]);
  const start = compactionStart(bases, point);
  if (start.skip) return { skip: start.skip, newest: start.newest, throughLsn: start.throughLsn };
  const segLists = await listPartitionSegments(store, root, partitions, start.newest.lsn, gaps);
  return compactionPlan(start.newest, start.throughLsn, segLists, minSegmentBytes);
}

/** The segments the replay needed, per partition: up to the first whose highest LSN reaches the point. */
export function segmentsUsed(segLists: ListedSegment[][], throughLsn: number): SyntheticBaseInfo['segments'] {
  return segLists.map((segs, partition) => {
    const end = segs.findIndex((s) => s.maxLsn >= throughLsn);
    const used = end < 0 ? segs : segs.slice(0, end + 1);
    return { partition, count: used.length, first: used[0]?.key ?? null, last: used.at(-1)?.key ?? null };
  });
}
