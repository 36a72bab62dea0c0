// The restore pipeline's CPU cost without S3 or Postgres: segments encoded in memory with the
// archive's SegmentWriter, then decode -> merge -> group -> Applier building SQL into a null sink.
// Shows where the per-change time goes (each stage is timed cumulatively).
//
//   npx tsx bench/restore-pipeline.ts [--rows 200000]
import { createHash } from 'node:crypto';
import { encodeSegment, readSegment } from '../src/archive/segment.js';
import { emptyEvent, type ChangeEvent, type RelationInfo } from '../src/format/change-event.js';
import { Applier, type SqlSink } from '../src/restore/apply.js';
import { groupTransactionBatches, groupTransactions, mergePartitions } from '../src/restore/merge.js';
import { makeCut } from '../src/restore/target.js';
import { ChangeEventDecoder } from '../src/format/decoder.js';

const rowsArg = process.argv.indexOf('--rows');
const N = rowsArg > 0 ? Number(process.argv[rowsArg + 1]) : 200_000;
const REL: RelationInfo = {
  oid: 1,
  replicaIdentity: 'd',
  columns: ['id', 'i', 't', 'ts', 'n'],
  types: ['bigint', 'integer', 'text', 'timestamp with time zone', 'numeric'],
  key: [0],
};
const md5 = (s: string) => createHash('md5').update(s).digest('hex');
const events: ChangeEvent[][] = [[], [], []];
const txns: Array<[number, number, (k: number) => Partial<ChangeEvent>]> = [
  [100, N, (k) => ({ op: 'INSERT', new: [String(k), String(k % 1000), md5(String(k)), '2026-01-01T00:00:00.000Z', (k * 1.5).toFixed(1)] })],
  [200, N / 2, (k) => ({ op: 'UPDATE', new: [String(k), String(k % 1000), md5(String(k)), '2026-01-01T00:00:00.000Z', (k * 1.5).toFixed(1)] })],
  [300, N / 5, (k) => ({ op: 'DELETE', oldKind: 'K', old: [String(k), null, null, null, null] })],
];
for (const [lsn, n, gen] of txns) {
  for (let k = 0; k < n; k++)
    events[k % 3]!.push(
      emptyEvent({
        database: 'd',
        schema: 'public',
        table: 'bench',
        relation: REL,
        commitLsn: lsn,
        xid: lsn,
        commitTime: 1,
        position: k,
        op: 'INSERT',
        ...gen(k),
      }),
    );
  events[0]!.push(emptyEvent({ op: 'COMMIT', database: 'd', commitLsn: lsn, xid: lsn, commitTime: 1, position: n, endLsn: lsn + 1 }));
}
const total = N + N / 2 + N / 5;
const segs = events.map((evs, p) => encodeSegment(evs, { partition: p, codec: 'zstandard' }));

const t = { decode: 0, apply: 0 };
let t0 = performance.now();
for (const s of segs) for (const _ of readSegment(s.bytes, { expectedSha256: s.name.sha256 }).blocks());
t.decode = performance.now() - t0;
t0 = performance.now();
const dec = new ChangeEventDecoder();
for (const s of segs) for (const _ of readSegment(s.bytes, { expectedSha256: s.name.sha256, decoder: dec }).blocks());
const fastDecode = performance.now() - t0;

async function* chunksOf(i: number): AsyncGenerator<ChangeEvent[]> {
  yield* readSegment(segs[i]!.bytes, { expectedSha256: segs[i]!.name.sha256, decoder: dec }).blocks();
}
t0 = performance.now();
let n = 0;
for await (const c of mergePartitions(
  [0, 1, 2].map((p) => ({ partition: p, chunks: chunksOf(p) })),
  { fromLsn: 0 },
))
  n += c.length;
const merge = performance.now() - t0;

t0 = performance.now();
let items = 0;
for await (const _ of groupTransactions(
  mergePartitions(
    [0, 1, 2].map((p) => ({ partition: p, chunks: chunksOf(p) })),
    { fromLsn: 0 },
  ),
  makeCut({ kind: 'latest' }, 1e12),
))
  items++;
const group = performance.now() - t0;

let bytes = 0;
const sink: SqlSink = { exec: async (s) => void (bytes += s.length), copy: async (_s, d) => void (bytes += d.length), drain: async () => {} };
const a = new Applier(sink, { cursor: true });
t0 = performance.now();
for await (const b of groupTransactionBatches(
  mergePartitions(
    [0, 1, 2].map((p) => ({ partition: p, chunks: chunksOf(p) })),
    { fromLsn: 0 },
  ),
  makeCut({ kind: 'latest' }, 1e12),
))
  await a.handleBatch(b);
const apply = performance.now() - t0;
const us = (ms: number) => Math.round(((ms * 1000) / total) * 100) / 100;
console.log(
  JSON.stringify({
    bench: 'restore-pipeline',
    changes: total,
    merged: n,
    items,
    usPerChange: { genericDecode: us(t.decode), decode: us(fastDecode), decodeMerge: us(merge), decodeMergeGroup: us(group), all: us(apply) },
    sqlBytes: bytes,
    changesPerSecond: Math.round(total / (apply / 1000)),
  }),
);
