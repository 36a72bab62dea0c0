// Restore apply rate against PostgreSQL's own logical-replication apply of the same changes, in
// the same run on the same server (DESIGN.md section 9; ANCHORS.md: native apply ~62,000 changes/s
// on this kind of machine).
//
//   npx tsx bench/restore.ts [--workload bulk|oltp|append] [--rows N]
// (bench/harness.ts calls restoreBench() for each workload and run.)
//
// Workload (ANCHORS.md): one table (bigint key, int, md5 text, timestamptz, numeric); N inserts in
// one transaction, N/2 updates in a second, N/5 deletes in a third.
//
// Native: a pgoutput slot is created on the source before the workload; afterwards a subscription
// (create_slot = false, copy_data = false) into an empty copy of the table drains it; timed from
// CREATE SUBSCRIPTION until the replication origin has passed the last transaction.
//
// Ours: the same row changes as Katya change events in segments on the local S3 server (written
// with the archive's own SegmentWriter, zstandard, 3 partitions keyed like capture, with COMMIT
// markers and watermarks; built here rather than through capture + Kafka so that the benchmark
// measures restore alone), then `cdp restore --latest` into an empty database from a base taken
// before the workload. The rate is the replay phase (segments fetched, verified, decoded, merged,
// applied); the base load of an empty table is reported separately.
//
// Both targets are then compared with the source, table content by md5.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { pino } from 'pino';
import { advancePartitionState } from '../src/archive/catalog.js';
import { archiveManifestKey, segmentKey, type ArchiveManifest } from '../src/archive/layout.js';
import { SegmentWriter } from '../src/archive/segment.js';
import { storeSegment } from '../src/archive/upload.js';
import { takeBaseBackup } from '../src/base/basebackup.js';
import { loadConfig } from '../src/config/config.js';
import { emptyEvent, kafkaKey, type ChangeEvent, type RelationInfo } from '../src/format/change-event.js';
import { createStore, putOnce } from '../src/s3/client.js';
import { formatLsn, parseLsn } from '../src/util/lsn.js';
import { cdpNodeArgs } from './lib/env.js';

const REPO = new URL('../', import.meta.url).pathname;
const arg = (name: string) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
let WORKLOAD = arg('--workload') ?? 'bulk';
// bulk: N inserts, N/2 updates, N/5 deletes in three transactions (ANCHORS.md).
// oltp: T transactions of 3 changes (insert one row, update one, delete one) on a table holding
// 2T rows before the base: the shape of the changes a CDP archive mostly holds.
// append: N inserts in transactions of 10 rows (an event log): nothing for restore to fold.
let N = Number(arg('--rows') ?? (WORKLOAD === 'oltp' ? 100_000 : 1_000_000));
const APPEND_TXN = 10;
const PARTITIONS = 3;
const SEGMENT_EVENTS = 200_000;
let SRC = '';
let OURS = '';
let NATIVE = '';
let SLOT = '';
let PREFIX = '';
/** Fresh names for one measurement (the harness calls restoreBench several times in one process). */
function names(): void {
  const id = randomBytes(3).toString('hex');
  SRC = `bench_rs_src_${id}`;
  OURS = `bench_rs_ours_${id}`;
  NATIVE = `bench_rs_native_${id}`;
  SLOT = `bench_rs_${id}`;
  PREFIX = `bench-restore-${id}`;
}
const log = pino({ level: 'warn' }, pino.destination(2));

