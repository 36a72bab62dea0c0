// Archive benchmark (DESIGN.md section 9: measured, not asserted). Run: npx tsx bench/archive.ts
//
// Part 1, the segment codec alone (no services): changes/s and MB/s through SegmentWriter, and the
// stored size against (a) the uncompressed Avro of the same changes and (b) the raw pgoutput bytes
// of the same changes, read by pg_recvlogical from the local Postgres (the ANCHORS.md workload
// shape: bigint key, int, md5 text, timestamptz, numeric; inserts, then updates of half, then
// deletes of a fifth). The rows are generated here and COPYed in, so both sides hold the same values.
//
// Part 2, end to end on the local stack (Kafka + S3): a steady offered load produced like capture
// does (changes + COMMIT markers, WATERMARK to every partition every 200 ms) and archived by an
// in-process archiver: throughput, and produce-to-durable-on-S3 latency per change (the record's
// commitTime is its produce time; durable = the S3 PUT of its segment returned). Capture is not in
// this measurement, so this is produce-to-durable, not Postgres-commit-to-durable.
//
// Env: BENCH_ROWS (default 200000), BENCH_RATE changes/s (default 5000), BENCH_SECONDS (default 30),
// BENCH_AGE_MS segmentMaxAgeMs for part 2 (default 1000), BENCH_SKIP_E2E=1, BENCH_SKIP_PG=1,
// BENCH_SKIP_CODEC=1 (part 2 only: its RSS figure then excludes part 1's data).

import { execFileSync, spawn } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';
import { startArchiver } from '../src/archive/archiver.js';
import { keyringOf, parseMasterKey } from '../src/archive/crypto.js';
import { createCodec } from '../src/format/codec.js';
import { DEFAULT_BLOCK_BYTES, readSegment, SegmentWriter } from '../src/archive/segment.js';
import { segmentKey } from '../src/archive/layout.js';
import { loadConfig } from '../src/config/config.js';
import { emptyEvent, encodeChange, kafkaKey, SCHEMA_HEADER, type ChangeEvent } from '../src/format/change-event.js';
import '../src/kafka/codecs.js';
import { plainLibpqUrl } from './lib/env.js';

const ROWS = Number(process.env.BENCH_ROWS ?? 200_000);
const RATE = Number(process.env.BENCH_RATE ?? 5_000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 30);
const AGE_MS = Number(process.env.BENCH_AGE_MS ?? 1_000);
const MB = 1024 * 1024;

function stackEnv(): void {
  const out = execFileSync('bash', [new URL('../deploy/local/stack.sh', import.meta.url).pathname, 'env'], { encoding: 'utf8' });
  for (const line of out.split('\n')) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) process.env[m[1]!] ??= m[2]!.replace(/^'(.*)'$/, '$1');
  }
}

const REL = {
  oid: 16400,
  replicaIdentity: 'd',
  columns: ['id', 'n', 'note', 'at', 'amount'],
  types: ['bigint', 'integer', 'text', 'timestamp with time zone', 'numeric'],
  key: [0],
};

function row(id: number, salt: string): string[] {
  return [
    String(id),
    String((id * 7919) % 100000),
    createHash('md5').update(`${salt}${id}`).digest('hex'),
    new Date(1_790_000_000_000 + id * 1000).toISOString().replace('T', ' ').replace('Z', '+00'),
    (((id * 31) % 1_000_000) / 100).toFixed(2),
  ];
}

/** The ANCHORS.md workload as change events: ROWS inserts (one txn), ROWS/2 updates, ROWS/5 deletes. */
function workload(): { events: ChangeEvent[]; rowsIns: string[][] } {
  const events: ChangeEvent[] = [];
  const rowsIns: string[][] = [];
  const t = Date.now() * 1000;
  const base = { database: 'bench', schema: 'public', table: 'anchor', relation: REL };
  let lsn = 0x5000_0000;
  const txn = (rows: number, make: (i: number) => Partial<ChangeEvent>) => {
    lsn += 0x100000;
    for (let i = 0; i < rows; i++)
      events.push(emptyEvent({ ...base, op: 'INSERT', commitLsn: lsn, changeLsn: lsn - rows + i, xid: lsn, commitTime: t, position: i, ...make(i) }));
    events.push(emptyEvent({ op: 'COMMIT', database: 'bench', commitLsn: lsn, endLsn: lsn + 48, xid: lsn, commitTime: t, position: rows }));
  };
  for (let i = 0; i < ROWS; i++) rowsIns.push(row(i + 1, 'a'));
  txn(ROWS, (i) => ({ op: 'INSERT', new: rowsIns[i]! }));
  txn(Math.floor(ROWS / 2), (i) => ({ op: 'UPDATE', new: row(i + 1, 'b') }));
  txn(Math.floor(ROWS / 5), (i) => ({ op: 'DELETE', oldKind: 'K', old: [String(i + 1), null, null, null, null] }));
  return { events, rowsIns };
}

