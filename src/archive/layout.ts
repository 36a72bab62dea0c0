import { lsnKey } from '../util/lsn.js';

// The archive's object names (DESIGN.md section 4). Everything of one source database lives under
// <root> = <s3.prefix>/<database>. Keys sort by LSN (fixed-width hex), so a ListObjectsV2 with
// StartAfter jumps straight to a base's LSN: restore and prune list only the span they need, never
// the whole history (the plan for 10^7 segments).
//
//   <root>/archive.json                         topic, partitions, database, system id (setup)
//   <root>/segments/p0003/<maxLsn>-<firstOffset>-<lastOffset>-<sha256>.avro          (topic epoch 0)
//   <root>/segments/p0003/<maxLsn>-e<epoch>-<firstOffset>-<lastOffset>-<sha256>.avro (topic epoch >= 1)
//   <root>/generations/<generation>.json        a new stream generation (setup): write-once
//   <root>/gaps/<afterLsn>-<kind>-<id>.json     a recorded break in the chain of custody: write-once
//   <root>/state/p0003.json                     per-partition progress pointer (mutable)
//   <root>/bases/<lsn>/base.dump                pg_dump -Fc
//   <root>/bases/<lsn>/manifest.json            written last: a base without it is incomplete
//   <root>/bases/<lsn>-synthetic-<run>/base.dump      a base built by `cdp compact` (synthetic)
//   <root>/bases/<lsn>-synthetic-<run>/manifest.json  written last, after the dump is verified
//   <root>/restore-progress/...                 (restore's own resume cursor lives in the target db)
//
// A segment's name holds the highest commit LSN in it, its Kafka offsets and the SHA-256 of its
// bytes: the name is the catalog entry. Write-once: a retried upload of the same bytes gets the
// same name; different bytes (a re-read after a crash that cut elsewhere) get a different name and
// their duplicates are dropped by identity (commit LSN, position) at restore.

export function partitionDir(partition: number): string {
  return `p${String(partition).padStart(4, '0')}`;
}

export function segmentsPrefix(root: string, partition: number): string {
  return `${root}/segments/${partitionDir(partition)}/`;
}

export interface SegmentName {
  partition: number;
  /**
   * Topic incarnation (chain.ts): Kafka offsets restart at 0 when the topic is recreated, so a
   * partition's segments are ordered by (epoch, offset). 0 for every segment written before
   * epochs existed (their keys have no epoch field) and for the first topic of an archive.
   */
  epoch: number;
  maxLsn: number;
  firstOffset: string;
  lastOffset: string;
  sha256: string;
}

export function segmentKey(root: string, s: SegmentName): string {
  // Epoch 0 keeps the original form, so keys written before epochs existed and keys written now
  // for the same records are the same (write-once retries stay idempotent across the upgrade).
  const epoch = s.epoch > 0 ? `e${String(s.epoch).padStart(6, '0')}-` : '';
  return `${segmentsPrefix(root, s.partition)}${lsnKey(s.maxLsn)}-${epoch}${s.firstOffset.padStart(20, '0')}-${s.lastOffset.padStart(20, '0')}-${s.sha256}.avro`;
}

const SEGMENT_RE = /\/segments\/p(\d{4})\/([0-9A-F]{16})-(?:e(\d{6})-)?(\d{20})-(\d{20})-([0-9a-f]{64})\.avro$/;

export function parseSegmentKey(key: string): SegmentName | undefined {
  const m = SEGMENT_RE.exec(key);
  if (!m) return undefined;
  return {
    partition: Number(m[1]),
    epoch: m[3] ? Number(m[3]) : 0,
    maxLsn: parseInt(m[2]!, 16),
    firstOffset: String(BigInt(m[4]!)),
    lastOffset: String(BigInt(m[5]!)),
    sha256: m[6]!,
  };
}

