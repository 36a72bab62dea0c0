// Postgres-side cost of restore's statements, by kind, without S3 or decoding: the ANCHORS.md
// workload (N inserts, N/2 updates, N/5 deletes) built as change events in memory and applied
// through the Applier into a scratch database, timing each round trip by its first keyword.
//
//   npx tsx bench/restore-apply.ts        (BATCH=<rows per statement>, default 1000)
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import copyStreams from 'pg-copy-streams';
import { emptyEvent, type ChangeEvent, type RelationInfo } from '../src/format/change-event.js';
import { Applier, type SqlSink } from '../src/restore/apply.js';
import { groupTransactions } from '../src/restore/merge.js';
import { makeCut } from '../src/restore/target.js';
const N = 1_000_000;
const REL: RelationInfo = {
  oid: 1,
  replicaIdentity: 'd',
  columns: ['id', 'i', 't', 'ts', 'n'],
  types: ['bigint', 'integer', 'text', 'timestamp with time zone', 'numeric'],
  key: [0],
};
const md5 = (s: string) => createHash('md5').update(s).digest('hex');
const admin = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/postgres' });
await admin.connect();
const db = `bench_rs_apply_${process.pid}`;
await admin.query(`CREATE DATABASE ${db}`);
const c = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:5432/${db}` });
await c.connect();
await c.query(
  'DROP TABLE IF EXISTS bench; CREATE TABLE bench (id bigint PRIMARY KEY, i int NOT NULL, t text NOT NULL, ts timestamptz NOT NULL, n numeric NOT NULL)',
);
await c.query('SET session_replication_role = replica; SET synchronous_commit = off; SET enable_hashjoin = off; SET enable_mergejoin = off');
const time: Record<string, number> = {};
const sink: SqlSink = {
  exec: async (s) => {
    const k = s.match(/^(BEGIN;\n)?(\w+)/)?.[2] ?? 'other';
    const t = performance.now();
    await c.query(s);
    time[k] = (time[k] ?? 0) + performance.now() - t;
  },
  copy: async (s, d) => {
    const t = performance.now();
    await pipeline(Readable.from([Buffer.from(d)]), c.query(copyStreams.from(s)));
    time.COPY = (time.COPY ?? 0) + performance.now() - t;
  },
  drain: async () => {},
};
async function* gen(): AsyncGenerator<ChangeEvent[]> {
  const txns: Array<[number, number, (k: number) => Partial<ChangeEvent>]> = [
    [100, N, (k) => ({ op: 'INSERT', new: [String(k + 1), String(k % 1000), md5(String(k)), '2026-01-01T00:00:00.000Z', (k * 1.5).toFixed(1)] })],
    [200, N / 2, (k) => ({ op: 'UPDATE', new: [String(k + 1), String((k % 1000) + 1), md5(String(k)), '2026-01-01T00:00:00.000Z', (k * 1.5).toFixed(1)] })],
    [300, N / 5, (k) => ({ op: 'DELETE', oldKind: 'K', old: [String(N - k), null, null, null, null] })],
  ];
  for (const [lsn, n, g] of txns) {
    let chunk: ChangeEvent[] = [];
    for (let k = 0; k < n; k++) {
      chunk.push(
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
          ...g(k),
        }),
      );
      if (chunk.length === 2048) {
        yield chunk;
        chunk = [];
      }
    }
    chunk.push(emptyEvent({ op: 'COMMIT', database: 'd', commitLsn: lsn, xid: lsn, commitTime: 1, position: n }));
    yield chunk;
  }
}
// The table has no unique index but its key, as restore.ts would find in the target's catalog.
const a = new Applier(sink, { cursor: false, batchMaxRows: Number(process.env.BATCH ?? 1000), reorderable: () => true });
const t0 = performance.now();
for await (const item of groupTransactions(gen(), makeCut({ kind: 'latest' }, 1e12))) await a.handle(item);
console.log(JSON.stringify({ total: Math.round(performance.now() - t0), pg: Object.fromEntries(Object.entries(time).map(([k, v]) => [k, Math.round(v)])) }));
await c.end();
await admin.query(`DROP DATABASE ${db} WITH (FORCE)`);
await admin.end();
