// Benchmark (DESIGN.md section 9; not a test): capture's changes/s and MB/s into Kafka against
// pg_recvlogical reading the same backlog from an identical slot, in the same run.
//
// Workload like ANCHORS.md, scaled by BENCH_ROWS (default 300,000 inserts in one transaction, then
// BENCH_ROWS/2 updates, BENCH_ROWS/5 deletes). Both slots are created before the workload, so each
// reader drains exactly the same WAL. pg_recvlogical runs first (to --endpos, writing to a file);
// then `cdp capture` runs as a child process until the slot's confirmed_flush_lsn reaches the same
// end: that is "everything acknowledged by Kafka", the figure that matters.
//
//   npx tsx bench/capture.ts            (stack from deploy/local must be up)
//   BENCH_ROWS=1000000 npx tsx bench/capture.ts
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { query as sql, stackEnv } from '../test/integration/capture/helpers.js';
import '../src/kafka/codecs.js';

const ROOT = new URL('../', import.meta.url).pathname;
const ROWS = Number(process.env.BENCH_ROWS ?? 300_000);
const ADMIN = 'postgres://postgres@127.0.0.1:5432/postgres';

const lsnNum = (t: string) => {
  const [hi, lo] = t.split('/');
  return parseInt(hi!, 16) * 2 ** 32 + parseInt(lo!, 16);
};

