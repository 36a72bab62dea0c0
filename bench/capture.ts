// Benchmark (DESIGN.md section 9; not a test): capture's changes/s into Kafka against the other
// readers of the same backlog, each draining its own identical slot, in the same run:
//   pg_recvlogical  (pgoutput proto 1 to a file: the walsender's decoding, the ceiling),
//   Debezium        (3.6 embedded engine, pgoutput, JSON converter, no Kafka; bench/debezium),
//   cdp capture     (child process, until its count of records acknowledged by Kafka reaches the
//                    backlog's changes; the slot's confirmed_flush_lsn is reported beside).
// All slots are created before the workload. measureCapture() is what the harness (bench/harness.ts)
// calls for each workload and run; this file run directly is the ANCHORS.md bulk workload once:
//
//   npx tsx bench/capture.ts [--rows 300000] [--no-debezium]   (stack from deploy/local must be up)
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';
import { buildDebezium, runDebezium, type DebeziumResult } from './lib/debezium.js';
import { cdpNodeArgs, dbUrl, loadStackEnv, plainLibpqUrl, lsnNum, sleep, sql, REPO } from './lib/env.js';
import { bulk, type Workload } from './lib/workloads.js';
import '../src/kafka/codecs.js';

export type Reader = 'pg_recvlogical' | 'debezium' | 'capture';

export interface ReaderResult {
  seconds: number;
  changesPerSecond: number;
  /** MB/s of what the reader produced (pgoutput bytes, Debezium JSON, Avro into Kafka). */
  mbPerSecond?: number;
  note?: string;
  peakRssMb?: number;
}

export interface CaptureRun {
  workload: string;
  changes: number;
  walMb: number;
  order: Reader[];
  readers: Partial<Record<Reader, ReaderResult>>;
}