function codecPart(values: Buffer[], codec: 'zstandard' | 'deflate', encrypt: boolean) {
  const keyring = encrypt ? keyringOf(parseMasterKey(randomBytes(32).toString('hex'), 'bench'), { archive: 'bench' }) : undefined;
  const t0 = process.hrtime.bigint();
  let w = new SegmentWriter({ partition: 0, codec });
  let stored = 0;
  let raw = 0;
  let segments = 0;
  const segs: { bytes: Buffer; sha: string; key: string }[] = [];
  for (let i = 0; i < values.length; i++) {
    w.append(values[i]!, String(i));
    if (w.rawBytes >= 64 * MB) {
      const s = w.finish(keyring);
      stored += s.bytes.length;
      raw += s.rawBytes;
      segments++;
      segs.push({ bytes: s.bytes, sha: s.name.sha256, key: segmentKey('bench', s.name) });
      w = new SegmentWriter({ partition: 0, codec });
    }
  }
  const s = w.finish(keyring);
  stored += s.bytes.length;
  raw += s.rawBytes;
  segments++;
  segs.push({ bytes: s.bytes, sha: s.name.sha256, key: segmentKey('bench', s.name) });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  // Read back (verify + decrypt + decode) to time the restore side's first step too.
  const r0 = process.hrtime.bigint();
  let n = 0;
  for (const seg of segs) for (const b of readSegment(seg.bytes, { expectedSha256: seg.sha, keyring, key: seg.key }).blocks()) n += b.length;
  const rsecs = Number(process.hrtime.bigint() - r0) / 1e9;
  if (n !== values.length) throw new Error(`read back ${n} of ${values.length}`);
  return { codec, encrypt, segments, raw, stored, secs, rsecs };
}

