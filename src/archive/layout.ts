import { lsnKey } from '../util/lsn.js';

// The archive's object names (DESIGN.md section 4). Everything of one source database lives under
// <root> = <s3.prefix>/<database>. Keys sort by LSN (fixed-width hex), so a ListObjectsV2 with
// StartAfter jumps straight to a base's LSN: restore and prune list only the span they need, never
// the whole history (the plan for 10^7 segments).
//
//   <root>/archive.json                         topic, partitions, database, system id (setup)
//   <root>/segments/p0003/<maxLsn>-<firstOffset>-<lastOffset>-<sha256>.avro
//   <root>/state/p0003.json                     per-partition progress pointer (mutable)
//   <root>/bases/<lsn>/base.dump                pg_dump -Fc
//   <root>/bases/<lsn>/manifest.json            written last: a base without it is incomplete
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
  maxLsn: number;
  firstOffset: string;
  lastOffset: string;
  sha256: string;
}

export function segmentKey(root: string, s: SegmentName): string {
  return `${segmentsPrefix(root, s.partition)}${lsnKey(s.maxLsn)}-${s.firstOffset.padStart(20, '0')}-${s.lastOffset.padStart(20, '0')}-${s.sha256}.avro`;
}

const SEGMENT_RE = /\/segments\/p(\d{4})\/([0-9A-F]{16})-(\d{20})-(\d{20})-([0-9a-f]{64})\.avro$/;

export function parseSegmentKey(key: string): SegmentName | undefined {
  const m = SEGMENT_RE.exec(key);
  if (!m) return undefined;
  return {
    partition: Number(m[1]),
    maxLsn: parseInt(m[2]!, 16),
    firstOffset: String(BigInt(m[3]!)),
    lastOffset: String(BigInt(m[4]!)),
    sha256: m[5]!,
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

export function basesPrefix(root: string): string {
  return `${root}/bases/`;
}

export function baseDumpKey(root: string, lsn: number): string {
  return `${basesPrefix(root)}${lsnKey(lsn)}/base.dump`;
}

export function baseManifestKey(root: string, lsn: number): string {
  return `${basesPrefix(root)}${lsnKey(lsn)}/manifest.json`;
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
  updatedAt: string;
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
}
