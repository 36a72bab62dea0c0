import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../../src/format/change-event.js';
import { IntegrityError } from '../../../src/errors.js';
import { groupTransactions, mergePartitions, type MergeStats, type ReplayItem } from '../../../src/restore/merge.js';
import { makeCut, makeWatermarkCut } from '../../../src/restore/target.js';
import { chunks, collect, txn, watermark } from './helpers.js';

const ids = (evs: ChangeEvent[]) => evs.map((e) => `${e.commitLsn}:${e.position}:${e.op}`);

async function merged(sources: Array<{ partition: number; chunks: AsyncIterable<ChangeEvent[]> }>, fromLsn = 0, stats?: MergeStats) {
  return (await collect(mergePartitions(sources, { fromLsn, chunkSize: 3, stats }))).flat();
}

describe('mergePartitions', () => {
  it('merges partitions by (commitLsn, position) and skips watermarks', async () => {
    const a = txn(100, 1, 1, [{}, {}, {}]); // positions 0,1,2 + COMMIT 3
    const b = txn(200, 2, 2, [{}, {}]);
    // Partition 0 holds positions 0 and 2 of txn 100 and the commit of 200; partition 1 the rest.
    const p0 = [a[0]!, a[2]!, watermark(100, 0), b[2]!];
    const p1 = [a[1]!, a[3]!, b[0]!, b[1]!, watermark(200, 1)];
    const out = await merged([
      { partition: 0, chunks: chunks(p0.slice(0, 2), p0.slice(2)) },
      { partition: 1, chunks: chunks(p1) },
    ]);
    expect(ids(out)).toEqual(['100:0:INSERT', '100:1:INSERT', '100:2:INSERT', '100:3:COMMIT', '200:0:INSERT', '200:1:INSERT', '200:2:COMMIT']);
  });

  it('drops duplicates from overlapping segments and from a replayed prefix', async () => {
    const t1 = txn(100, 1, 1, [{}, {}]);
    const t2 = txn(200, 2, 2, [{}]);
    const t3 = txn(300, 3, 3, [{}]);
    // Segment A: t1, t2. Segment B (a re-read after an archiver crash) overlaps: t2 again, then t3.
    // Then capture crashed and replayed from t1 (a prefix Kafka already held), then t3 again.
    const stats: MergeStats = { duplicates: 0 };
    const out = await merged([{ partition: 0, chunks: chunks([...t1, ...t2], [...t2, ...t3], [...t1, ...t2, ...t3]) }], 0, stats);
    expect(ids(out)).toEqual(['100:0:INSERT', '100:1:INSERT', '100:2:COMMIT', '200:0:INSERT', '200:1:COMMIT', '300:0:INSERT', '300:1:COMMIT']);
    expect(stats.duplicates).toBe(2 + 5 + 2);
  });

  it('drops a partially replayed transaction (its prefix) without losing its tail', async () => {
    const t1 = txn(100, 1, 1, [{}, {}, {}]);
    // The first segment ends in the middle of t1; the replay starts again at t1's beginning.
    const out = await merged([{ partition: 0, chunks: chunks(t1.slice(0, 2), t1.slice(0, 1), t1) }]);
    expect(ids(out)).toEqual(['100:0:INSERT', '100:1:INSERT', '100:2:INSERT', '100:3:COMMIT']);
  });

  it('skips transactions committed before the base LSN (the base already holds them)', async () => {
    const out = await merged([{ partition: 0, chunks: chunks([...txn(99, 1, 1, [{}]), ...txn(100, 2, 2, [{}])]) }], 100);
    expect(ids(out)).toEqual(['100:0:INSERT', '100:1:COMMIT']);
  });

  it('handles empty and exhausted partitions', async () => {
    const out = await merged([
      { partition: 0, chunks: chunks() },
      { partition: 1, chunks: chunks([], txn(5, 1, 1, [{}]), []) },
      { partition: 2, chunks: chunks([watermark(5, 2)]) },
    ]);
    expect(ids(out)).toEqual(['5:0:INSERT', '5:1:COMMIT']);
  });

  it('merges many partitions into global order (randomised)', async () => {
    const all: ChangeEvent[] = [];
    for (let i = 1; i <= 200; i++)
      all.push(
        ...txn(
          i * 10,
          i,
          i,
          Array.from({ length: 1 + (i % 4) }, () => ({})),
        ),
      );
    const parts: ChangeEvent[][] = [[], [], [], [], []];
    let seed = 7;
    for (const ev of all) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      parts[seed % 5]!.push(ev);
    }
    const out = await merged(parts.map((p, i) => ({ partition: i, chunks: chunks(p.slice(0, 10), p.slice(5, 50), p.slice(20)) })));
    expect(ids(out)).toEqual(ids(all));
  });
});

