import { compareIdentity, isDataOp, type ChangeEvent } from '../format/change-event.js';
import { IntegrityError } from '../errors.js';
import { formatLsn, type Lsn } from '../util/lsn.js';
import type { CutDecision, TxnHeader } from './target.js';

// From per-partition segment streams to one stream of whole source transactions in commit order.
// Pure: no I/O, events arrive as async iterables of chunks (a chunk = the events of one segment or
// part of one), so the inner loops stay synchronous and cheap.
//
// 1. Per partition, in offset order, a record whose identity (commitLsn, position) is <= the last
//    identity already taken from that partition is a duplicate: overlapping segments (a re-read
//    after an archiver crash) and capture replays after a crash (which re-send a prefix of what
//    Kafka already holds) both produce only such records (G2).
// 2. K-way merge of the partitions by identity; records of transactions before the base's LSN are
//    skipped (the base already contains them: the exported snapshot sees exactly the transactions
//    whose commit record LSN < consistent_point). WATERMARK records are skipped, or (option
//    `watermarks`) merged as if their identity were (commitLsn, +infinity): a watermark C leaves
//    the merge only once every partition's next record is past C, so it says that every record
//    with commit LSN <= C has been emitted. Capture writes one after each acknowledged transaction,
//    heartbeats included (which leave no other record): the only sign of progress in an idle
//    stretch, and what lets the grouping stop at a target without reading the archive to its end.
// 3. Grouping: a transaction is the run of records with one commitLsn; its COMMIT marker (position =
//    number of data records) must close it, else the archive is not complete there (IntegrityError).

/** A pull cursor over one partition's chunks; dedups by identity as it goes. */
class PartitionCursor {
  /** The current chunk; a slot is cleared once its event is taken (see take). */
  private chunk: Array<ChangeEvent | undefined> = [];
  private idx = 0;
  private last: { commitLsn: number; position: number } | undefined;
  done = false;
  duplicates = 0;
  constructor(
    readonly partition: number,
    private readonly it: AsyncIterator<ChangeEvent[]>,
    private readonly fromLsn: Lsn,
    private readonly watermarks = false,
  ) {}

  /** The current head, or undefined when the chunk is used up (call fill()). */
  head(): ChangeEvent | undefined {
    while (this.idx < this.chunk.length) {
      const ev = this.chunk[this.idx]!;
      if (ev.commitLsn < this.fromLsn) {
        this.idx++;
        continue;
      }
      if (ev.op === 'WATERMARK') {
        // Not a change: no identity of its own, never a duplicate, never moves `last`.
        if (this.watermarks) return ev;
        this.idx++;
        continue;
      }
      if (this.last && compareIdentity(ev, this.last) <= 0) {
        this.duplicates++;
        this.idx++;
        continue;
      }
      return ev;
    }
    return undefined;
  }

  take(): ChangeEvent {
    const ev = this.chunk[this.idx]!;
    // Dropped from the chunk: a decoded block lasts while the merge interleaves the other
    // partitions (~20,000 events), and events it kept alive that long survived young-generation
    // collections and were copied and promoted, though the applier was long done with most of them.
    this.chunk[this.idx++] = undefined;
    // The event itself (no copy per event): nothing changes an event's identity after decode.
    if (ev.op !== 'WATERMARK') this.last = ev;
    return ev;
  }

  async close(): Promise<void> {
    if (!this.done) {
      this.done = true;
      await this.it.return?.();
    }
  }

  /** Loads the next chunk; false when the partition is exhausted. */
  async fill(): Promise<boolean> {
    while (!this.done) {
      if (this.head() !== undefined) return true;
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        return false;
      }
      this.chunk = r.value;
      this.idx = 0;
    }
    return false;
  }
}

export interface MergeStats {
  duplicates: number;
}

/** Merge order: identity, a watermark after every record of its commit LSN. */
function compareMerged(a: ChangeEvent, b: ChangeEvent): number {
  const aw = a.op === 'WATERMARK';
  const bw = b.op === 'WATERMARK';
  if (!aw && !bw) return compareIdentity(a, b);
  return a.commitLsn - b.commitLsn || (aw ? (bw ? 0 : 1) : -1);
}