async function pgoutputBytes(rows: string[][]): Promise<{ bytes: number; zstdBytes: number } | undefined> {
  if (process.env.BENCH_SKIP_PG === '1') return undefined;
  const url = process.env.CDP_SOURCE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const db = `bench_archive_${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${db}`);
  const u = new URL(url);
  u.pathname = `/${db}`;
  const c = new pg.Client({ connectionString: u.toString() });
  const file = `/tmp/${db}.pgoutput`;
  try {
    await c.connect();
    await c.query(
      `CREATE TABLE anchor (id bigint PRIMARY KEY, n int, note text, at timestamptz, amount numeric); SET timezone = 'UTC'; CREATE PUBLICATION p FOR TABLE anchor`,
    );
    await c.query(`SELECT pg_create_logical_replication_slot('${db}', 'pgoutput')`);
    const { from: copyFrom } = await import('pg-copy-streams');
    await new Promise<void>((resolve, reject) => {
      const s = c.query(copyFrom('COPY anchor FROM STDIN'));
      s.on('finish', () => resolve());
      s.on('error', reject);
      for (const r of rows) s.write(r.join('\t') + '\n');
      s.end();
    });
    await c.query(`UPDATE anchor SET n = n + 1, note = md5('b' || id) WHERE id <= ${Math.floor(ROWS / 2)}`);
    await c.query(`DELETE FROM anchor WHERE id <= ${Math.floor(ROWS / 5)}`);
    const end = (await c.query(`SELECT pg_current_wal_lsn()::text AS l`)).rows[0].l as string;
    await new Promise<void>((resolve, reject) => {
      const p = spawn(
        'pg_recvlogical',
        ['-d', plainLibpqUrl(u.toString()), '--slot', db, '--start', '-o', 'proto_version=1', '-o', `publication_names=p`, '-E', end, '-f', file, '--no-loop'],
        { stdio: 'inherit' },
      );
      p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`pg_recvlogical exited ${code}`))));
    });
    // zstd alone on the same pgoutput bytes, cut into blocks as the segments are (level 1, 1 MiB):
    // what a format that stored pgoutput as it comes would reach.
    const raw = readFileSync(file);
    const zstd = createCodec('zstandard', 1);
    let zstdBytes = 0;
    for (let i = 0; i < raw.length; i += DEFAULT_BLOCK_BYTES) zstdBytes += zstd.compress(raw.subarray(i, i + DEFAULT_BLOCK_BYTES)).length;
    return { bytes: raw.length, zstdBytes };
  } finally {
    await c.query(`SELECT pg_drop_replication_slot('${db}')`).catch(() => {});
    await c.end().catch(() => {});
    await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => {});
    await admin.end();
    rmSync(file, { force: true });
  }
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function e2e(): Promise<void> {
  const brokers = (process.env.CDP_KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
  const kafka = new Kafka({ clientId: 'bench-archive', brokers, logLevel: logLevel.NOTHING });
  const id = randomBytes(3).toString('hex');
  const topic = `bench-archive-${id}`;
  const partitions = 6;
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }], waitForLeaders: true });
  const cfg = loadConfig({
    env: process.env,
    flags: { 'kafka.topic': topic, 's3.prefix': `bench/${id}`, 'archive.groupId': `bench-${id}`, 'archive.segmentMaxAgeMs': AGE_MS, 'metrics.port': 0 },
  });
  const latencies: number[] = [];
  let storedBytes = 0;
  let rawBytes = 0;
  let segments = 0;
  const controller = new AbortController();
  const { done } = await startArchiver(
    { cfg, log: pino({ level: 'warn' }), signal: controller.signal },
    {
      clientSuffix: `bench-${id}`,
      onSegmentStored: (seg, _key, storedAt) => {
        segments++;
        storedBytes += seg.bytes.length;
        rawBytes += seg.rawBytes;
        for (const b of readSegment(seg.bytes, { expectedSha256: seg.name.sha256 }).blocks()) {
          for (const ev of b) if (ev.op !== 'WATERMARK' && ev.op !== 'COMMIT') latencies.push(storedAt - ev.commitTime / 1000);
        }
      },
    },
  );
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const rss0 = process.memoryUsage().rss;
  let peakRss = rss0;
  const rssTimer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 200);
  const started = Date.now();
  let sent = 0;
  let lsn = 0x1_0000_0000;
  let xid = 1;
  // Every 20 ms: the changes due by now, 10 rows per transaction, plus a watermark every 200 ms.
  let lastWm = 0;
  while (Date.now() - started < SECONDS * 1000) {
    const due = Math.floor(((Date.now() - started) / 1000) * RATE) - sent;
    const msgs: { key: string; value: Buffer; headers: Record<string, string>; partition?: number }[] = [];
    for (let k = 0; k < due; k += 10) {
      lsn += 0x1000;
      xid++;
      const now = Date.now() * 1000;
      const rows = Math.min(10, due - k);
      for (let i = 0; i < rows; i++) {
        const ev = emptyEvent({
          op: 'INSERT',
          database: 'bench',
          schema: 'public',
          table: 'anchor',
          relation: REL,
          commitLsn: lsn,
          xid,
          commitTime: now,
          position: i,
          new: row(sent + k + i, 'e'),
        });
        msgs.push({ key: kafkaKey(ev), value: encodeChange(ev), headers: { [SCHEMA_HEADER.name]: SCHEMA_HEADER.value } });
      }
      const c = emptyEvent({ op: 'COMMIT', database: 'bench', commitLsn: lsn, endLsn: lsn + 48, xid, commitTime: now, position: rows });
      msgs.push({ key: kafkaKey(c), value: encodeChange(c), headers: { [SCHEMA_HEADER.name]: SCHEMA_HEADER.value } });
    }
    if (Date.now() - lastWm >= 200) {
      lastWm = Date.now();
      for (let p = 0; p < partitions; p++) {
        msgs.push({
          partition: p,
          key: 'wm',
          value: encodeChange(
            emptyEvent({ op: 'WATERMARK', database: 'bench', commitLsn: lsn, commitTime: Date.now() * 1000, content: JSON.stringify({ partition: p }) }),
          ),
          headers: { [SCHEMA_HEADER.name]: SCHEMA_HEADER.value },
        });
      }
    }
    // Chunks keep each partition's record batch under the broker's message.max.bytes (1 MB).
    for (let i = 0; i < msgs.length; i += 1000) await producer.send({ topic, acks: -1, messages: msgs.slice(i, i + 1000) });
    sent += Math.max(0, due);
    await new Promise((r) => setTimeout(r, 20));
  }
  const produceSecs = (Date.now() - started) / 1000;
  // Let the last age cut land.
  const deadline = Date.now() + 60_000;
  while (latencies.length < sent && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  clearInterval(rssTimer);
  controller.abort();
  await done;
  await producer.disconnect();
  await admin.deleteTopics({ topics: [topic] }).catch(() => {});
  await admin.disconnect();
  const sorted = [...latencies].sort((a, b) => a - b);
  console.log(`\n== end to end: offered ${RATE} changes/s for ${produceSecs.toFixed(1)} s, ${partitions} partitions, segmentMaxAgeMs ${AGE_MS}`);
  console.log(
    `changes produced ${sent}, archived ${latencies.length} (${(latencies.length / produceSecs).toFixed(0)} changes/s sustained), segments ${segments}`,
  );
  console.log(
    `stored ${(storedBytes / MB).toFixed(2)} MB for ${(rawBytes / MB).toFixed(2)} MB of Avro (ratio ${(rawBytes / storedBytes).toFixed(2)}x; small age-cut segments compress worse)`,
  );
  console.log(
    `produce-to-durable-on-S3 latency ms: p50 ${pct(sorted, 50).toFixed(0)}  p99 ${pct(sorted, 99).toFixed(0)}  max ${sorted[sorted.length - 1]?.toFixed(0)}`,
  );
  console.log(`RSS: start ${(rss0 / MB).toFixed(0)} MB, peak ${(peakRss / MB).toFixed(0)} MB (bench process: producer + archiver + latency bookkeeping)`);
}

