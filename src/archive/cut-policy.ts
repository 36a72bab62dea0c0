// When a partition's open segment is cut (DESIGN.md section 1): by size, so that a segment stays
// a bounded unit of memory, upload and restore work (segmentMaxBytes of uncompressed Avro); and by
// age, so that a quiet partition's records still reach S3 within seconds (the RPO). Pure, so the
// policy is unit-tested apart from the Kafka and S3 plumbing.

export interface OpenSegmentFacts {
  count: number;
  rawBytes: number;
  /** ms timestamp of the first record appended. */
  createdAt: number;
}

export function cutReason(s: OpenSegmentFacts | undefined, now: number, limits: { maxBytes: number; maxAgeMs: number }): 'size' | 'age' | undefined {
  if (!s || s.count === 0) return undefined;
  if (s.rawBytes >= limits.maxBytes) return 'size';
  if (now - s.createdAt >= limits.maxAgeMs) return 'age';
  return undefined;
}