/**
 * Merges partitions by identity, deduplicated. Yields chunks of up to `chunkSize` events, and
 * whatever it holds before it waits for a partition's next segment (so that a consumer that has
 * seen enough can stop before more is read). Small binary heap over the cursors' heads: O(log P)
 * per event.
 */
export async function* mergePartitions(
  sources: Array<{ partition: number; chunks: AsyncIterable<ChangeEvent[]> }>,
  opts: { fromLsn: Lsn; chunkSize?: number; stats?: MergeStats; watermarks?: boolean },
): AsyncGenerator<ChangeEvent[]> {
  const chunkSize = opts.chunkSize ?? 2048;
  const cursors = sources.map((s) => new PartitionCursor(s.partition, s.chunks[Symbol.asyncIterator](), opts.fromLsn, opts.watermarks));
  const heap: PartitionCursor[] = [];
  const less = (a: PartitionCursor, b: PartitionCursor) => {
    const c = compareMerged(a.head()!, b.head()!);
    return c < 0 || (c === 0 && a.partition < b.partition);
  };
  const up = (i: number) => {
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!less(heap[i]!, heap[p]!)) break;
      [heap[i], heap[p]] = [heap[p]!, heap[i]!];
      i = p;
    }
  };
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && less(heap[l]!, heap[m]!)) m = l;
      if (r < heap.length && less(heap[r]!, heap[m]!)) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m]!, heap[i]!];
      i = m;
    }
  };
  // Fill all cursors concurrently (their segment fetches overlap).
  const filled = await Promise.all(cursors.map((c) => c.fill()));
  cursors.forEach((c, i) => {
    if (filled[i]) {
      heap.push(c);
      up(heap.length - 1);
    }
  });
  let out: ChangeEvent[] = [];
  try {
    while (heap.length > 0) {
      const top = heap[0]!;
      const ev = top.take();
      // The same identity in two partitions is a capture bug (an identity is produced once);
      // drop it as a duplicate rather than applying a change twice, but count it.
      out.push(ev);
      if (top.head() === undefined && out.length > 0) {
        // The next fill may download a segment: hand over what is merged first.
        yield out;
        out = [];
      }
      if (top.head() === undefined && !(await top.fill())) {
        const lastCursor = heap.pop()!;
        if (heap.length > 0 && lastCursor !== top) {
          heap[0] = lastCursor;
          down(0);
        }
      } else {
        down(0);
      }
      if (out.length >= chunkSize) {
        yield out;
        out = [];
      }
    }
    if (out.length > 0) yield out;
  } finally {
    if (opts.stats) opts.stats.duplicates = cursors.reduce((n, c) => n + c.duplicates, 0);
    // Stop the partition readers (and their read-ahead) when the consumer stops early.
    await Promise.all(cursors.map((c) => c.close()));
  }
}

/** One item of the replay stream. `changes` of one transaction arrive between begin and commit. */
export type ReplayItem =
  | { type: 'begin'; txn: TxnHeader }
  | { type: 'changes'; events: ChangeEvent[] }
  | { type: 'commit'; txn: TxnHeader; endLsn: Lsn; count: number }
  /** Emitted once after the cut: the SEQUENCES snapshots read past the target (see sequences). */
  | { type: 'end'; reached: TxnHeader | undefined; stoppedBy: 'target' | 'exhausted'; sequencesAfter: ChangeEvent | undefined };

export interface GroupOptions {
  sequenceScanMicros?: number;
  /**
   * For WATERMARK records in the merged stream (mergePartitions' `watermarks`): whether no
   * transaction after this point can be applied (makeWatermarkCut). A watermark C says every
   * transaction with commit LSN <= C has been seen; one past the target ends the replay without
   * reading further, and one past the sequence scan's window ends that scan.
   */
  passed?: (w: { commitLsn: Lsn; commitTime: number }) => boolean;
  /** Updated as the stream advances, watermarks included: where the replay stands (progress). */
  position?: { lsn: Lsn; time: number };
}