async function main(): Promise<void> {
  stackEnv();
  if (process.env.BENCH_SKIP_CODEC === '1') return e2e();
  const { events, rowsIns } = workload();
  const values = events.map(encodeChange);
  const dataChanges = events.filter((e) => e.op !== 'COMMIT').length;
  const avroBytes = values.reduce((s, v) => s + v.length, 0);
  console.log(`== segment codec: ${dataChanges} changes (+${events.length - dataChanges} COMMIT markers), ${(avroBytes / MB).toFixed(1)} MB of Avro`);
  const pg = await pgoutputBytes(rowsIns).catch((err: unknown) => {
    console.log(`(pgoutput comparison skipped: ${(err as Error).message})`);
    return undefined;
  });
  const pgBytes = pg?.bytes;
  if (pg) {
    console.log(`pgoutput bytes of the same changes (pg_recvlogical, proto 1): ${(pg.bytes / MB).toFixed(1)} MB`);
    console.log(
      `zstd alone on those pgoutput bytes (level 1, 1 MiB blocks): ${(pg.zstdBytes / MB).toFixed(1)} MB, ${(pg.bytes / pg.zstdBytes).toFixed(2)}x smaller than pgoutput`,
    );
  }
  for (const [codec, enc] of [
    ['zstandard', false],
    ['deflate', false],
    ['zstandard', true],
  ] as const) {
    const r = codecPart(values, codec, enc);
    console.log(
      `${codec}${enc ? '+AES-GCM' : ''}: write ${(dataChanges / r.secs).toFixed(0)} changes/s, ${(r.raw / MB / r.secs).toFixed(0)} MB/s of Avro; ` +
        `read+verify ${(dataChanges / r.rsecs).toFixed(0)} changes/s; stored ${(r.stored / MB).toFixed(1)} MB in ${r.segments} segment(s): ` +
        `${(r.raw / r.stored).toFixed(2)}x smaller than Avro` +
        (pgBytes ? `, ${(pgBytes / r.stored).toFixed(2)}x smaller than pgoutput` : ''),
    );
  }
  if (process.env.BENCH_SKIP_E2E !== '1') await e2e();
}

await main();
