// The restore pipeline's CPU cost without S3 or Postgres: segments encoded in memory with the
// archive's SegmentWriter, then decode -> merge -> group -> Applier building SQL into a null sink,
// with coalescing on as a live restore does it (every table reorderable). Each stage is measured
// cumulatively, in CPU time of this process (process.cpuUsage: steadier than wall time on a shared
// machine), and reported in microseconds per change.
//
//   npx tsx bench/restore-pipeline.ts [--workload bulk|oltp] [--rows N] [--repeat R] [--block-bytes B]
// bulk: N inserts, N/2 updates, N/5 deletes in three transactions (bench/restore.ts);
// oltp: N transactions of an insert, an update and a delete of three different rows.
// Node's flags apply: `node --max-semi-space-size=64 --import tsx bench/restore-pipeline.ts` showed
// that garbage collection is half of this cost (see the commit that rewrote this bench).
import { createHash } from 'node:crypto';
import { DEFAULT_BLOCK_BYTES, encodeSegment, readSegment } from '../src/archive/segment.js';
import { emptyEvent, type ChangeEvent, type RelationInfo } from '../src/format/change-event.js';
import { ChangeEventDecoder } from '../src/format/decoder.js';
import { Applier, type SqlSink } from '../src/restore/apply.js';
import { groupTransactionBatches, mergePartitions } from '../src/restore/merge.js';
import { makeCut } from '../src/restore/target.js';

const arg = (name: string) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const WORKLOAD = arg('--workload') ?? 'bulk';
const N = Number(arg('--rows') ?? (WORKLOAD === 'oltp' ? 100_000 : 200_000));
const REPEAT = Number(arg('--repeat') ?? 3);
const REL: RelationInfo = {
  oid: 1,
  replicaIdentity: 'd',
  columns: ['id', 'i', 't', 'ts', 'n'],
  types: ['bigint', 'integer', 'text', 'timestamp with time zone', 'numeric'],
  key: [0],
};
const md5 = (s: string) => createHash('md5').update(s).digest('hex');
const ts = (g: number) => new Date(Date.UTC(2026, 0, 1) + g * 1000).toISOString();
const row = (g: number, i: number) => [String(g), String(i), md5(String(g)), ts(g), (g * 1.5).toFixed(1)];

const events: ChangeEvent[][] = [[], [], []];
const txns: Array<{ lsn: number; changes: Array<Partial<ChangeEvent>> }> = [];
if (WORKLOAD === 'oltp') {
  const M = 2 * N;
  for (let x = 1; x <= N; x++)
    txns.push({
      lsn: 1000 + 100 * x,
      changes: [
        { op: 'INSERT', new: row(M + x, x % 1000) },
        { op: 'UPDATE', new: row(x, (x % 1000) + 1) },
        { op: 'DELETE', oldKind: 'K', old: [String(M - x + 1), null, null, null, null] },
      ],
    });
} else {
  const gen = (n: number, f: (k: number) => Partial<ChangeEvent>) => Array.from({ length: n }, (_, k) => f(k));
  txns.push({ lsn: 100, changes: gen(N, (k) => ({ op: 'INSERT', new: row(k + 1, (k + 1) % 1000) })) });
  txns.push({ lsn: 200, changes: gen(N / 2, (k) => ({ op: 'UPDATE', new: row(k + 1, ((k + 1) % 1000) + 1) })) });
  txns.push({ lsn: 300, changes: gen(N / 5, (k) => ({ op: 'DELETE', oldKind: 'K', old: [String(N - N / 5 + k + 1), null, null, null, null] })) });
}
let total = 0;
// Spread as capture keys them: by row key for changes, by transaction for the COMMIT marker.
for (const t of txns) {
  t.changes.forEach((c, k) => {
    const key = Number((c.new ?? c.old)![0]);
    events[key % 3]!.push(
      emptyEvent({
        database: 'd',
        schema: 'public',
        table: 'bench',
        relation: REL,
        commitLsn: t.lsn,
        xid: t.lsn,
        commitTime: 1,
        position: k,
        op: 'INSERT',
        ...c,
      }),
    );
  });
  total += t.changes.length;
  events[t.lsn % 3]!.push(
    emptyEvent({ op: 'COMMIT', database: 'd', commitLsn: t.lsn, xid: t.lsn, commitTime: 1, position: t.changes.length, endLsn: t.lsn + 1 }),
  );
}
const segs = events.map((evs, p) => encodeSegment(evs, { partition: p, codec: 'zstandard', blockBytes: Number(arg('--block-bytes') ?? DEFAULT_BLOCK_BYTES) }));

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const dec = new ChangeEventDecoder();
async function* chunksOf(i: number): AsyncGenerator<ChangeEvent[]> {
  yield* readSegment(segs[i]!.bytes, { expectedSha256: segs[i]!.name.sha256, decoder: dec }).blocks();
}
const merged = () =>
  mergePartitions(
    [0, 1, 2].map((p) => ({ partition: p, chunks: chunksOf(p) })),
    { fromLsn: 0 },
  );

async function once() {
  let t0 = cpuMs();
  for (const s of segs) for (const _ of readSegment(s.bytes, { expectedSha256: s.name.sha256, decoder: dec }).blocks());
  const decode = cpuMs() - t0;
  t0 = cpuMs();
  for await (const _ of merged());
  const merge = cpuMs() - t0;
  t0 = cpuMs();
  for await (const _ of groupTransactionBatches(merged(), makeCut({ kind: 'latest' }, 1e12)));
  const group = cpuMs() - t0;
  let bytes = 0;
  const sink: SqlSink = { exec: async (s) => void (bytes += s.length), copy: async (_s, d) => void (bytes += d.length), drain: async () => {} };
  const a = new Applier(sink, { cursor: true, reorderable: () => true });
  t0 = cpuMs();
  const w0 = performance.now();
  for await (const b of groupTransactionBatches(merged(), makeCut({ kind: 'latest' }, 1e12))) await a.handleBatch(b);
  const apply = cpuMs() - t0;
  const wall = performance.now() - w0;
  return { decode, merge, group, apply, wall, bytes };
}

const us = (ms: number) => Math.round(((ms * 1000) / total) * 100) / 100;
const runs: Array<Awaited<ReturnType<typeof once>>> = [];
for (let i = 0; i < REPEAT; i++) runs.push(await once());
// The best of the runs: the least disturbed by other processes and by the first run's JIT warm-up.
const best = (k: 'decode' | 'merge' | 'group' | 'apply' | 'wall') => Math.min(...runs.map((r) => r[k]));
console.log(
  JSON.stringify({
    bench: 'restore-pipeline',
    workload: WORKLOAD,
    changes: total,
    cpuUsPerChange: { decode: us(best('decode')), decodeMerge: us(best('merge')), decodeMergeGroup: us(best('group')), all: us(best('apply')) },
    allRuns: runs.map((r) => us(r.apply)),
    sqlBytes: runs[0]!.bytes,
    changesPerCpuSecond: Math.round(total / (best('apply') / 1000)),
  }),
);