/** One run: a fresh database, the workload, then each reader drains its slot in `order`. */
export async function measureCapture(w: Workload, order: Reader[], opts: { partitions?: number } = {}): Promise<CaptureRun> {
  loadStackEnv();
  const name = `bench_cap_${randomBytes(3).toString('hex')}`;
  const admin = dbUrl('postgres');
  const url = dbUrl(name);
  const slots: Record<Reader, string> = { capture: name, pg_recvlogical: `${name}_recv`, debezium: `${name}_dbz` };
  const port = 19000 + Math.floor(Math.random() * 1000);
  const env = {
    ...process.env,
    CDP_SOURCE_URL: url,
    CDP_SLOT: name,
    CDP_PUBLICATION: name,
    CDP_TOPIC: name,
    CDP_KAFKA_PARTITIONS: String(opts.partitions ?? 6),
    CDP_S3_PREFIX: `bench/${name}`,
    CDP_METRICS_PORT: String(port),
    CDP_LOG_FORMAT: 'json',
    CDP_LOG_LEVEL: 'info',
    NODE_NO_WARNINGS: '1',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  };
  const dir = mkdtempSync(join(tmpdir(), 'bench-capture-'));
  await sql(admin, `CREATE DATABASE ${name}`);
  const result: CaptureRun = { workload: w.name, changes: w.changes, walMb: 0, order, readers: {} };
  try {
    for (const s of w.schema) await sql(url, s);
    for (const s of w.prepare) await sql(url, s);
    const setup = spawnSync(process.execPath, [`${REPO}bin/cdp.mjs`, 'setup', '--no-basebackup'], { env, encoding: 'utf8' });
    if (setup.status !== 0) throw new Error(`setup failed: ${setup.stderr}`);
    for (const r of order) if (r !== 'capture') await sql(url, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slots[r]]);

    const [{ start }] = await sql<{ start: string }>(url, 'SELECT pg_current_wal_lsn()::text AS start');
    for (const s of w.run) await sql(url, s);
    const [{ end }] = await sql<{ end: string }>(url, 'SELECT pg_current_wal_lsn()::text AS end');
    result.walMb = (lsnNum(end) - lsnNum(start)) / 1e6;
    // Each reader starts from a fresh checkpoint (the workload's dirty pages are not its cost).
    await sql(admin, 'CHECKPOINT');

    for (const r of order) {
      if (r === 'pg_recvlogical') result.readers[r] = recvlogical(url, slots[r], name, end, w.changes, dir);
      else if (r === 'debezium') result.readers[r] = await debezium(url, slots[r], name, w.changes);
      else result.readers[r] = await capture(env, url, name, end, w.changes, dir, port);
    }
    return result;
  } finally {
    await sql(admin, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = ANY($1) AND NOT active`, [
      Object.values(slots),
    ]).catch(() => {});
    await sql(admin, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch((e: unknown) => console.error(e));
    const kafka = new Kafka({ brokers: (process.env.CDP_KAFKA_BROKERS ?? '127.0.0.1:9092').split(','), logLevel: logLevel.NOTHING });
    const kadmin = kafka.admin();
    await kadmin.connect();
    await kadmin.deleteTopics({ topics: [name] }).catch(() => {});
    await kadmin.disconnect();
    rmSync(dir, { recursive: true, force: true });
  }
}

function recvlogical(url: string, slot: string, publication: string, end: string, changes: number, dir: string): ReaderResult {
  const out = join(dir, 'recvlogical.out');
  const t0 = process.hrtime.bigint();
  const r = spawnSync(
    'pg_recvlogical',
    [
      '-d',
      plainLibpqUrl(url),
      '--slot',
      slot,
      '--start',
      '--endpos',
      end,
      '--no-loop',
      '-o',
      'proto_version=1',
      '-o',
      `publication_names=${publication}`,
      '-f',
      out,
    ],
    { encoding: 'utf8' },
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`pg_recvlogical failed: ${r.stderr}`);
  const bytes = statSync(out).size;
  rmSync(out);
  return {
    seconds,
    changesPerSecond: changes / seconds,
    mbPerSecond: bytes / 1e6 / seconds,
    note: `${(bytes / 1e6).toFixed(1)} MB of pgoutput, process start to --endpos`,
  };
}

async function debezium(url: string, slot: string, publication: string, changes: number): Promise<ReaderResult> {
  const r: DebeziumResult = await runDebezium({ url, slot, publication, changes, timeoutS: Math.max(180, Math.ceil(changes / 2000)) });
  return {
    seconds: r.seconds,
    changesPerSecond: changes / r.seconds,
    mbPerSecond: r.jsonBytes / 1e6 / r.seconds,
    note: `task started to last change (JVM + connector start-up ${r.startupSeconds.toFixed(1)} s not counted; first to last change ${r.firstToLastSeconds.toFixed(1)} s); ${(r.jsonBytes / 1e6).toFixed(1)} MB of JSON`,
  };
}

async function capture(env: NodeJS.ProcessEnv, url: string, slot: string, end: string, changes: number, dir: string, port: number): Promise<ReaderResult> {
  const nodeFlags = process.env.BENCH_CAPTURE_NODE_FLAGS ? process.env.BENCH_CAPTURE_NODE_FLAGS.split(' ') : [];
  // BENCH_BATCH_RECORDS / BENCH_BATCH_BYTES override capture.batchMaxRecords / batchMaxBytes.
  const cfgFile = join(dir, 'cdp.json');
  const cap: Record<string, number> = {};
  if (process.env.BENCH_BATCH_RECORDS) cap.batchMaxRecords = Number(process.env.BENCH_BATCH_RECORDS);
  if (process.env.BENCH_BATCH_BYTES) cap.batchMaxBytes = Number(process.env.BENCH_BATCH_BYTES);
  writeFileSync(cfgFile, JSON.stringify({ capture: cap }));
  const child = spawn(process.execPath, [...cdpNodeArgs(nodeFlags), '--config', cfgFile, 'capture'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  // Streaming starts when capture logs it; time before that is process start (tsx, connections).
  let streamingAt = 0n;
  child.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-200_000);
    if (!streamingAt && stderr.includes('"capture streaming"')) streamingAt = process.hrtime.bigint();
  });
  // Done = capture's own counter of records acknowledged by Kafka reaches the backlog's changes
  // (polled every 50 ms). The slot's confirmed_flush_lsn tells the same thing but only at capture's
  // next standby status update (every second), which would dominate a small backlog; it is waited
  // for afterwards and reported beside.
  const target = lsnNum(end);
  const metricsUrl = `http://127.0.0.1:${port}/metrics`;
  // A sample with or without labels: `name 12` or `name{database="d",slot="s"} 12`.
  const metric = (text: string, m: string) => Number(new RegExp(`^${m}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  const limitMs = Math.max(600_000, changes * 10);
  const deadline = Date.now() + limitMs;
  let seconds: number;
  let hwmKb = 0;
  let text: string;
  const alive = () => {
    try {
      hwmKb = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? hwmKb);
    } catch {
      throw new Error(`capture exited early: ${stderr.slice(-3000)}`);
    }
  };
  try {
    for (;;) {
      await sleep(50);
      alive();
      if (!streamingAt) continue;
      text = await fetch(metricsUrl)
        .then((r) => r.text())
        .catch(() => '');
      const acked = metric(text, 'cdp_capture_changes_total');
      if (acked >= changes) {
        seconds = Number(process.hrtime.bigint() - streamingAt) / 1e9;
        break;
      }
      if (Date.now() > deadline)
        throw new Error(`capture: ${acked} of ${changes} changes acknowledged within ${limitMs / 1000} s (is cdp_capture_changes_total still exported?)`);
    }
    let confirmedS = NaN;
    for (let i = 0; i < 200; i++) {
      const [row] = await sql<{ c: string | null }>(url, 'SELECT confirmed_flush_lsn::text AS c FROM pg_replication_slots WHERE slot_name = $1', [slot]);
      if (row?.c && lsnNum(row.c) >= target) {
        confirmedS = Number(process.hrtime.bigint() - streamingAt) / 1e9;
        break;
      }
      await sleep(50);
      alive();
    }
    const bytes = metric(text, 'cdp_capture_bytes_total');
    return {
      seconds,
      changesPerSecond: changes / seconds,
      mbPerSecond: bytes / 1e6 / seconds,
      peakRssMb: hwmKb / 1024,
      note: `"capture streaming" to the last change acknowledged by Kafka; slot confirmed ${Number.isFinite(confirmedS) ? `at ${confirmedS.toFixed(2)} s` : 'not within 10 s'}; ${(bytes / 1e6).toFixed(1)} MB of Avro`,
    };
  } finally {
    child.kill('SIGTERM');
    if (child.exitCode === null) await new Promise((res) => child.on('exit', res));
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--rows');
  const rows = Number(i > 0 ? process.argv[i + 1] : (process.env.BENCH_ROWS ?? 300_000));
  const order: Reader[] = process.argv.includes('--no-debezium') ? ['pg_recvlogical', 'capture'] : ['pg_recvlogical', 'debezium', 'capture'];
  if (order.includes('debezium')) buildDebezium();
  const w = bulk(rows);
  console.log(`workload: ${w.describe}`);
  const r = await measureCapture(w, order);
  console.log(`WAL: ${r.walMb.toFixed(1)} MB, ${r.changes} row changes`);
  const anchor = r.readers.pg_recvlogical!;
  for (const [k, v] of Object.entries(r.readers)) {
    console.log(
      `${k.padEnd(15)}: ${v.seconds.toFixed(2)} s  ${Math.round(v.changesPerSecond).toLocaleString('en')} changes/s  ${v.mbPerSecond?.toFixed(1)} MB/s  ratio to pg_recvlogical ${(v.changesPerSecond / anchor.changesPerSecond).toFixed(2)}x  (${v.note}${v.peakRssMb ? `, peak RSS ${v.peakRssMb.toFixed(0)} MB` : ''})`,
    );
  }
}
