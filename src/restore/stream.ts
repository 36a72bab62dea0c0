import type { ListedSegment } from '../archive/catalog.js';
import { gapCrossedError, gapsCrossed, type StoredGap } from '../archive/chain.js';
import type { Keyring } from '../archive/crypto.js';
import type { BaseManifestExt } from '../base/basebackup.js';
import type { Store } from '../s3/client.js';
import type { Lsn } from '../util/lsn.js';
import { ChangeEventDecoder } from '../format/decoder.js';
import { Limiter, partitionChunks, type Prefetch, type SegmentReadStats } from './archive-source.js';
import { groupTransactionBatches, mergePartitions, type MergeStats, type ReplayItem } from './merge.js';
import { makeCut, makeWatermarkCut, type RestoreTarget } from './target.js';

// Restore's reading of the archived stream: each partition's segments, merged in commit order
// across partitions, grouped into transactions and cut at the target. The same pipeline serves
// the --xid search, the --tables check and the replay itself.

/** Where restore reads the archive: the store, the archive's root prefix, the keyring of an encrypted archive. */
export interface ArchiveAccess {
  store: Store;
  root: string;
  keyring: Keyring | undefined;
}

/** Concurrent segment downloads across all partitions. */
export function segmentLimiter(partitions: number): Limiter {
  return new Limiter(Math.max(2, Math.min(8, partitions * 2)));
}

export interface ReadOptions {
  limiter: Limiter;
  fromLsn: Lsn;
  target: RestoreTarget;
  limitLsn: Lsn;
  /** How far past the target to look for a SEQUENCES snapshot (0: not at all). */
  sequenceScanMicros: number;
  segStats?: SegmentReadStats;
  mergeStats?: MergeStats;
  position?: { lsn: Lsn; time: number };
}

/**
 * The archived transactions from `fromLsn` up to the target, in batches. Watermarks flow through
 * the merge, so a watermark past the target ends the read early. Lazy: nothing is read until the
 * result is iterated or its prefetch() is called (each partition's first downloads and first block).
 */
export function readTransactions(archive: ArchiveAccess, segLists: ListedSegment[][], o: ReadOptions): AsyncGenerator<ReplayItem[]> & { prefetch: Prefetch } {
  // One decoder for every partition: a table's changes then share one RelationInfo object, which
  // the applier compares by identity (its buffers, its catalog answers). With one decoder each, an
  // OLTP stream spread over three partitions compared column lists and asked the catalog again on
  // nearly every change.
  const decoder = new ChangeEventDecoder();
  const parts = segLists.map((segs) =>
    partitionChunks(archive.store, segs, { keyring: archive.keyring, readAhead: 2, limiter: o.limiter, stats: o.segStats, decoder }),
  );
  const sources = parts.map((s, p) => ({ partition: p, chunks: s.chunks }));
  const batches = groupTransactionBatches(
    mergePartitions(sources, { fromLsn: o.fromLsn, stats: o.mergeStats, watermarks: true }),
    makeCut(o.target, o.limitLsn),
    {
      sequenceScanMicros: o.sequenceScanMicros,
      passed: makeWatermarkCut(o.target, o.limitLsn),
      position: o.position,
    },
  );
  const prefetch: Prefetch = (onFatal) => parts.forEach((s) => s.prefetch(onFatal));
  return Object.assign(batches, { prefetch });
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