async function group(evs: ChangeEvent[], cut = makeCut({ kind: 'latest' }, Number.MAX_SAFE_INTEGER)) {
  return collect(groupTransactions(chunks(evs), cut));
}
const summary = (items: ReplayItem[]) =>
  items.map((i) =>
    i.type === 'begin'
      ? `B${i.txn.commitLsn}`
      : i.type === 'commit'
        ? `C${i.txn.commitLsn}/${i.count}`
        : i.type === 'changes'
          ? `x${i.events.length}`
          : `E:${i.stoppedBy}`,
  );

describe('groupTransactions', () => {
  const stream = [...txn(100, 11, 1000, [{}, {}]), ...txn(200, 12, 2000, [{}]), ...txn(300, 13, 3000, [{}, {}, {}])];

  it('yields whole transactions and checks counts against COMMIT markers', async () => {
    expect(summary(await group(stream))).toEqual(['B100', 'x2', 'C100/2', 'B200', 'x1', 'C200/1', 'B300', 'x3', 'C300/3', 'E:exhausted']);
  });

  it('cuts by LSN (inclusive), by time (first commit after T stops), by xid (inclusive)', async () => {
    expect(summary(await group(stream, makeCut({ kind: 'lsn', lsn: 200 }, 1e9)))).toEqual(['B100', 'x2', 'C100/2', 'B200', 'x1', 'C200/1', 'E:target']);
    expect(summary(await group(stream, makeCut({ kind: 'lsn', lsn: 299 }, 1e9)))).toEqual(['B100', 'x2', 'C100/2', 'B200', 'x1', 'C200/1', 'E:target']);
    expect(summary(await group(stream, makeCut({ kind: 'time', micros: 1999, text: '' }, 1e9)))).toEqual(['B100', 'x2', 'C100/2', 'E:target']);
    expect(summary(await group(stream, makeCut({ kind: 'time', micros: 2000, text: '' }, 1e9)))).toEqual([
      'B100',
      'x2',
      'C100/2',
      'B200',
      'x1',
      'C200/1',
      'E:target',
    ]);
    expect(summary(await group(stream, makeCut({ kind: 'xid', xid: 12 }, 1e9)))).toEqual(['B100', 'x2', 'C100/2', 'B200', 'x1', 'C200/1', 'E:target']);
  });

  it('never goes past the restorable point, whatever the target', async () => {
    expect(summary(await group(stream, makeCut({ kind: 'latest' }, 250)))).toEqual(['B100', 'x2', 'C100/2', 'B200', 'x1', 'C200/1', 'E:target']);
    expect(summary(await group(stream, makeCut({ kind: 'xid', xid: 13 }, 250)))).toEqual(['B100', 'x2', 'C100/2', 'B200', 'x1', 'C200/1', 'E:target']);
  });

  it('reports the first SEQUENCES snapshot after the target', async () => {
    const seqTxn = txn(400, 14, 4000, [{ op: 'SEQUENCES', schema: '', table: '', relation: null, new: null, content: '{"public.s":42}' }]);
    const items = await group([...stream, ...seqTxn], makeCut({ kind: 'lsn', lsn: 100 }, 1e9));
    const end = items.at(-1)!;
    expect(end.type === 'end' && end.sequencesAfter?.content).toBe('{"public.s":42}');
  });

  it('refuses a transaction without its COMMIT marker', async () => {
    const broken = [...txn(100, 11, 1000, [{}, {}]).slice(0, 2), ...txn(200, 12, 2000, [{}])];
    await expect(group(broken)).rejects.toBeInstanceOf(IntegrityError);
    await expect(group(txn(100, 11, 1000, [{}, {}]).slice(0, 2))).rejects.toThrow(/no COMMIT marker/);
  });

  it('refuses a transaction with a missing change (count mismatch)', async () => {
    const t = txn(100, 11, 1000, [{}, {}, {}]);
    await expect(group([t[0]!, t[2]!, t[3]!])).rejects.toBeInstanceOf(IntegrityError);
    await expect(group([t[0]!, t[1]!, t[3]!])).rejects.toThrow(/COMMIT marker says 3 changes/);
  });

  it('streams a large transaction in bounded chunks', async () => {
    const big = txn(
      100,
      1,
      1,
      Array.from({ length: 5000 }, () => ({})),
    );
    const items = await group(big);
    const sizes = items.filter((i) => i.type === 'changes').map((i) => (i.type === 'changes' ? i.events.length : 0));
    expect(Math.max(...sizes)).toBeLessThanOrEqual(2048);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(5000);
  });
});

