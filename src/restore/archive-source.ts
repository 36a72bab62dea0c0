import { listSegments, type ListedSegment } from '../archive/catalog.js';
import type { Keyring } from '../archive/crypto.js';
import { getObject } from '../s3/client.js';
import { ChangeEventDecoder, openSegment, type FastSegment } from './fast-decode.js';
import type { ChangeEvent } from '../events/change-event.js';
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

export async function listPartitionSegments(store: Store, root: string, partitions: number, fromLsn: Lsn): Promise<ListedSegment[][]> {
  return Promise.all(
    Array.from({ length: partitions }, async (_, p) => {
      const out: ListedSegment[] = [];
      for await (const s of listSegments(store, root, p, fromLsn)) out.push(s);
      return out;
    }),
  );
}

export async function* partitionChunks(
  store: Store,
  segments: ListedSegment[],
  opts: { keyring?: Keyring; readAhead: number; limiter: Limiter; stats?: SegmentReadStats; decoder?: ChangeEventDecoder },
): AsyncGenerator<ChangeEvent[]> {
  const decoder = opts.decoder ?? new ChangeEventDecoder();
  const queue: Array<Promise<FastSegment>> = [];
  let next = 0;
  const start = () => {
    while (queue.length < opts.readAhead && next < segments.length) {
      const s = segments[next++]!;
      const p = opts.limiter.run(async () => {
        const seg = openSegment(await getObject(store, s.key), { expectedSha256: s.sha256, keyring: opts.keyring, key: s.key, decoder });
        if (opts.stats) {
          opts.stats.segments++;
          opts.stats.bytes += s.size;
        }
        // Prefetched as stored bytes with the SHA-256 already checked; blocks are decoded lazily
        // while applying, so memory holds compressed segments, not decoded ones.
        return seg;
      });
      // A rejection is observed when the consumer awaits it; keep Node from flagging it earlier.
      p.catch(() => {});
      queue.push(p);
    }
  };
  start();
  while (queue.length > 0) {
    const seg = await queue.shift()!;
    start();
    for (const b of seg.blocks()) yield b;
  }
}
