// Commit-to-durable latency benchmark (DESIGN.md section 9; issue 4). Not a test. Run:
//   npx tsx bench/latency.ts [--rates 500,2000] [--seconds 25] [--conns 2] [--age-ms 1000]
//                            [--watermark-ms 1000] [--poll-ms 100] [--no-anchor]
// (env fallbacks: BENCH_RATES, BENCH_SECONDS, BENCH_CONNS, BENCH_AGE_MS, BENCH_WATERMARK_MS,
//  BENCH_POLL_MS, BENCH_SKIP_ANCHOR=1)
//
// End to end with the real capture and archive, in this process (startCapture + startArchiver, as
// `cdp run` composes them), on a scratch database with its own slot, publication, 3-partition topic,
// consumer group and S3 prefix, all created by `setup` and removed at the end.
//
// Load: for each offered rate, single-row transactions (BEGIN; INSERT; COMMIT) paced open-loop
// over --conns connections for --seconds. Each is sent as one simple query
// `BEGIN; INSERT ...; COMMIT; SELECT pg_current_wal_lsn()`, so its client commit time is taken when
// that query returns (the SELECT after COMMIT costs microseconds) and its LSN is read in the same
// session right after the COMMIT: >= the end of its commit record.
//
// Durable: restorablePoint() (src/archive/catalog.ts, what status and restore use) is polled every
// --poll-ms; a transaction is durable at the first poll whose point L >= its commit LSN. Latency =
// that poll's return time - the client commit time. Two LSNs per transaction:
//   exact: the commit LSN from the anchor's pgoutput stream (Begin final_lsn, matched by row id),
//          compared like the restorable point itself is defined (commit LSN <= L);
//   upper: pg_current_wal_lsn() after COMMIT, which is > the commit LSN, so L >= it only once a
//          LATER transaction's commit is covered: an upper bound (under load, by ~one inter-commit gap).
// Both are also quantised by the poll (up to --poll-ms + one GET per partition late).
//
// Anchor, in the same run: pg_recvlogical (pgoutput proto 1, same publication, its own slot created
// before the load) streaming to our stdin pipe; "seen" = when the Commit of the transaction reaches
// this process. That is the floor any logical-decoding CDP can reach on this machine. It runs
// concurrently with capture (a second walsender decoding the same WAL: on 2 cores it costs some
// CPU); --no-anchor skips it, and only the upper-bound figure is reported then.

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { DeleteObjectsCommand } from '@aws-sdk/client-s3';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { restorablePoint } from '../src/archive/catalog.js';
import { startArchiver } from '../src/archive/archiver.js';
import { startCapture } from '../src/capture/capture.js';
import { setup } from '../src/capture/setup.js';
import type { CommandContext } from '../src/context.js';
import { archiveRoot, loadConfig } from '../src/config/config.js';
import { createStore, listObjects } from '../src/s3/client.js';
import { createLogger } from '../src/util/log.js';
import { parseLsn } from '../src/util/lsn.js';
import '../src/kafka/codecs.js';

