import type { Logger } from '../util/log.js';
import type { CurrentGeneration, StoredGap } from './chain.js';
import type { Keyring } from './crypto.js';
import type { CutLimits, CutReason, OpenSegmentFacts } from './cut-policy.js';
import type { GapRecord, PartitionState } from './layout.js';
import type { FinishedSegment, SegmentWriterOptions } from './segment.js';

// What the archiver's lanes (lanes.ts) need from outside, as small interfaces: the archive on S3,
// the consumer group, the options, and a fetched batch with the consumer's controls during it. The
// production adapters are in archiver.ts; the unit tests pass plain fakes.

/** What the lanes need from the archive on S3 (catalog.ts, chain.ts and upload.ts in production). */
export interface LaneArchive {
  storeSegment(key: string, bytes: Buffer, sha256: string): Promise<'created' | 'exists'>;
  readPartitionState(partition: number): Promise<PartitionState | undefined>;
  advancePartitionState(next: Omit<PartitionState, 'updatedAt'>): Promise<unknown>;
  recordGap(gap: Omit<GapRecord, 'version' | 'detectedAt' | 'detectedAtMicros'>): Promise<StoredGap>;
}

/** What the lanes need from the consumer group (the kafkajs adapter of archiver.ts in production). */
export interface LaneConsumer {
  /** Commits `offset` (the next one to read) for the partition. */
  commit(partition: number, offset: bigint): Promise<void>;
  /** Stops / restarts fetching the partition (back-pressure). */
  pause(partition: number): void;
  resume(partition: number): void;
  /** The group's committed offset (-1 when none) and the partition's low and high watermarks. */
  position(partition: number): Promise<{ committed: bigint; low?: string; high?: string }>;
}

/** The cut policy: when an open segment is cut (cut-policy.ts by default; pluggable). */
export type CutPolicy = (open: OpenSegmentFacts | undefined, now: number) => CutReason | undefined;

export interface LanesOptions {
  root: string;
  topic: string;
  log: Logger;
  keyring: Keyring | undefined;
  codec: SegmentWriterOptions['codec'];
  zstdLevel: number;
  /** The stream generation, shared with the archiver that updates it when cdp setup starts a new one. */
  generation: CurrentGeneration;
  limits: CutLimits;
  /** Defaults to cutReason of cut-policy.ts with `limits`. */
  cutPolicy?: CutPolicy;
  /** An idle lane moves its partition's pointer at most this often. */
  idlePointerIntervalMs: number;
  /** Memory bound (G4): bytes of cut segments waiting for S3, over every lane. */
  maxPendingBytes: number;
  /** Aborted when uploads must give up (a fatal error, or a final flush that timed out). */
  storeSignal: AbortSignal;
  /** Called once, on the first fatal error (the archiver stops). */
  onFatal: (err: Error) => void;
  /** Called after each segment is stored, before its offsets are committed (benchmarks, tests). */
  onSegmentStored?: (seg: FinishedSegment, key: string, storedAt: number) => void;
}

/** One fetched batch of a partition, as the lanes need it. */
export interface LaneBatch {
  partition: number;
  highWatermark: string;
  messages: ReadonlyArray<{ offset: string; value: Buffer | null }>;
}

/** The consumer's controls during a batch. */
export interface BatchControl {
  /** The record at this offset is taken (it is the next fetch position). */
  resolveOffset(offset: string): void;
  heartbeat(): Promise<void>;
  /** False once the consumer stops or the batch is stale (a rebalance). */
  running(): boolean;
}