/** StartAfter value that lists exactly the segments of a partition whose max LSN is >= lsn. */
export function segmentsStartAfter(root: string, partition: number, lsn: number): string {
  // Keys with maxLsn >= lsn sort after "<prefix><lsnKey(lsn - 1)>~" ('~' sorts after '-').
  return lsn <= 0 ? segmentsPrefix(root, partition) : `${segmentsPrefix(root, partition)}${lsnKey(lsn - 1)}~`;
}

export function statePointerKey(root: string, partition: number): string {
  return `${root}/state/${partitionDir(partition)}.json`;
}

export function archiveManifestKey(root: string): string {
  return `${root}/archive.json`;
}

export function generationsPrefix(root: string): string {
  return `${root}/generations/`;
}

export function generationKey(root: string, generation: number): string {
  return `${generationsPrefix(root)}${String(generation).padStart(6, '0')}.json`;
}

export function gapsPrefix(root: string): string {
  return `${root}/gaps/`;
}

export function gapKey(root: string, afterLsn: number, kind: string, id: string): string {
  return `${gapsPrefix(root)}${lsnKey(afterLsn)}-${kind}-${id}.json`;
}

/**
 * DDL events capture judged restore will not replay exactly (capture/ddl-check.ts), one object
 * each, written when capture sees them so that `cdp status` can show them: the operator learns of
 * one when it happens, not on the day of a restore.
 */
export function ddlRisksPrefix(root: string): string {
  return `${root}/ddl-risks/`;
}

export function ddlRiskKey(root: string, commitLsn: number, position: number): string {
  return `${ddlRisksPrefix(root)}${lsnKey(commitLsn)}-${String(position).padStart(6, '0')}.json`;
}

export function basesPrefix(root: string): string {
  return `${root}/bases/`;
}

export function baseDumpKey(root: string, lsn: number): string {
  return `${basesPrefix(root)}${lsnKey(lsn)}/base.dump`;
}

export function baseManifestKey(root: string, lsn: number): string {
  return `${basesPrefix(root)}${lsnKey(lsn)}/manifest.json`;
}

/**
 * A synthetic base (`cdp compact`): made off the source by restoring an older base plus the
 * archived changes into a scratch server and dumping that. Its own folder per compaction run, so
 * a run killed half-way leaves debris that no other run's objects share a name with.
 */
export function syntheticBaseDir(root: string, lsn: number, run: string): string {
  return `${basesPrefix(root)}${lsnKey(lsn)}-synthetic-${run}/`;
}

/** A base folder's parts: its LSN and whether it is synthetic, or undefined for another key. */
export function parseBaseKey(key: string): { dir: string; lsn: number; synthetic: boolean; file: string } | undefined {
  const m = /\/bases\/([0-9A-F]{16})(-synthetic-[0-9a-z]+)?\/([^/]+)$/.exec(key);
  if (!m) return undefined;
  return { dir: key.slice(0, key.length - m[3]!.length), lsn: parseInt(m[1]!, 16), synthetic: Boolean(m[2]), file: m[3]! };
}

/** archive.json: what setup recorded about the source and the topic. */
export interface ArchiveManifest {
  version: 1;
  database: string;
  systemId: string;
  topic: string;
  partitions: number;
  createdAt: string;
}

/** state/pNNNN.json: written by the archiver after each segment is stored (mutable pointer). */
export interface PartitionState {
  partition: number;
  /** Highest watermark LSN contained in stored segments that cover every offset before it. */
  watermarkLsn: number;
  /** Commit time (µs since epoch) belonging to that watermark. */
  watermarkTime: number;
  lastOffset: string;
  lastKey: string;
  /** Topic epoch of lastOffset/lastKey (absent in pointers written before epochs: 0). */
  epoch?: number;
  updatedAt: string;
}

/**
 * generations/<n>.json (write-once): a stream generation starts whenever setup finds the stream
 * broken under an existing archive (the slot or the topic recreated). Generation 0 is implicit:
 * an archive with no generation object (every archive written before generations existed).
 */