// ---------------------------------------------------------------------------------------------
// Options

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0) return process.argv[i + 1];
  const eq = process.argv.find((a) => a.startsWith(`--${name}=`));
  return eq?.slice(name.length + 3);
}
const num = (name: string, env: string, def: number) => {
  const v = Number(arg(name) ?? process.env[env] ?? def);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name}: expected a positive number`);
  return v;
};
let RATES = (arg('rates') ?? process.env.BENCH_RATES ?? '500,2000')
  .split(',')
  .map(Number)
  .filter((n) => n > 0);
let SECONDS = num('seconds', 'BENCH_SECONDS', 25);
const CONNS = Math.floor(num('conns', 'BENCH_CONNS', 2));
const AGE_MS = Math.floor(num('age-ms', 'BENCH_AGE_MS', 1000));
const WATERMARK_MS = Math.floor(num('watermark-ms', 'BENCH_WATERMARK_MS', 1000));
const POLL_MS = num('poll-ms', 'BENCH_POLL_MS', 100);
const ANCHOR = !process.argv.includes('--no-anchor') && process.env.BENCH_SKIP_ANCHOR !== '1';
const PARTITIONS = 3;
const DRAIN_TIMEOUT_MS = 60_000;

function stackEnv(): void {
  const out = execFileSync('bash', [new URL('../deploy/local/stack.sh', import.meta.url).pathname, 'env'], { encoding: 'utf8' });
  for (const line of out.split('\n')) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) process.env[m[1]!] ??= m[2]!.replace(/^'(.*)'$/, '$1');
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const now = () => performance.now();

// ---------------------------------------------------------------------------------------------
// The anchor: pg_recvlogical's pgoutput (proto 1) byte stream. It writes each message followed by
// '\n'; messages are parsed by their known layouts (the '\n' is checked, never searched for).

class Incomplete extends Error {}

class PgoutputTap {
  /** Row id -> [commit LSN, time the Commit reached this process]. */
  readonly seen = new Map<number, [lsn: number, at: number]>();
  failed: string | undefined;
  private buf: Buffer = Buffer.alloc(0);
  private txnLsn = 0;
  private txnIds: number[] = [];

  feed(chunk: Buffer): void {
    if (this.failed) return;
    const at = now();
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    let pos = 0;
    try {
      for (;;) {
        const end = this.message(pos, at);
        if (end === undefined) break;
        pos = end;
      }
    } catch (err) {
      this.failed = (err as Error).message;
    }
    this.buf = this.buf.subarray(pos);
  }

  /** Parses one message at pos; returns the position after its '\n', or undefined if incomplete. */
  private message(pos: number, at: number): number | undefined {
    const b = this.buf;
    let p = pos;
    const need = (n: number) => {
      if (p + n > b.length) throw new Incomplete();
    };
    const cstr = () => {
      const z = b.indexOf(0, p);
      if (z < 0) throw new Incomplete();
      p = z + 1;
    };
    const lsn = () => {
      need(8);
      const v = b.readUInt32BE(p) * 2 ** 32 + b.readUInt32BE(p + 4);
      p += 8;
      return v;
    };
    const tuple = (): string | null => {
      need(2);
      const n = b.readUInt16BE(p);
      p += 2;
      let first: string | null = null;
      for (let i = 0; i < n; i++) {
        need(1);
        const kind = b[p++];
        if (kind === 0x74 /* t */) {
          need(4);
          const len = b.readUInt32BE(p);
          p += 4;
          need(len);
          if (i === 0) first = b.toString('utf8', p, p + len);
          p += len;
        } else if (kind !== 0x6e /* n */ && kind !== 0x75 /* u */) {
          throw new Error(`pgoutput: unknown tuple column kind ${kind}`);
        }
      }
      return first;
    };
    try {
      need(1);
      const type = String.fromCharCode(b[p++]!);
      switch (type) {
        case 'B':
          this.txnLsn = lsn();
          need(12);
          p += 12;
          this.txnIds = [];
          break;
        case 'C':
          need(1);
          p += 1;
          lsn();
          lsn();
          need(8);
          p += 8;
          for (const id of this.txnIds) this.seen.set(id, [this.txnLsn, at]);
          this.txnIds = [];
          break;
        case 'O':
          lsn();
          cstr();
          break;
        case 'R': {
          need(4);
          p += 4;
          cstr();
          cstr();
          need(3);
          p += 1;
          const cols = b.readUInt16BE(p);
          p += 2;
          for (let i = 0; i < cols; i++) {
            need(1);
            p += 1;
            cstr();
            need(8);
            p += 8;
          }
          break;
        }
        case 'Y':
          need(4);
          p += 4;
          cstr();
          cstr();
          break;
        case 'I': {
          need(5);
          p += 5; // relation oid, 'N'
          const id = tuple();
          if (id !== null && /^\d+$/.test(id)) this.txnIds.push(Number(id));
          break;
        }
        case 'U': {
          need(5);
          p += 4;
          if (b[p] === 0x4b /* K */ || b[p] === 0x4f /* O */) {
            p += 1;
            tuple();
            need(1);
          }
          p += 1; // 'N'
          tuple();
          break;
        }
        case 'D':
          need(5);
          p += 5;
          tuple();
          break;
        case 'T': {
          need(5);
          const n = b.readUInt32BE(p);
          p += 5;
          need(4 * n);
          p += 4 * n;
          break;
        }
        default:
          throw new Error(`pgoutput: unexpected message type ${JSON.stringify(type)}`);
      }
      need(1);
      if (b[p] !== 0x0a) throw new Error(`pgoutput: message ${type} not followed by a newline (framing lost)`);
      return p + 1;
    } catch (err) {
      if (err instanceof Incomplete) return undefined;
      throw err;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Load and bookkeeping

interface Txn {
  id: number;
  /** Client time (performance.now ms) when BEGIN;INSERT;COMMIT;SELECT lsn returned. */
  committedAt: number;
  /** pg_current_wal_lsn() right after COMMIT, same session: >= the commit record's end. */
  upperLsn: number;
}

interface Phase {
  rate: number;
  conns: number;
  txns: Txn[];
  seconds: number;
  firstId: number;
}

/** Restorable-point polls: [return time, point LSN], LSN non-decreasing. */
let polls: Array<[at: number, lsn: number]> = [];

async function runLoad(pools: pg.Client[], rate: number, firstId: number, stop: AbortSignal): Promise<Phase> {
  const n = Math.round(rate * SECONDS);
  const txns: Txn[] = [];
  const t0 = now() + 50;
  await Promise.all(
    pools.map(async (c, j) => {
      for (let k = j; k < n && !stop.aborted; k += pools.length) {
        const due = t0 + (k * 1000) / rate;
        const wait = due - now();
        if (wait > 1) await sleep(wait - 0.5);
        const id = firstId + k;
        const res = (await c.query(
          `BEGIN; INSERT INTO lat (id, note) VALUES (${id}, md5('${id}')); COMMIT; SELECT pg_current_wal_lsn()::text AS l`,
        )) as unknown as pg.QueryResult<{ l: string }>[];
        const committedAt = now();
        txns.push({ id, committedAt, upperLsn: parseLsn(res[res.length - 1]!.rows[0]!.l) });
      }
    }),
  );
  const last = txns.reduce((m, t) => Math.max(m, t.committedAt), t0);
  return { rate, conns: pools.length, txns, seconds: (last - t0) / 1000, firstId };
}

/** First poll (binary search: LSNs are non-decreasing) with point >= lsn; its time, or undefined. */
function durableAt(lsn: number): number | undefined {
  let lo = 0;
  let hi = polls.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (polls[mid]![1] >= lsn) hi = mid;
    else lo = mid + 1;
  }
  return lo < polls.length ? polls[lo]![0] : undefined;
}

function stats(xs: number[]): { p50: number; p99: number; max: number; n: number } | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
  return { p50: q(50), p99: q(99), max: s[s.length - 1]!, n: s.length };
}

// ---------------------------------------------------------------------------------------------

export interface LatencyRow {
  offered: number;
  achieved: number;
  txns: number;
  /** Commit-to-durable, ms, by the commit LSN from the anchor's stream (undefined without the anchor). */
  exact?: { p50: number; p99: number; max: number };
  upper?: { p50: number; p99: number; max: number };
  notDurable: number;
  /** Commit to pg_recvlogical's Commit message reaching this process, ms. */
  anchorSeen?: { p50: number; p99: number; max: number };
}

/** One measurement of every offered rate in turn (bench/harness.ts calls this once per run). */
export async function latencyBench(o: { rates: number[]; seconds: number }): Promise<LatencyRow[]> {
  RATES = o.rates;
  SECONDS = o.seconds;
  polls = [];
  return main();
}

async function main(): Promise<LatencyRow[]> {
  stackEnv();
  // Same reason as bin/cdp.mjs: the AWS SDK's Node 20 notice is noise in a benchmark's output.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const name = `bench_lat_${randomBytes(4).toString('hex')}`;
  const adminUrl = process.env.CDP_SOURCE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  const url = u.toString();
  const anchorSlot = `${name}_anchor`;
  const groupId = `bench-${name}`;
  const cfg = loadConfig({
    env: process.env,
    flags: {
      'source.url': url,
      'source.slot': name,
      'source.publication': name,
      'kafka.topic': name,
      'kafka.partitions': PARTITIONS,
      's3.prefix': `bench/${name}`,
      'archive.groupId': groupId,
      'archive.segmentMaxAgeMs': AGE_MS,
      'capture.watermarkIntervalMs': WATERMARK_MS,
      'basebackup.intervalHours': 0,
      'metrics.port': 0,
      'log.level': process.env.CDP_LOG_LEVEL ?? 'warn',
    },
  });
  const log = createLogger(cfg.log.level);
  const root = archiveRoot(cfg);
  const daemons = new AbortController();
  const stopLoad = new AbortController();
  const onSigint = () => {
    console.error('interrupted: stopping the load and cleaning up');
    stopLoad.abort();
  };
  process.on('SIGINT', onSigint);
  const ctx: CommandContext = { cfg, log, signal: daemons.signal };
  const store = createStore(cfg, log, { maxElapsedMs: 20_000 });
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const clients: pg.Client[] = [];
  let recv: ChildProcess | undefined;
  let recvExit: Promise<unknown> | undefined;
  let polling = true;
  let pollLoop: Promise<void> | undefined;
  const running: Promise<unknown>[] = [];
  const tap = new PgoutputTap();
  const phases: Phase[] = [];
  try {
    const c0 = new pg.Client({ connectionString: url });
    await c0.connect();
    clients.push(c0);
    await c0.query(`CREATE TABLE lat (id bigint PRIMARY KEY, note text, at timestamptz NOT NULL DEFAULT now())`);
    await setup(ctx);
    if (ANCHOR) {
      await c0.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [anchorSlot]);
      const p = spawn(
        'pg_recvlogical',
        ['-d', url, '--slot', anchorSlot, '--start', '--no-loop', '-o', 'proto_version=1', '-o', `publication_names=${name}`, '-F', '0', '-s', '1', '-f', '-'],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      recv = p;
      recvExit = new Promise((r) => p.on('exit', r));
      p.stdout!.on('data', (d: Buffer) => tap.feed(d));
      let err = '';
      p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      p.on('exit', (code, sig) => {
        if (polling && !tap.failed) tap.failed = `pg_recvlogical exited (${code ?? sig}): ${err.trim()}`;
      });
    }

    const capture = await startCapture(ctx);
    running.push(capture.done);
    const archive = await startArchiver(ctx, { clientSuffix: `bench-${name}` });
    running.push(archive.done);
    for (const p of running)
      p.catch((e: unknown) => {
        console.error(`daemon failed: ${(e as Error).message}`);
        stopLoad.abort();
      });

    // Restorable-point polling, for the whole run.
    pollLoop = (async () => {
      while (polling) {
        const t = now();
        try {
          const r = await restorablePoint(store, root, { partitions: PARTITIONS });
          if (r) {
            const at = now();
            const last = polls[polls.length - 1];
            if (!last || r.lsn > last[1]) polls.push([at, r.lsn]);
          }
        } catch (e) {
          log.warn({ err: (e as Error).message }, 'restorable point poll failed');
        }
        await sleep(Math.max(0, POLL_MS - (now() - t)));
      }
    })();

    for (let j = 1; j < CONNS; j++) {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      clients.push(c);
    }
    // Warm-up: until one transaction is durable end to end (capture streaming, archiver assigned).
    {
      const t = now();
      const res = (await c0.query(
        `BEGIN; INSERT INTO lat (id, note) VALUES (0, 'warm-up'); COMMIT; SELECT pg_current_wal_lsn()::text AS l`,
      )) as unknown as pg.QueryResult<{ l: string }>[];
      const l = parseLsn(res[res.length - 1]!.rows[0]!.l);
      while (!stopLoad.signal.aborted && !((polls[polls.length - 1]?.[1] ?? 0) >= l)) {
        if (now() - t > 120_000) throw new Error('warm-up transaction not durable within 120 s');
        await sleep(50);
      }
      console.log(`warm-up: first transaction durable after ${((now() - t) / 1000).toFixed(1)} s (start-up, group join)`);
    }

    let nextId = 1;
    for (const rate of RATES) {
      if (stopLoad.signal.aborted) break;
      console.log(`load: ${rate} tx/s offered for ${SECONDS} s over ${clients.length} connection(s) ...`);
      const phase = await runLoad(clients, rate, nextId, stopLoad.signal);
      nextId += Math.round(rate * SECONDS) + 1;
      phases.push(phase);
      // Drain: until the last transaction is durable (and seen by the anchor).
      const maxUpper = phase.txns.reduce((m, t) => Math.max(m, t.upperLsn), 0);
      const t = now();
      while (!stopLoad.signal.aborted && now() - t < DRAIN_TIMEOUT_MS) {
        const durable = (polls[polls.length - 1]?.[1] ?? 0) >= maxUpper;
        const seen = !ANCHOR || tap.failed !== undefined || phase.txns.every((x) => tap.seen.has(x.id));
        if (durable && seen) break;
        await sleep(100);
      }
    }
  } finally {
    polling = false;
    process.off('SIGINT', onSigint);
    await pollLoop?.catch(() => {});
    daemons.abort();
    await Promise.allSettled(running);
    if (recv && recv.exitCode === null) recv.kill('SIGTERM');
    await recvExit;
    for (const c of clients) await c.end().catch(() => {});
    await cleanup(admin, name, anchorSlot, groupId, store).catch((e: unknown) => console.error(`cleanup: ${(e as Error).message}`));
    await admin.end().catch(() => {});
    store.client.destroy();
  }
  return report(phases, tap);
}

async function cleanup(admin: pg.Client, name: string, anchorSlot: string, groupId: string, store: ReturnType<typeof createStore>): Promise<void> {
  // Slots first (a database with logical slots cannot be dropped); they may stay active briefly.
  for (let i = 0; i < 50; i++) {
    const { rows } = await admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM (SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ($1, $2) AND NOT active) d`,
      [name, anchorSlot],
    );
    void rows;
    const left = await admin.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name IN ($1, $2)`, [name, anchorSlot]);
    if (left.rowCount === 0) break;
    await sleep(200);
  }
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`); // the publication goes with it
  const kafka = new Kafka({ clientId: 'bench-latency', brokers: (process.env.CDP_KAFKA_BROKERS ?? '127.0.0.1:9092').split(','), logLevel: logLevel.NOTHING });
  const kadmin = kafka.admin();
  await kadmin.connect();
  await kadmin.deleteGroups([groupId]).catch(() => {});
  await kadmin.deleteTopics({ topics: [name] }).catch(() => {});
  await kadmin.disconnect();
  const keys: string[] = [];
  for await (const o of listObjects(store, `bench/${name}/`)) keys.push(o.key);
  for (let i = 0; i < keys.length; i += 1000) {
    await store.client.send(
      new DeleteObjectsCommand({ Bucket: store.bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })), Quiet: true } }),
    );
  }
}

