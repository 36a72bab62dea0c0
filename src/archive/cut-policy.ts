// When a partition's open segment is cut (DESIGN.md section 1). Pure, so the policy is unit-tested
// apart from the Kafka and S3 plumbing.
//
// A segment moves the restorable point only through the watermarks it holds (catalog.ts: a
// partition's pointer moves to the highest watermark stored), so the policy cuts where that pays:
//  - size: segmentMaxBytes of uncompressed Avro, a bounded unit of memory, upload and restore work;
//  - watermark (busy): the segment holds changes, its last record is a watermark, and its first
//    change is at least segmentMinAgeMs old. Cutting right after a watermark makes everything before
//    it restorable as soon as the upload lands; the minimum age batches a busy partition into a few
//    segments a second instead of one per watermark;
//  - age: the segment holds changes and its first change is segmentMaxAgeMs old (a watermark that
//    never comes, e.g. capture stopped mid-stream: the records still reach S3);
//  - idle: the segment holds only watermarks (an idle database: capture's heartbeat transactions
//    make watermarks and nothing else) and its first record is idleSegmentMaxAgeMs old. Nothing in
//    such a segment is replayed by a restore; it is stored only so that Kafka offsets can be
//    committed and the chain of segments stays contiguous (chain.ts: no offset is skipped, so
//    holding it back creates no gap and hides none). Meanwhile the restorable point is kept honest
//    without new objects (the archiver moves the partition pointer to the held watermark: every
//    record before it is stored, those after the last stored segment being watermarks only).

export interface OpenSegmentFacts {
  count: number;
  rawBytes: number;
  /** ms timestamp of the first record appended. */
  createdAt: number;
  /** Records other than watermarks; undefined = unknown, treated as holding changes. */
  changes?: number;
  /** ms timestamp of the first non-watermark record (when changes > 0). */
  firstChangeAt?: number;
  /** The last record appended is a watermark. */
  endsWithWatermark?: boolean;
}

export interface CutLimits {
  maxBytes: number;
  /** A segment with changes is cut this long after its first change at the latest. */
  maxAgeMs: number;
  /** A segment with changes that ends with a watermark is cut once its first change is this old (default: never early). */
  minAgeMs?: number;
  /** A watermark-only segment is cut this long after its first record (default: maxAgeMs, the old behaviour). */
  idleMaxAgeMs?: number;
}

export type CutReason = 'size' | 'watermark' | 'age' | 'idle';

export function cutReason(s: OpenSegmentFacts | undefined, now: number, limits: CutLimits): CutReason | undefined {
  if (!s || s.count === 0) return undefined;
  if (s.rawBytes >= limits.maxBytes) return 'size';
  if (s.changes === 0) return now - s.createdAt >= (limits.idleMaxAgeMs ?? limits.maxAgeMs) ? 'idle' : undefined;
  const since = s.firstChangeAt ?? s.createdAt;
  if (limits.minAgeMs !== undefined && s.endsWithWatermark && now - since >= limits.minAgeMs) return 'watermark';
  if (now - since >= limits.maxAgeMs) return 'age';
  return undefined;
}

/** The open segment holds only watermarks (nothing a restore replays). */
export function watermarkOnly(s: OpenSegmentFacts | undefined): boolean {
  return s !== undefined && s.count > 0 && s.changes === 0;
}