export interface GenerationRecord {
  version: 1;
  generation: number;
  /** Topic incarnation: incremented when the topic was recreated (offsets restart at 0). */
  topicEpoch: number;
  reason: string;
  slot: string;
  topic: string;
  /** The new slot's consistent point, or the source's WAL position when the slot was kept. */
  startLsn: number;
  createdAt: string;
}

/**
 * gaps/<afterLsn>-<kind>-<id>.json (write-once): a break in the chain of custody. Transactions
 * with commit LSN in (afterLsn, untilLsn] may be missing from the archive; those at or before
 * afterLsn are whole. A replay from a base whose LSN is <= untilLsn (or taken before detectedAt)
 * to a target after afterLsn would cross it: restore refuses it (exit 3).
 */
export interface GapRecord {
  version: 1;
  kind: 'retention' | 'topic-recreated' | 'slot-recreated' | 'offsets-backwards';
  generation: number;
  topicEpoch: number;
  partition?: number;
  /** Offsets (of topicEpoch) that no archiver received. */
  fromOffset?: string;
  toOffset?: string;
  afterLsn: number;
  afterTime: number;
  untilLsn: number;
  detectedAt: string;
  detectedAtMicros: number;
  detail: string;
}

/** bases/<lsn>/manifest.json */
export interface BaseManifest {
  version: 1;
  database: string;
  /** First LSN not contained in the dump: replay transactions with commit LSN >= lsn. */
  lsn: number;
  lsnText: string;
  /** Time the snapshot was taken, ISO 8601. */
  time: string;
  timeMicros: number;
  key: string;
  size: number;
  sha256: string;
  serverVersion: string;
  serverVersionNum: number;
  pgDumpVersion: string;
  encryption: null | { keyId: string; wrappedKey: string; iv: string; tag?: string };
  /** Present only on a base made by `cdp compact` (docs/DESIGN.md section 4, synthetic bases). */
  synthetic?: SyntheticBaseInfo;
}

/** What a synthetic base was made from and what it holds (manifest field `synthetic`). */
export interface SyntheticBaseInfo {
  version: 1;
  /** The base the compaction restored (itself synthetic or not). */
  fromBase: { lsn: number; lsnText: string; key: string; sha256: string; synthetic: boolean };
  /**
   * The newest base taken from the source (not synthetic) at the root of the chain: a gap in the
   * chain of custody is covered by a synthetic base exactly when it is covered by this one, so a
   * synthetic base never hides a break that happened after its source base.
   */
  rootBase: { lsn: number; lsnText: string; timeMicros: number; key: string };
  /** Transactions with commit LSN in [fromBase.lsn, throughLsn] were replayed (the base's lsn is throughLsn + 1). */
  throughLsn: number;
  throughLsnText: string;
  /** Segments read, per partition: count and the first and last key. */
  segments: Array<{ partition: number; count: number; first: string | null; last: string | null }>;
  transactions: number;
  changes: number;
  /** Per table "rows:hash" of the scratch database (compact/fingerprint.ts), and one digest over them. */
  fingerprints: Record<string, string>;
  fingerprintDigest: string;
  /** The dump restored into a second scratch database gave the same fingerprints; the stored object was read back. */
  verified: { restoredFingerprintsMatch: true; readBack: true };
  scratch: string;
  createdAt: string;
  seconds: number;
}

/** Header metadata key in each segment's Avro container: JSON of SegmentManifest. */
export const SEGMENT_MANIFEST_META = 'cdp.manifest';

export interface SegmentManifest {
  version: 1;
  partition: number;
  firstOffset: string;
  lastOffset: string;
  count: number;
  minLsn: number;
  maxLsn: number;
  minTime: number;
  maxTime: number;
  /** Highest watermark record in this segment (0 if none). */
  watermarkLsn: number;
  watermarkTime: number;
  codec: 'zstandard' | 'deflate';
  /** Chain of custody (absent in segments written before it: generation 0, epoch 0, unchained). */
  generation?: number;
  epoch?: number;
  /** SHA-256 of the previous segment of this partition stored by the same lane, when known. */
  prevSha256?: string;
}