describe('watermarks through the merge (a replay stops at its target, not at the end of the archive)', () => {
  const wm = (lsn: number, p: number, time = lsn * 10) => ({ ...watermark(lsn, p), commitTime: time });
  /** Counts the chunks a partition hands out, i.e. the segments a restore would read. */
  function counted(parts: ChangeEvent[][], read: { n: number }): AsyncIterable<ChangeEvent[]> {
    return (async function* () {
      for (const c of parts) {
        read.n++;
        yield c;
      }
    })();
  }

  it('emits a watermark only once every partition is past it, after the records of its LSN', async () => {
    const a = txn(100, 1, 1000, [{}, {}]);
    const p0 = [a[0]!, wm(50, 0), a[2]!, wm(100, 0)];
    const p1 = [a[1]!, wm(100, 1), wm(150, 1)];
    const out = (
      await collect(
        mergePartitions(
          [
            { partition: 0, chunks: chunks(p0) },
            { partition: 1, chunks: chunks(p1) },
          ],
          { fromLsn: 0, watermarks: true },
        ),
      )
    ).flat();
    // The stale watermark 50 (its partition had already sent a record of 100) comes out as soon as
    // it heads its partition; groupTransactions ignores it inside a transaction.
    expect(ids(out)).toEqual(['100:0:INSERT', '50:0:WATERMARK', '100:1:INSERT', '100:2:COMMIT', '100:0:WATERMARK', '100:0:WATERMARK', '150:0:WATERMARK']);
  });

  it('stops at the first watermark past an LSN or time target: the idle stretch after it is not read', async () => {
    for (const [target, passed] of [
      [{ kind: 'lsn', lsn: 200 }, makeWatermarkCut({ kind: 'lsn', lsn: 200 }, 1e9)],
      [{ kind: 'time', micros: 2500, text: '' }, makeWatermarkCut({ kind: 'time', micros: 2500, text: '' }, 1e9)],
      [{ kind: 'latest' }, makeWatermarkCut({ kind: 'latest' }, 250)],
    ] as const) {
      const read = { n: 0 };
      // One "segment" per transaction, then 50 heartbeat-only segments (watermarks, no records).
      const segs = [txn(100, 11, 1000, [{}]), txn(200, 12, 2000, [{}]), ...Array.from({ length: 50 }, (_, i) => [wm(300 + i * 10, 0)])];
      const position = { lsn: 0, time: 0 };
      const items = await collect(
        groupTransactions(
          mergePartitions([{ partition: 0, chunks: counted(segs, read) }], { fromLsn: 0, watermarks: true }),
          makeCut(target, target.kind === 'latest' ? 250 : 1e9),
          {
            passed,
            position,
            sequenceScanMicros: 0,
          },
        ),
      );
      expect(summary(items), target.kind).toEqual(['B100', 'x1', 'C100/1', 'B200', 'x1', 'C200/1', 'E:target']);
      expect(read.n, target.kind).toBeLessThanOrEqual(3);
      expect(position.lsn).toBe(300);
    }
  });

  it('ends the sequence scan at a watermark past its window', async () => {
    const read = { n: 0 };
    const segs = [txn(100, 11, 1000, [{}]), ...Array.from({ length: 50 }, (_, i) => [wm(300 + i * 10, 0, 2000 + i * 100)])];
    const items = await collect(
      groupTransactions(
        mergePartitions([{ partition: 0, chunks: counted(segs, read) }], { fromLsn: 0, watermarks: true }),
        makeCut({ kind: 'lsn', lsn: 150 }, 1e9),
        {
          passed: makeWatermarkCut({ kind: 'lsn', lsn: 150 }, 1e9),
          sequenceScanMicros: 500,
        },
      ),
    );
    expect(summary(items)).toEqual(['B100', 'x1', 'C100/1', 'E:target']);
    // Window: 1000 + 500 µs; watermark times 2000, 2100, ...: the first is past it.
    expect(read.n).toBeLessThanOrEqual(3);
  });

  it('ignores a watermark older than the open transaction (its partition ran ahead)', async () => {
    const a = txn(200, 1, 2000, [{}, {}]);
    // Partition 0 sent txn 200's first record before the watermark for 100.
    const p0 = [a[0]!, wm(100, 0), a[2]!];
    const p1 = [a[1]!];
    const position = { lsn: 0, time: 0 };
    const items = await collect(
      groupTransactions(
        mergePartitions(
          [
            { partition: 0, chunks: chunks(p0) },
            { partition: 1, chunks: chunks(p1) },
          ],
          { fromLsn: 0, watermarks: true },
        ),
        makeCut({ kind: 'lsn', lsn: 150 }, 1e9),
        {
          passed: makeWatermarkCut({ kind: 'lsn', lsn: 150 }, 1e9),
          position,
        },
      ),
    );
    expect(summary(items)).toEqual(['E:target']);
  });
});