function report(phases: Phase[], tap: PgoutputTap): LatencyRow[] {
  const out: LatencyRow[] = [];
  const ms = (v: number | undefined) => (v === undefined ? '-' : v >= 10_000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)}`);
  const trio = (s: ReturnType<typeof stats>) => (s ? `${ms(s.p50)} / ${ms(s.p99)} / ${ms(s.max)}` : '-');
  const fine = (s: ReturnType<typeof stats>) => (s ? `${s.p50.toFixed(1)} / ${s.p99.toFixed(1)} / ${s.max.toFixed(1)}` : '-');
  const anchorOk = ANCHOR && tap.failed === undefined;
  console.log(
    `\n== commit-to-durable latency (capture + archive in-process; ${PARTITIONS} partitions; watermarkIntervalMs ${WATERMARK_MS}, ` +
      `segmentMaxAgeMs ${AGE_MS}, restorable point polled every ${POLL_MS} ms)`,
  );
  if (ANCHOR && tap.failed) console.log(`(anchor unavailable: ${tap.failed})`);
  if (!ANCHOR) console.log('(anchor skipped: --no-anchor / BENCH_SKIP_ANCHOR=1)');
  const rows: string[][] = [
    [
      'offered tx/s',
      'conns',
      'achieved tx/s',
      'txns',
      'durable (exact LSN) p50/p99/max ms',
      'durable (upper-bound LSN) p50/p99/max ms',
      'not durable',
      'pg_recvlogical seen p50/p99/max ms',
    ],
  ];
  for (const ph of phases) {
    const exact: number[] = [];
    const upper: number[] = [];
    const anchor: number[] = [];
    let missing = 0;
    for (const t of ph.txns) {
      const du = durableAt(t.upperLsn);
      if (du === undefined) missing++;
      else upper.push(du - t.committedAt);
      const s = tap.seen.get(t.id);
      if (s) {
        anchor.push(s[1] - t.committedAt);
        const de = durableAt(s[0]);
        if (de !== undefined) exact.push(de - t.committedAt);
      }
    }
    const se = stats(exact);
    const sa = stats(anchor);
    const su = stats(upper);
    const three = (x: ReturnType<typeof stats>) => (x ? { p50: x.p50, p99: x.p99, max: x.max } : undefined);
    out.push({
      offered: ph.rate,
      achieved: ph.txns.length / ph.seconds,
      txns: ph.txns.length,
      exact: anchorOk ? three(se) : undefined,
      upper: three(su),
      notDurable: missing,
      anchorSeen: anchorOk ? three(sa) : undefined,
    });
    rows.push([
      String(ph.rate),
      String(ph.conns),
      (ph.txns.length / ph.seconds).toFixed(0),
      String(ph.txns.length),
      anchorOk ? trio(se) : '-',
      trio(stats(upper)),
      String(missing),
      anchorOk ? fine(sa) : '-',
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  console.log(line(rows[0]!));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const r of rows.slice(1)) console.log(line(r));
  for (const ph of phases) {
    const achieved = ph.txns.length / ph.seconds;
    if (achieved < 0.95 * ph.rate) {
      console.log(
        `note: ${ph.rate} tx/s offered, ${achieved.toFixed(0)} achieved: the paced load fell behind (each connection waits for its synchronous COMMIT's WAL flush, and this machine also runs Postgres, capture and archive); more --conns may help`,
      );
    }
  }
  console.log(
    'commit = client time when BEGIN;INSERT;COMMIT;SELECT pg_current_wal_lsn() returned; durable = first restorablePoint() poll ' +
      'covering the transaction (includes up to one poll interval + 3 S3 GETs of quantisation). "exact" uses the commit LSN from the ' +
      'pgoutput stream; "upper-bound" uses pg_current_wal_lsn() after COMMIT (covered only once a later commit is). Anchor seen ' +
      '(negative values possible by up to the SELECT round trip) = pgoutput Commit reaching this process via pg_recvlogical.',
  );
  return out;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await main();
  process.exit(0);
}
