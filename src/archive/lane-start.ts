import { IntegrityError } from '../errors.js';
import type { Logger } from '../util/log.js';
import { describeGap, type CurrentGeneration } from './chain.js';
import { parseSegmentKey } from './layout.js';
import type { LaneArchive, LaneConsumer } from './lane-ports.js';
import { readValuePrefix } from './segment.js';

// Chain of custody at a lane's edges (chain.ts): where a partition must continue when a lane
// starts, and the gap marker for offsets that never reached the archive. Used by lanes.ts.

/** A started lane: after a gap (a new hash chain), continuing the stored chain exactly, or neither. */
export type LaneStart = { kind: 'gap' } | { kind: 'continues'; prevSha: string | undefined } | { kind: 'new' };

export interface LaneEdgeContext {
  archive: LaneArchive;
  consumer: LaneConsumer;
  topic: string;
  generation: CurrentGeneration;
  log: Logger;
}

/**
 * Records a hole in a partition's offsets (offsets from..to of this topic epoch never reached the
 * archive) as a gap marker; the caller breaks the lane's hash chain there. untilLsn: the highest
 * commit LSN among the records read from the hole on (capture produces a partition in commit order,
 * so a lost record committed no later than what followed it).
 */
export async function recordOffsetGap(
  c: LaneEdgeContext,
  partition: number,
  from: bigint,
  to: bigint,
  after: ReadonlyArray<{ value: Buffer | null }>,
): Promise<void> {
  let untilLsn = 0;
  for (const rec of after) {
    if (!rec.value) continue;
    try {
      untilLsn = Math.max(untilLsn, readValuePrefix(rec.value).commitLsn);
    } catch {
      // not a change event: SegmentWriter.append reports it
    }
  }
  const st = await c.archive.readPartitionState(partition);
  const gap = await c.archive.recordGap({
    kind: 'retention',
    generation: c.generation.generation,
    topicEpoch: c.generation.topicEpoch,
    partition,
    fromOffset: String(from),
    toOffset: String(to),
    afterLsn: st?.watermarkLsn ?? 0,
    afterTime: st?.watermarkTime ?? 0,
    untilLsn,
    detail: `Kafka no longer holds offsets ${from}..${to} of partition ${partition} (deleted by retention or deleteRecords before they were archived); the archive continues at offset ${to + 1n}`,
  });
  c.log.error({ partition, gap: gap.key }, `chain of custody broken, gap recorded: ${describeGap(gap)}`);
}

/**
 * A lane's first batch after a group join: where must the partition continue? At the higher of
 * the group's committed offset and the offset after the last archived one (the state pointer, in
 * this topic epoch), or at 0 when neither is known (a new topic epoch starts at 0). Kafka handing
 * us a later first offset means the records between are gone (kafkajs resets an out-of-range
 * position to the log start without telling): a gap, recorded before anything is stored. A
 * partition whose high watermark is below what the archive already holds was recreated behind
 * the archive's back: the archiver stops (cdp setup starts a new topic epoch).
 *
 * Returns undefined when the lane was revoked meanwhile; else, after `lane.started()`, how the lane
 * relates to the stored chain.
 */
export async function startLanePosition(
  c: LaneEdgeContext,
  partition: number,
  messages: ReadonlyArray<{ offset: string; value: Buffer | null }>,
  lane: { revoked(): boolean; started(): void },
): Promise<LaneStart | undefined> {
  const [pos, st] = await Promise.all([c.consumer.position(partition), c.archive.readPartitionState(partition)]);
  if (lane.revoked()) return undefined;
  const gen = c.generation;
  const sameEpoch = st !== undefined && (st.epoch ?? 0) === gen.topicEpoch && /^\d+$/.test(st.lastOffset ?? '');
  const archivedNext = sameEpoch ? BigInt(st.lastOffset) + 1n : undefined;
  if (archivedNext !== undefined && pos.high !== undefined && BigInt(pos.high) < archivedNext) {
    throw new IntegrityError(
      `partition ${partition} of topic ${c.topic} ends at offset ${pos.high}, but the archive already holds offsets up to ${archivedNext - 1n} of this topic epoch: ` +
        'the topic was deleted and created again behind the archive. Run cdp setup (it records the break and starts a new topic epoch), then start the archiver again',
      { details: { partition, high: pos.high, archived: String(archivedNext - 1n) } },
    );
  }
  let expected = archivedNext ?? 0n;
  if (pos.committed > expected) expected = pos.committed;
  const first = BigInt(messages[0]!.offset);
  let start: LaneStart = { kind: 'new' };
  lane.started();
  if (first > expected) {
    await recordOffsetGap(c, partition, expected, first - 1n, messages);
    start = { kind: 'gap' };
  } else if (sameEpoch && first === archivedNext) {
    start = { kind: 'continues', prevSha: parseSegmentKey(st.lastKey)?.sha256 };
  }
  c.log.info(
    { partition, first: String(first), expected: String(expected), low: pos.low, high: pos.high, generation: gen.generation, epoch: gen.topicEpoch },
    'archive lane started',
  );
  return start;
}