function incomplete(t: TxnHeader, seen: number): IntegrityError {
  return new IntegrityError(
    `transaction xid ${t.xid} (commit LSN ${formatLsn(t.commitLsn)}) has ${seen} changes in the archive but no COMMIT marker: ` +
      'the archive is incomplete there; run `cdp verify`, and restore to an earlier target',
    { details: { commitLsn: t.commitLsn, xid: t.xid } },
  );
}

/**
 * The state of groupTransactionBatches: events go in one at a time (take), items come out per
 * input chunk (flush). Before the cut it builds transactions; after it, it scans on for the first
 * SEQUENCES snapshot, up to sequenceScanMicros past the last applied transaction.
 */
class TxnGrouper {
  /** The SEQUENCES snapshot found past the cut. */
  private sequencesAfter: ChangeEvent | undefined;
  private out: ReplayItem[] = [];
  private pending: ChangeEvent[] = [];
  /** The open transaction, its count of data records so far, and whether the cut ends the replay after it. */
  private cur: TxnHeader | undefined;
  private count = 0;
  private curStop = false;
  private reached: TxnHeader | undefined;
  private stopped = false;
  private stoppedBy: 'target' | 'exhausted' = 'exhausted';
  private scanUntil = Number.POSITIVE_INFINITY;
  private scanOver = false;
  /**
   * How far past the target to look for a SEQUENCES snapshot (capture emits one every
   * capture.sequenceIntervalMs, 30 s by default); beyond that the last one before the target is used.
   */
  private readonly scanMicros: number;

  constructor(
    private readonly cut: (t: TxnHeader) => CutDecision,
    private readonly opts: GroupOptions,
  ) {
    this.scanMicros = opts.sequenceScanMicros ?? 5 * 60 * 1_000_000;
  }

  /** Takes the next event of the merged stream; false: read no further in this chunk (the scan is over). */
  take(ev: ChangeEvent): boolean {
    if (ev.op === 'WATERMARK') return this.watermark(ev);
    if (this.stopped) return this.scan(ev);
    if ((!this.cur || ev.commitLsn !== this.cur.commitLsn) && !this.begin(ev)) {
      // The cut stops before this transaction: a SEQUENCES snapshot right there is the one wanted.
      if (ev.op !== 'SEQUENCES') return true;
      this.sequencesAfter = ev;
      return false;
    }
    if (ev.op === 'COMMIT') this.commit(ev);
    else if (isDataOp(ev.op)) this.data(ev);
    return true;
  }

  /** The items of the chunk taken so far (changes gathered included), or undefined when there are none. */
  flush(): ReplayItem[] | undefined {
    if (this.pending.length > 0) {
      this.out.push({ type: 'changes', events: this.pending });
      this.pending = [];
    }
    if (this.out.length === 0) return undefined;
    const out = this.out;
    this.out = [];
    return out;
  }

  /** After a chunk: whether the scan past the cut is over (nothing later can matter). */
  finished(chunk: ChangeEvent[]): boolean {
    return this.stopped && (this.scanOver || this.sequencesAfter !== undefined || chunk.length === 0 || chunk[chunk.length - 1]!.commitTime > this.scanUntil);
  }

  /** The closing items: the `end` item, or an IntegrityError for a transaction left open. */
  end(): ReplayItem[] {
    if (this.cur) throw incomplete(this.cur, this.count);
    this.out.push({ type: 'end', reached: this.reached, stoppedBy: this.stoppedBy, sequencesAfter: this.sequencesAfter });
    return this.out;
  }

  private watermark(ev: ChangeEvent): boolean {
    // Between transactions only: one inside a transaction is older than it (the partition that
    // carried it had already sent records of later transactions), so it says nothing new.
    if (this.cur) return true;
    const position = this.opts.position;
    if (position && ev.commitLsn > position.lsn) {
      position.lsn = ev.commitLsn;
      position.time = ev.commitTime;
    }
    if (this.stopped) {
      if (ev.commitTime > this.scanUntil) {
        this.scanOver = true;
        return false;
      }
    } else if (this.opts.passed?.(ev)) {
      this.stop(this.reached?.commitTime ?? ev.commitTime);
    }
    return true;
  }