async function main(): Promise<void> {
  const name = `bench_cap_${randomBytes(3).toString('hex')}`;
  const url = `postgres://postgres@127.0.0.1:5432/${name}`;
  const anchorSlot = `${name}_anchor`;
  const port = 19000 + Math.floor(Math.random() * 1000);
  const env = {
    ...process.env,
    ...stackEnv(),
    CDP_SOURCE_URL: url,
    CDP_SLOT: name,
    CDP_PUBLICATION: name,
    CDP_TOPIC: name,
    CDP_KAFKA_PARTITIONS: process.env.BENCH_PARTITIONS ?? '6',
    CDP_S3_PREFIX: `bench/${name}`,
    CDP_METRICS_PORT: String(port),
    CDP_LOG_FORMAT: 'json',
    CDP_LOG_LEVEL: 'info',
    NODE_NO_WARNINGS: '1',
  };
  const dir = mkdtempSync(join(tmpdir(), 'bench-capture-'));
  await sql(ADMIN, `CREATE DATABASE ${name}`);
  try {
    await sql(url, `CREATE TABLE bench (id bigint PRIMARY KEY, n integer, s text, t timestamptz, amount numeric(12,2))`);
    const setup = spawnSync(process.execPath, [`${ROOT}bin/cdp.mjs`, 'setup', '--no-basebackup'], { env, encoding: 'utf8' });
    if (setup.status !== 0) throw new Error(`setup failed: ${setup.stderr}`);
    await sql(url, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [anchorSlot]);

    console.log(`workload: ${ROWS} inserts, ${ROWS / 2} updates, ${ROWS / 5} deletes (3 transactions)`);
    const [{ start }] = await sql<{ start: string }>(url, 'SELECT pg_current_wal_lsn()::text AS start');
    await sql(url, `INSERT INTO bench SELECT g, g % 1000, md5(g::text), now(), (g % 100000) / 100.0 FROM generate_series(1, ${ROWS}) g`);
    await sql(url, `UPDATE bench SET n = n + 1 WHERE id <= ${ROWS / 2}`);
    await sql(url, `DELETE FROM bench WHERE id > ${ROWS - ROWS / 5}`);
    const [{ end }] = await sql<{ end: string }>(url, 'SELECT pg_current_wal_lsn()::text AS end');
    const changes = ROWS + ROWS / 2 + ROWS / 5;
    console.log(`WAL: ${((lsnNum(end) - lsnNum(start)) / 1e6).toFixed(1)} MB, ${changes} row changes`);

    // Anchor: pg_recvlogical, pgoutput proto 1, same publication, to a file.
    const out = join(dir, 'recvlogical.out');
    let t0 = process.hrtime.bigint();
    const r = spawnSync(
      'pg_recvlogical',
      ['-d', url, '--slot', anchorSlot, '--start', '--endpos', end, '--no-loop', '-o', 'proto_version=1', '-o', `publication_names=${name}`, '-f', out],
      { encoding: 'utf8' },
    );
    const anchorS = Number(process.hrtime.bigint() - t0) / 1e9;
    if (r.status !== 0) throw new Error(`pg_recvlogical failed: ${r.stderr}`);
    const anchorBytes = statSync(out).size;
    rmSync(out);

    // Capture: child process until confirmed_flush_lsn >= end (all acknowledged by Kafka).
    t0 = process.hrtime.bigint();
    const nodeFlags = process.env.BENCH_CAPTURE_NODE_FLAGS ? process.env.BENCH_CAPTURE_NODE_FLAGS.split(' ') : [];
    // BENCH_BATCH_RECORDS / BENCH_BATCH_BYTES override capture.batchMaxRecords / batchMaxBytes.
    const cfgFile = join(dir, 'cdp.json');
    const capture: Record<string, number> = {};
    if (process.env.BENCH_BATCH_RECORDS) capture.batchMaxRecords = Number(process.env.BENCH_BATCH_RECORDS);
    if (process.env.BENCH_BATCH_BYTES) capture.batchMaxBytes = Number(process.env.BENCH_BATCH_BYTES);
    writeFileSync(cfgFile, JSON.stringify({ capture }));
    const child = spawn(process.execPath, [...nodeFlags, `${ROOT}bin/cdp.mjs`, '--config', cfgFile, 'capture'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    // Streaming starts when capture logs it; time before that is process start (tsx, connections).
    let streamingAt = 0n;
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (!streamingAt && stderr.includes('"capture streaming"')) streamingAt = process.hrtime.bigint();
    });
    const target = lsnNum(end);
    let captureS = 0;
    let hwmKb = 0;
    for (;;) {
      await new Promise((res) => setTimeout(res, 100));
      try {
        hwmKb = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? hwmKb);
      } catch {
        throw new Error(`capture exited early: ${stderr}`);
      }
      const [row] = await sql<{ c: string | null }>(url, 'SELECT confirmed_flush_lsn::text AS c FROM pg_replication_slots WHERE slot_name = $1', [name]);
      if (row?.c && lsnNum(row.c) >= target) {
        captureS = Number(process.hrtime.bigint() - (streamingAt || t0)) / 1e9;
        break;
      }
    }
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const metric = (m: string) => Number(new RegExp(`^${m} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN);
    const bytes = metric('cdp_capture_bytes_total');
    const produced = metric('cdp_capture_changes_total');
    if (process.env.CDP_CAPTURE_DEBUG_MEMORY) for (const l of stderr.split('\n')) if (l.includes('"memory"')) console.log(l.slice(0, 300));
    child.kill('SIGTERM');
    await new Promise((res) => child.on('exit', res));
    // What Kafka stored (the log segments of the topic's partitions, on the local stack's data dir).
    const dataDir = join(process.env.HOME ?? '/root', '.cache/katya-cdp/kafka/data');
    const du = spawnSync('bash', ['-c', `du -scb ${dataDir}/${name}-* 2>/dev/null | tail -1`], { encoding: 'utf8' });
    const stored = Number(du.stdout.split(/\s/)[0]);

    const anchorRate = changes / anchorS;
    const captureRate = changes / captureS;
    console.log(`pg_recvlogical : ${anchorS.toFixed(2)} s  ${Math.round(anchorRate).toLocaleString('en')} changes/s  ${(anchorBytes / 1e6 / anchorS).toFixed(1)} MB/s of pgoutput bytes (${(anchorBytes / 1e6).toFixed(1)} MB)`);
    console.log(
      `cdp capture    : ${captureS.toFixed(2)} s  ${Math.round(captureRate).toLocaleString('en')} changes/s  ${(bytes / 1e6 / captureS).toFixed(1)} MB/s of Avro into Kafka (${(bytes / 1e6).toFixed(1)} MB, ${produced} data records acknowledged; from "capture streaming")  peak RSS ${(hwmKb / 1024).toFixed(0)} MB`,
    );
    console.log(`Kafka log       : ${Number.isFinite(stored) && stored > 0 ? `${(stored / 1e6).toFixed(1)} MB stored` : 'size unknown (not the local stack?)'}, capture.compression=${process.env.CDP_CAPTURE_COMPRESSION ?? 'zstd (default)'}`);
    console.log(`ratio capture / pg_recvlogical: ${(captureRate / anchorRate).toFixed(2)}x`);
  } finally {
    await sql(ADMIN, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ($1, $2) AND NOT active`, [name, anchorSlot]).catch(() => {});
    await sql(ADMIN, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch((e) => console.error(e));
    const kafka = new Kafka({ brokers: ['127.0.0.1:9092'], logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    await admin.deleteTopics({ topics: [name] }).catch(() => {});
    await admin.disconnect();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
