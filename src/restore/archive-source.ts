import { listSegments, type ListedSegment } from '../archive/catalog.js';
import type { GapRecord } from '../archive/layout.js';
import type { Keyring } from '../archive/crypto.js';
import { readSegment, type OpenedSegment } from '../archive/segment.js';
import { CdpError, ErrorCodes, IntegrityError } from '../errors.js';
import { getObject } from '../s3/client.js';
import type { ChangeEvent } from '../format/change-event.js';
import { ChangeEventDecoder } from '../format/decoder.js';
import type { Store } from '../s3/client.js';
import type { Lsn } from '../util/lsn.js';

// Segment reading for restore: per partition, the segments whose max commit LSN is >= the base LSN,
// in offset order (catalog.listSegments), fetched ahead of the apply (up to `readAhead` per
// partition, and at most `maxConcurrent` downloads overall) so that S3 latency overlaps with the
// apply. Each segment's SHA-256 is verified (readSegment) before any of its records is returned.

/** A counting semaphore bounding concurrent downloads across partitions. */
export class Limiter {
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(private readonly max: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((r) => this.waiting.push(r));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

export interface SegmentReadStats {
  segments: number;
  bytes: number;
}

/**
 * The first offset range inside [lo, hi] that no segment of `segs` (sorted by firstOffset, as
 * listSegments returns them) covers; overlapping segments (duplicates after a crash or a
 * rebalance) are fine. Capture's producer is idempotent and not transactional, and the archiver
 * stores every record it fetches, so a partition's stored offsets have no holes: a hole is a
 * missing segment.
 */
export function findOffsetGap(
  segs: ReadonlyArray<Pick<ListedSegment, 'firstOffset' | 'lastOffset' | 'key'>>,
  lo: bigint,
  hi: bigint,
): { from: bigint; to: bigint; before?: string; after?: string } | undefined {
  let covered = lo - 1n; // every offset in [lo, covered] is in some segment seen so far
  let before: string | undefined;
  for (const s of segs) {
    const first = BigInt(s.firstOffset);
    const last = BigInt(s.lastOffset);
    if (last < lo) continue;
    if (first > hi) break;
    if (first > covered + 1n) return { from: covered + 1n, to: first - 1n, before, after: s.key };
    if (last > covered) {
      covered = last;
      before = s.key;
    }
    if (covered >= hi) return undefined;
  }
  return covered >= hi ? undefined : { from: covered + 1n, to: hi, before };
}

/**
 * Per partition, the segments a restore from fromLsn reads, in offset order. Offsets between the
 * first and the last of them must all be stored: a segment deleted or lost in the middle would
 * make its transactions vanish silently, so a hole is an IntegrityError. The listing is filtered by
 * max LSN >= fromLsn, and after a capture restart a segment can legitimately be left out (all its
 * records are older than fromLsn) between two that are read; so a hole in the filtered listing is
 * confirmed against the partition's whole listing before failing.
 */
export async function listPartitionSegments(
  store: Store,
  root: string,
  partitions: number,
  fromLsn: Lsn,
  knownGaps: ReadonlyArray<GapRecord & { key: string }> = [],
): Promise<ListedSegment[][]> {
  return Promise.all(
    Array.from({ length: partitions }, async (_, p) => {
      const out: ListedSegment[] = [];
      for await (const s of listSegments(store, root, p, fromLsn)) out.push(s);
      if (out.length < 2) return out;
      // Offsets compare within one topic epoch only (chain.ts): a recreated topic restarts at 0,
      // and the break between epochs is a recorded gap, checked by restore's plan.
      // Offsets a recorded gap names (Kafka deleted them before they were archived) are known to be
      // missing: they count as covered here, and restore's plan refuses any replay that crosses
      // them, naming the gap.
      let all: ListedSegment[] | undefined;
      for (const epoch of new Set(out.map((s) => s.epoch))) {
        const holes = knownGaps
          .filter((g) => g.partition === p && g.topicEpoch === epoch && g.fromOffset !== undefined && g.toOffset !== undefined)
          .map((g) => ({ firstOffset: g.fromOffset!, lastOffset: g.toOffset!, key: g.key }));
        const withHoles = <T extends Pick<ListedSegment, 'firstOffset' | 'lastOffset' | 'key'>>(segs: T[]) =>
          holes.length === 0
            ? segs
            : [...segs, ...holes].sort((a, b) => (BigInt(a.firstOffset) < BigInt(b.firstOffset) ? -1 : BigInt(a.firstOffset) > BigInt(b.firstOffset) ? 1 : 0));
        const run = out.filter((s) => s.epoch === epoch);
        if (run.length < 2) continue;
        const lo = BigInt(run[0]!.firstOffset);
        let hi = lo;
        for (const s of run) if (BigInt(s.lastOffset) > hi) hi = BigInt(s.lastOffset);
        if (!findOffsetGap(withHoles(run), lo, hi)) continue;
        if (!all) {
          all = [];
          for await (const s of listSegments(store, root, p, 0)) all.push(s);
        }
        const gap = findOffsetGap(withHoles(all.filter((s) => s.epoch === epoch)), lo, hi);
        if (!gap) continue;
        throw new IntegrityError(
          `partition ${p}: offsets ${gap.from}..${gap.to} are in no stored segment (between ${gap.before ?? 'the start'} and ${gap.after ?? 'the end'}); ` +
            'a segment is missing from the archive and the transactions it held would be lost: run cdp verify, and restore the missing segment from the offsite copy (cdp replicate)',
          { details: { partition: p, fromOffset: String(gap.from), toOffset: String(gap.to), before: gap.before, after: gap.after } },
        );
      }
      return out;
    }),
  );
}

/** Fetches a partition's segments ahead of their use, `readAhead` at a time. */
class SegmentPrefetch {
  private readonly queue: Array<{ segment: ListedSegment; opened: Promise<OpenedSegment> }> = [];
  private next = 0;
  constructor(
    private readonly store: Store,
    private readonly segments: ListedSegment[],
    private readonly opts: PartitionReadOptions & { decoder: ChangeEventDecoder },
  ) {}

  /** Starts downloads until `readAhead` are fetched or under way (nothing more once all are). */
  fill(): void {
    const { opts } = this;
    while (this.queue.length < opts.readAhead && this.next < this.segments.length) {
      const s = this.segments[this.next++]!;
      const p = opts.limiter.run(async () => {
        const seg = readSegment(await getObject(this.store, s.key), { expectedSha256: s.sha256, keyring: opts.keyring, key: s.key, decoder: opts.decoder });
        // Prefetched as stored bytes with the SHA-256 already checked; blocks are decoded lazily
        // while applying, so memory holds compressed segments, not decoded ones.
        return seg;
      });
      // A rejection is observed when the consumer awaits it; keep Node from flagging it earlier.
      p.catch(() => {});
      this.queue.push({ segment: s, opened: p });
    }
  }

  /** The next segment and its download, or undefined after the last. */
  shift(): { segment: ListedSegment; opened: Promise<OpenedSegment> } | undefined {
    return this.queue.shift();
  }
}

/**
 * Starts the first downloads and decodes the first block ahead of use; `onFatal` hears at once of
 * a failure the replay will meet and not get past (UNREPLAYABLE).
 */
export type Prefetch = (onFatal?: (err: unknown) => void) => void;

/** Failures of a segment that no retry changes (not S3 being unavailable, nor a shutdown). */
const UNREPLAYABLE: ReadonlySet<string> = new Set([ErrorCodes.INTEGRITY, ErrorCodes.ENCRYPTION, ErrorCodes.UNSUPPORTED]);

export interface PartitionReadOptions {
  keyring?: Keyring;
  readAhead: number;
  limiter: Limiter;
  stats?: SegmentReadStats;
  decoder?: ChangeEventDecoder;
}

/**
 * A partition's change events, one chunk per block, and `prefetch`, which starts the first
 * downloads and decodes the first block before the events are wanted: restore calls it before it
 * loads the base, so that the replay starts on decoded events instead of waiting for S3 and for a
 * block per partition (the merge needs every partition's first event before it yields one).
 * Iterating starts the downloads too.
 */
export function partitionChunks(
  store: Store,
  segments: ListedSegment[],
  opts: PartitionReadOptions,
): { chunks: AsyncIterable<ChangeEvent[]>; prefetch: Prefetch } {
  const o = { ...opts, decoder: opts.decoder ?? new ChangeEventDecoder() };
  async function* blocks(f: SegmentPrefetch): AsyncGenerator<ChangeEvent[]> {
    f.fill();
    for (let n = f.shift(); n; n = f.shift()) {
      const seg = await n.opened;
      // Counted as the replay takes it: a download dropped for a retry from the first segment, or
      // read ahead of a target the replay stops at, is not read by the restore.
      if (o.stats) {
        o.stats.segments++;
        o.stats.bytes += n.segment.size;
      }
      f.fill();
      for (const b of seg.blocks()) yield b;
    }
  }
  let gen = blocks(new SegmentPrefetch(store, segments, o));
  let closed = false;
  /** The first block, pulled by prefetch and not yet handed out. */
  let first: Promise<IteratorResult<ChangeEvent[]>> | undefined;
  let started = false;
  const it: AsyncIterator<ChangeEvent[]> = {
    next: () => {
      started = true;
      const r = first;
      first = undefined;
      if (!r) return gen.next();
      // S3 failing while the base loaded (its retries spent, maybe hours before the replay) is
      // asked again now, from the first segment, as a restore without prefetch would; nothing has
      // been handed out yet. A segment that failed its checks stays failed.
      return r.catch((err: unknown) => {
        if (closed || !(err instanceof CdpError && err.code === ErrorCodes.S3)) throw err;
        gen = blocks(new SegmentPrefetch(store, segments, o));
        return gen.next();
      });
    },
    return: (v?: unknown) => {
      // Closed: a prefetched block is never handed out after this, nor a failed one asked again.
      started = true;
      closed = true;
      first = undefined;
      return gen.return(v as undefined);
    },
  };
  const prefetch: Prefetch = (onFatal) => {
    if (started) return;
    started = true;
    first = gen.next();
    // A failure is reported to the consumer when it asks for the block; not an unhandled rejection
    // now. One the replay cannot get past (the segment failed its checks, cannot be opened, or is of
    // a format this cdp cannot read) is also told at once: restore stops the base load for it.
    first.catch((err: unknown) => {
      if (err instanceof CdpError && UNREPLAYABLE.has(err.code)) onFatal?.(err);
    });
  };
  return { chunks: { [Symbol.asyncIterator]: () => it }, prefetch };
}