  /** Past the cut: nothing is applied; the first SEQUENCES snapshot ends the scan. */
  private scan(ev: ChangeEvent): boolean {
    if (ev.commitTime > this.scanUntil) {
      this.scanOver = true;
      return false;
    }
    if (ev.op !== 'SEQUENCES') return true;
    this.sequencesAfter = ev;
    return false;
  }

  private stop(from: number): void {
    this.stopped = true;
    this.stoppedBy = 'target';
    this.scanUntil = from + this.scanMicros;
  }

  /** The first record of a transaction: false when the cut stops before it. */
  private begin(ev: ChangeEvent): boolean {
    if (this.cur) throw incomplete(this.cur, this.count);
    const header = { commitLsn: ev.commitLsn, commitTime: ev.commitTime, xid: ev.xid };
    const d = this.cut(header);
    if (d === 'stop') {
      this.stop(this.reached?.commitTime ?? ev.commitTime);
      return false;
    }
    this.cur = header;
    const position = this.opts.position;
    if (position) {
      position.lsn = header.commitLsn;
      position.time = header.commitTime;
    }
    this.curStop = d === 'apply-and-stop';
    this.count = 0;
    this.out.push({ type: 'begin', txn: header });
    return true;
  }

  private commit(ev: ChangeEvent): void {
    const cur = this.cur!;
    if (ev.position !== this.count) {
      throw new IntegrityError(
        `transaction xid ${cur.xid} (commit LSN ${formatLsn(cur.commitLsn)}): COMMIT marker says ${ev.position} changes, the archive holds ${this.count}; ` +
          'the archive is incomplete or corrupt there; run `cdp verify`',
        { details: { commitLsn: cur.commitLsn, xid: cur.xid, expected: ev.position, seen: this.count } },
      );
    }
    if (this.pending.length > 0) {
      this.out.push({ type: 'changes', events: this.pending });
      this.pending = [];
    }
    this.out.push({ type: 'commit', txn: cur, endLsn: ev.endLsn, count: this.count });
    this.reached = cur;
    this.cur = undefined;
    if (this.curStop) this.stop(cur.commitTime);
  }

  private data(ev: ChangeEvent): void {
    const cur = this.cur!;
    if (ev.position !== this.count) {
      throw new IntegrityError(
        `transaction xid ${cur.xid} (commit LSN ${formatLsn(cur.commitLsn)}): change at position ${ev.position} follows ${this.count} changes; ` +
          'a change is missing from the archive; run `cdp verify`',
        { details: { commitLsn: cur.commitLsn, xid: cur.xid, position: ev.position, expected: this.count } },
      );
    }
    this.count++;
    this.pending.push(ev);
    if (this.pending.length >= 2048) {
      this.out.push({ type: 'changes', events: this.pending });
      this.pending = [];
    }
  }
}

/**
 * Groups the merged stream into transactions and applies the cut rule. Memory is bounded by the
 * chunk size, not the transaction size: a transaction's changes stream through in chunks and the
 * consumer commits only at `commit` (and only after this function has checked the count).
 *
 * After the cut, the stream is read on (nothing more applied) until the first SEQUENCES snapshot,
 * which is the best-known upper value of every sequence at the target.
 */
export async function* groupTransactionBatches(
  merged: AsyncIterable<ChangeEvent[]>,
  cut: (t: TxnHeader) => CutDecision,
  opts: GroupOptions = {},
): AsyncGenerator<ReplayItem[]> {
  const g = new TxnGrouper(cut, opts);
  for await (const chunk of merged) {
    for (const ev of chunk) if (!g.take(ev)) break;
    // One array of items per input chunk: consumers loop over it synchronously.
    const items = g.flush();
    if (items) yield items;
    if (g.finished(chunk)) break;
  }
  yield g.end();
}

/** The same stream, one item at a time (tests, simple consumers). */
export async function* groupTransactions(
  merged: AsyncIterable<ChangeEvent[]>,
  cut: (t: TxnHeader) => CutDecision,
  opts: GroupOptions = {},
): AsyncGenerator<ReplayItem> {
  for await (const batch of groupTransactionBatches(merged, cut, opts)) yield* batch;
}