const env: Record<string, string> = {};
for (const line of execFileSync('bash', [`${REPO}deploy/local/stack.sh`, 'env'], { encoding: 'utf8' }).split('\n')) {
  const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
  if (m) env[m[1]!] = m[2]!.replace(/^'(.*)'$/, '$1');
}
Object.assign(process.env, env);
const baseUrl = new URL(env.CDP_SOURCE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
const urlOf = (db: string) => {
  const u = new URL(baseUrl.toString());
  u.pathname = `/${db}`;
  return u.toString();
};

async function q<T = Record<string, unknown>>(db: string, sql: string, values?: unknown[]): Promise<T[]> {
  const c = new pg.Client({ connectionString: urlOf(db) });
  await c.connect();
  try {
    return (await c.query(sql, values)).rows as T[];
  } finally {
    await c.end();
  }
}

const TABLE = `CREATE TABLE bench (id bigint PRIMARY KEY, i int NOT NULL, t text NOT NULL, ts timestamptz NOT NULL, n numeric NOT NULL)`;
const REL: RelationInfo = {
  oid: 1,
  replicaIdentity: 'd',
  columns: ['id', 'i', 't', 'ts', 'n'],
  types: ['bigint', 'integer', 'text', 'timestamp with time zone', 'numeric'],
  key: [0],
};
const md5 = (s: string) => createHash('md5').update(s).digest('hex');
const T0 = Date.UTC(2026, 0, 1);
const tsText = (g: number) => new Date(T0 + g * 1000).toISOString();

// Murmur2 as Kafka's default partitioner (only the spread matters here).
function partitionOf(key: string): number {
  let h = 0;
  for (let i = 0; i < key.length; i++) h = (Math.imul(h, 31) + key.charCodeAt(i)) | 0;
  return Math.abs(h) % PARTITIONS;
}

async function fingerprint(db: string): Promise<string> {
  const r = await q<{ n: number; h: string }>(db, `SELECT count(*)::int AS n, md5(string_agg(b::text, ',' ORDER BY id)) AS h FROM bench b`);
  return `${r[0]!.n}:${r[0]!.h}`;
}

export interface RestoreResult {
  bench: 'restore';
  workload: string;
  rows: number;
  changes: number;
  transactions: number;
  native: { seconds: number; changesPerSecond: number };
  ours: { replaySeconds: number; totalSeconds: number; changesPerSecond: number; dryRunReplaySeconds: number };
  ratio: number;
  identical: { native: boolean; ours: boolean };
  baseLsn: string;
}

/** One measurement: workload bulk (rows = N) or oltp (rows = transactions). */
export async function restoreBench(o: { workload: 'bulk' | 'oltp' | 'append'; rows: number }): Promise<RestoreResult> {
  WORKLOAD = o.workload;
  N = o.rows;
  names();
  const cfg = loadConfig({ env: { ...process.env, CDP_SOURCE_URL: urlOf(SRC), CDP_S3_PREFIX: PREFIX }, flags: { 'metrics.port': 0, 'log.level': 'warn' } });
  const store = createStore(cfg, log);
  const root = `${PREFIX}/${SRC}`;
  for (const db of [SRC, OURS, NATIVE]) await q('postgres', `CREATE DATABASE ${db}`);
  try {
    await q(SRC, TABLE);
    await q(NATIVE, TABLE);
    const M = 2 * N;
    if (WORKLOAD === 'oltp') {
      // The rows the transactions update and delete, present in the base and in the native copy.
      for (const db of [SRC, NATIVE])
        await q(
          db,
          `INSERT INTO bench SELECT g, g % 1000, md5(g::text), '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 second', g * 1.5 FROM generate_series(1, ${M}) g`,
        );
    }
    await q(SRC, `CREATE PUBLICATION ${SLOT} FOR TABLE bench`);
    await q(SRC, `SELECT pg_create_logical_replication_slot('${SLOT}', 'pgoutput')`);
    const base = await takeBaseBackup({ cfg, log, signal: new AbortController().signal });

    // The workload on the source.
    const t0 = Date.now();
    const oltpTxn = (x: string) =>
      `INSERT INTO bench VALUES (${M} + ${x}, ${x} % 1000, md5(${x}::text), '2026-01-01 00:00:00+00'::timestamptz + ${x} * interval '1 second', ${x} * 1.5);
       UPDATE bench SET i = i + 1 WHERE id = ${x};
       DELETE FROM bench WHERE id = ${M} - ${x} + 1;`;
    const appendTxn = (x: string) =>
      `INSERT INTO bench SELECT g, g % 1000, md5(g::text), '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 second', g * 1.5 FROM generate_series(${x} * ${APPEND_TXN} + 1, ${x} * ${APPEND_TXN} + ${APPEND_TXN}) g;`;
    if (WORKLOAD === 'oltp') {
      // One transaction per iteration (COMMIT inside DO: docs, PL/pgSQL "Transaction Management").
      await q(SRC, `DO $$ BEGIN FOR x IN 1..${N - 1} LOOP ${oltpTxn('x')} COMMIT; END LOOP; END $$`);
    } else if (WORKLOAD === 'append') {
      await q(SRC, `DO $$ BEGIN FOR x IN 0..${N / APPEND_TXN - 2} LOOP ${appendTxn('x')} COMMIT; END LOOP; END $$`);
    } else {
      await q(
        SRC,
        `INSERT INTO bench SELECT g, g % 1000, md5(g::text), '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 second', g * 1.5 FROM generate_series(1, ${N}) g`,
      );
      await q(SRC, `UPDATE bench SET i = i + 1, t = md5(t) WHERE id <= ${N / 2}`);
    }
    const c = new pg.Client({ connectionString: urlOf(SRC) });
    await c.connect();
    await c.query('BEGIN');
    await c.query(
      WORKLOAD === 'oltp' ? oltpTxn(String(N)) : WORKLOAD === 'append' ? appendTxn(String(N / APPEND_TXN - 1)) : `DELETE FROM bench WHERE id > ${N - N / 5}`,
    );
    const beforeLastCommit = parseLsn((await c.query('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l);
    await c.query('COMMIT');
    await c.end();
    const changes = WORKLOAD === 'oltp' ? 3 * N : WORKLOAD === 'append' ? N : N + N / 2 + N / 5;
    console.error(`workload: ${changes} changes in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    // The same changes as archived segments.
    const tb = Date.now();
    const writers = Array.from({ length: PARTITIONS }, (_, p) => ({ w: new SegmentWriter({ partition: p, codec: 'zstandard', zstdLevel: 1 }), offset: 0 }));
    const lastKey = ['', '', ''];
    const flush = async (p: number) => {
      const s = writers[p]!;
      if (s.w.count === 0) return;
      const seg = s.w.finish();
      await storeSegment(store, segmentKey(root, seg.name), seg.bytes, seg.name.sha256);
      lastKey[p] = segmentKey(root, seg.name);
      s.w = new SegmentWriter({ partition: p, codec: 'zstandard', zstdLevel: 1 });
    };
    const put = async (ev: ChangeEvent, p = partitionOf(kafkaKey(ev))) => {
      const s = writers[p]!;
      s.w.appendEvent(ev, String(s.offset++));
      if (s.w.count >= SEGMENT_EVENTS) await flush(p);
    };
    const now = Date.now() * 1000;
    const row = (g: number, i = g % 1000, t = md5(String(g))) => [String(g), String(i), t, tsText(g), (g * 1.5).toFixed(1)];
    const oltp = (x: number): Array<Partial<ChangeEvent>> => [
      { op: 'INSERT', new: row(M + x, x % 1000, md5(String(x))).map((v, i) => (i === 3 ? tsText(x) : i === 4 ? (x * 1.5).toFixed(1) : v)) },
      { op: 'UPDATE', new: row(x, (x % 1000) + 1) },
      { op: 'DELETE', oldKind: 'K', old: [String(M - x + 1), null, null, null, null] },
    ];
    const txns: Array<{ lsn: number; xid: number; n: number; gen: (k: number) => Partial<ChangeEvent> }> =
      WORKLOAD === 'oltp'
        ? Array.from({ length: N }, (_, j) => {
            const evs = oltp(j + 1);
            return { lsn: base.lsn + 100 * (j + 1), xid: 100_000 + j, n: 3, gen: (k: number) => evs[k]! };
          })
        : WORKLOAD === 'append'
          ? Array.from({ length: N / APPEND_TXN }, (_, j) => ({
              lsn: base.lsn + 100 * (j + 1),
              xid: 100_000 + j,
              n: APPEND_TXN,
              gen: (k: number): Partial<ChangeEvent> => ({ op: 'INSERT', new: row(j * APPEND_TXN + k + 1) }),
            }))
          : [
              {
                lsn: base.lsn + 100,
                xid: 9001,
                n: N,
                gen: (k) => {
                  const g = k + 1;
                  return { op: 'INSERT', new: [String(g), String(g % 1000), md5(String(g)), tsText(g), (g * 1.5).toFixed(1)] };
                },
              },
              {
                lsn: base.lsn + 200,
                xid: 9002,
                n: N / 2,
                gen: (k) => {
                  const g = k + 1;
                  return { op: 'UPDATE', new: [String(g), String((g % 1000) + 1), md5(md5(String(g))), tsText(g), (g * 1.5).toFixed(1)] };
                },
              },
              {
                lsn: base.lsn + 300,
                xid: 9003,
                n: N / 5,
                gen: (k) => {
                  const g = N - N / 5 + k + 1;
                  return { op: 'DELETE', oldKind: 'K', old: [String(g), null, null, null, null] };
                },
              },
            ];
    for (const t of txns) {
      for (let k = 0; k < t.n; k++) {
        await put(
          emptyEvent({
            database: SRC,
            schema: 'public',
            table: 'bench',
            relation: REL,
            commitLsn: t.lsn,
            xid: t.xid,
            commitTime: now,
            position: k,
            op: 'INSERT',
            ...t.gen(k),
          }),
        );
      }
      await put(
        emptyEvent({ op: 'COMMIT', database: SRC, commitLsn: t.lsn, xid: t.xid, commitTime: now, position: t.n, endLsn: t.lsn + 50 }),
        partitionOf(`txn\u0000${t.xid}`),
      );
    }
    const wm = txns.at(-1)!.lsn;
    for (let p = 0; p < PARTITIONS; p++) {
      await put(emptyEvent({ op: 'WATERMARK', database: SRC, commitLsn: wm, commitTime: now, content: JSON.stringify({ partition: p }) }), p);
      const lastOffset = String(writers[p]!.offset - 1);
      await flush(p);
      await advancePartitionState(store, root, { partition: p, watermarkLsn: wm, watermarkTime: now, lastOffset, lastKey: lastKey[p]! });
    }
    const manifest: ArchiveManifest = {
      version: 1,
      database: SRC,
      systemId: 'bench',
      topic: 'bench',
      partitions: PARTITIONS,
      createdAt: new Date().toISOString(),
    };
    await putOnce(store, archiveManifestKey(root), Buffer.from(JSON.stringify(manifest)));
    console.error(`segments written in ${((Date.now() - tb) / 1000).toFixed(1)} s`);

    // Native logical-replication apply of the same changes (BENCH_SKIP_NATIVE=1 skips it, for
    // profiling our side: no ratio is printed then).
    // Each side starts from a fresh checkpoint: whichever runs second would otherwise pay for the
    // checkpoint (and the full-page writes after it) that the first side's WAL triggered.
    await q('postgres', 'CHECKPOINT');
    const skipNative = Boolean(process.env.BENCH_SKIP_NATIVE);
    let nativeSeconds = NaN;
    if (!skipNative) {
      await q(
        NATIVE,
        `CREATE SUBSCRIPTION ${SLOT} CONNECTION 'host=${baseUrl.hostname} port=${baseUrl.port || 5432} user=${decodeURIComponent(baseUrl.username) || 'postgres'} dbname=${SRC} sslmode=disable' PUBLICATION ${SLOT} WITH (create_slot = false, slot_name = '${SLOT}', copy_data = false)`,
      );
      // sslmode=disable: plain like ours (bench/lib/env.ts plainLibpqUrl).
      // The clock starts when the apply worker runs, as ours counts the replay only (replaySeconds):
      // the launcher starts a subscription's worker at once or up to wal_retrieve_retry_interval
      // (5 s) later when it launched another recently, which in back-to-back runs dwarfed a small
      // workload's apply (a quick run measured native OLTP at 5.6k changes/s that way). Polled
      // every 10 ms at both ends, on one connection (a connection per poll would take CPU from the
      // apply it measures).
      const poll = new pg.Client({ connectionString: urlOf(NATIVE) });
      await poll.connect();
      try {
        for (;;) {
          const w = await poll.query(`SELECT pid FROM pg_stat_subscription WHERE subname = '${SLOT}' AND pid IS NOT NULL`);
          if (w.rows.length > 0) break;
          await new Promise((res) => setTimeout(res, 10));
        }
        const tn = Date.now();
        for (;;) {
          const r = await poll.query<{ l: string | null }>(`SELECT remote_lsn::text AS l FROM pg_replication_origin_status`);
          const l = r.rows[0]?.l;
          if (l && parseLsn(l) > beforeLastCommit) break;
          await new Promise((res) => setTimeout(res, 10));
        }
        nativeSeconds = (Date.now() - tn) / 1000;
      } finally {
        await poll.end();
      }
      await q(NATIVE, `ALTER SUBSCRIPTION ${SLOT} DISABLE`);
      await q(NATIVE, `ALTER SUBSCRIPTION ${SLOT} SET (slot_name = NONE)`);
      await q(NATIVE, `DROP SUBSCRIPTION ${SLOT}`);
    }

    // Ours: first a dry run (fetch, verify, decode, merge, group, build SQL; nothing applied), then
    // the real restore.
    const dry = JSON.parse((await cdpRestore(['--dry-run'])).trim().split('\n').at(-1)!) as { replaySeconds: number };
    await q('postgres', 'CHECKPOINT');
    const tr = Date.now();
    const out = await cdpRestore([]);
    const total = (Date.now() - tr) / 1000;
    const report = JSON.parse(out.trim().split('\n').at(-1)!) as { replaySeconds: number; changes: number; seconds: number };

    const [fs, fn, fo] = await Promise.all([fingerprint(SRC), fingerprint(NATIVE), fingerprint(OURS)]);
    const nativeRate = changes / nativeSeconds;
    const oursRate = report.changes / report.replaySeconds;
    const result: RestoreResult = {
      bench: 'restore',
      workload: WORKLOAD,
      rows: N,
      changes,
      transactions: WORKLOAD === 'oltp' ? N : 3,
      native: { seconds: nativeSeconds, changesPerSecond: Math.round(nativeRate) },
      ours: { replaySeconds: report.replaySeconds, totalSeconds: total, changesPerSecond: Math.round(oursRate), dryRunReplaySeconds: dry.replaySeconds },
      ratio: Math.round((oursRate / nativeRate) * 100) / 100,
      identical: { native: fn === fs, ours: fo === fs },
      baseLsn: formatLsn(base.lsn),
    };
    return result;
  } finally {
    await q(SRC, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '${SLOT}'`).catch(() => {});
    // BENCH_KEEP=1 keeps the source database and the archive (not the targets), to restore the same
    // archive again and again (docs/restore-profile.md): CDP_SOURCE_URL and CDP_S3_PREFIX are printed.
    const keep = Boolean(process.env.BENCH_KEEP);
    if (keep) console.error(`kept: CDP_SOURCE_URL=${urlOf(SRC)} CDP_S3_PREFIX=${PREFIX} (drop database ${SRC} when done)`);
    for (const db of keep ? [OURS, NATIVE] : [OURS, NATIVE, SRC]) await q('postgres', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => {});
    store.client.destroy();
  }
}

function cdpRestore(extra: string[]): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    // As operators run it: with the shebang's node flags (bench/lib/env.ts cdpNodeArgs).
    // BENCH_RESTORE_NODE_FLAGS: more node flags, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
    // BENCH_TEE=1: the restore's stdout is also copied to stderr (e.g. with "--trace-gc").
    const extraFlags = process.env.BENCH_RESTORE_NODE_FLAGS?.split(' ').filter(Boolean) ?? [];
    const p = spawn(process.execPath, [...cdpNodeArgs(extraFlags), 'restore', '--into', urlOf(OURS), '--latest', ...extra], {
      env: { ...process.env, CDP_SOURCE_URL: urlOf(SRC), CDP_S3_PREFIX: PREFIX, CDP_LOG_LEVEL: 'warn', CDP_LOG_FORMAT: 'json' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let s = '';
    p.stdout.on('data', (d: Buffer) => {
      s += d.toString();
      if (process.env.BENCH_TEE) process.stderr.write(d);
    });
    p.on('close', (code) => (code === 0 ? resolve(s) : reject(new Error(`restore exited ${code}`))));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await restoreBench({ workload: WORKLOAD === 'oltp' || WORKLOAD === 'append' ? WORKLOAD : 'bulk', rows: N });
  console.log(JSON.stringify(r));
  if ((!process.env.BENCH_SKIP_NATIVE && !r.identical.native) || !r.identical.ours) process.exitCode = 3;
}
