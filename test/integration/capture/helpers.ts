import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';
import type { CommandContext } from '../../../src/context.js';
import { loadConfig } from '../../../src/config/config.js';
import { decodeChange, type ChangeEvent } from '../../../src/format/change-event.js';
import { stackEnv as sharedStackEnv } from '../../support/stack.js';

// Shared pieces of the capture integration tests: a fresh database / slot / publication / topic /
// S3 prefix per test, the capture daemon as a child process or in-process, and a reader of the
// whole topic. Everything is dropped in afterAll (leftover slots retain WAL and fill the disk).

export const ROOT = new URL('../../../', import.meta.url).pathname;
export const ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/postgres';
export const BROKERS = ['127.0.0.1:9092'];

/** The export lines of `deploy/local/stack.sh env`, as an object. */
export function stackEnv(): Record<string, string> {
  return sharedStackEnv();
}

export interface Fixture {
  name: string;
  url: string;
  env: Record<string, string>;
  cleanup(): Promise<void>;
}

/** A fresh database with its own slot, publication, topic and S3 prefix names (not created yet). */
export async function freshSource(label: string, partitions = 3): Promise<Fixture> {
  const name = `cap_${label}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client(ADMIN_URL);
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = `postgres://postgres@127.0.0.1:5432/${name}`;
  const env = {
    ...stackEnv(),
    CDP_SOURCE_URL: url,
    CDP_SLOT: name,
    CDP_PUBLICATION: name,
    CDP_TOPIC: name,
    CDP_KAFKA_PARTITIONS: String(partitions),
    CDP_S3_PREFIX: `test-capture/${name}`,
    CDP_METRICS_PORT: '0',
    CDP_LOG_FORMAT: 'json',
    CDP_LOG_LEVEL: 'info',
    NODE_NO_WARNINGS: '1',
  };
  return {
    name,
    url,
    env,
    cleanup: async () => {
      const c = new pg.Client(ADMIN_URL);
      await c.connect();
      try {
        // Terminate walsenders / sessions still using the slot or the database, then drop both.
        await c.query(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, [name]);
        for (let i = 0; i < 50; i++) {
          const r = await c.query(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, [name]);
          if (r.rowCount === 0 || !r.rows[0].active) break;
          await new Promise((res) => setTimeout(res, 200));
        }
        await c.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, [name]).catch(() => {});
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
      const kafka = new Kafka({ brokers: BROKERS, logLevel: logLevel.NOTHING });
      const admin = kafka.admin();
      await admin.connect();
      await admin.deleteTopics({ topics: [name] }).catch(() => {});
      await admin.disconnect();
    },
  };
}

export function context(env: Record<string, string>, signal: AbortSignal): CommandContext {
  const cfg = loadConfig({ env });
  const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'warn' }, pino.destination(2));
  return { cfg, log, signal };
}

/** Runs `cdp <args>` to completion; returns exit code and output. */
export function cdpSync(env: Record<string, string>, args: string[]): { code: number; stderr: string; stdout: string } {
  const r = spawnSync(process.execPath, [`${ROOT}bin/cdp.mjs`, ...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 300_000 });
  return { code: r.status ?? -1, stderr: r.stderr, stdout: r.stdout };
}

export interface Daemon {
  child: ChildProcess;
  stderr(): string;
  exited: Promise<number | null>;
}

/** Starts `cdp capture` as a child process. */
export function startCaptureChild(env: Record<string, string>): Daemon {
  const child = spawn(process.execPath, [`${ROOT}bin/cdp.mjs`, 'capture'], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    if (err.length > 2_000_000) err = err.slice(-1_000_000);
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, stderr: () => err, exited };
}

/** VmHWM (peak resident set) of a live process, in kB. */
export function peakRssKb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmHWM:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) : NaN;
}

export async function query<R extends pg.QueryResultRow = Record<string, unknown>>(url: string, text: string, values: unknown[] = []): Promise<R[]> {
  const c = new pg.Client(url);
  await c.connect();
  try {
    return (await c.query<R>(text, values)).rows;
  } finally {
    await c.end();
  }
}

export interface TopicRecord {
  ev: ChangeEvent;
  partition: number;
  offset: bigint;
  key: string | null;
}

/**
 * Scans the whole topic (every partition, from offset 0 to its end at the time of the call)
 * without committing offsets, calling `each` per decoded record.
 */
export async function scanTopic(topic: string, each: (r: TopicRecord) => void): Promise<number> {
  const kafka = new Kafka({ brokers: BROKERS, logLevel: logLevel.NOTHING, clientId: 'capture-test-reader' });
  const admin = kafka.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const want = new Map(ends.map((e) => [e.partition, BigInt(e.high)]));
  let n = 0;
  if ([...want.values()].every((h) => h === 0n)) return n;
  const consumer = kafka.consumer({ groupId: `reader-${randomBytes(6).toString('hex')}`, maxBytesPerPartition: 64 * 1024 * 1024 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const reached = new Map<number, bigint>();
  await new Promise<void>((resolve, reject) => {
    const complete = () => {
      for (const [p, h] of want) if ((reached.get(p) ?? 0n) < h) return false;
      return true;
    };
    consumer
      .run({
        autoCommit: false,
        eachBatch: async ({ batch }) => {
          for (const m of batch.messages) {
            const off = BigInt(m.offset);
            if (off >= (want.get(batch.partition) ?? 0n)) continue;
            each({ ev: decodeChange(m.value!), partition: batch.partition, offset: off, key: m.key ? m.key.toString() : null });
            n++;
            reached.set(batch.partition, off + 1n);
          }
          if (complete()) resolve();
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  return n;
}

/** The whole topic in memory (small topics only). */
export async function readTopic(topic: string): Promise<TopicRecord[]> {
  const out: TopicRecord[] = [];
  await scanTopic(topic, (r) => out.push(r));
  return out;
}

/** Data records in commit order, duplicates (same commitLsn + position) dropped. */
export function inCommitOrder(records: TopicRecord[]): ChangeEvent[] {
  const seen = new Set<string>();
  const out: ChangeEvent[] = [];
  for (const { ev } of records) {
    if (ev.op === 'WATERMARK') continue;
    const id = `${ev.commitLsn}/${ev.position}/${ev.op === 'COMMIT' ? 'c' : 'd'}`;
    if (seen.has(id)) continue;
    seen.add(id);
    out.push(ev);
  }
  return out.sort((a, b) => a.commitLsn - b.commitLsn || a.position - b.position);
}

/** Polls `fn` until it returns a truthy value; generous deadline, never asserts durations. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 240_000, everyMs = 500): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The slot's confirmed_flush_lsn as a number (bytes), or 0. */
export async function confirmedFlush(url: string, slot: string): Promise<number> {
  const rows = await query<{ n: string | null }>(url, `SELECT (confirmed_flush_lsn - '0/0')::text AS n FROM pg_replication_slots WHERE slot_name = $1`, [slot]);
  return rows[0]?.n ? Number(rows[0].n) : 0;
}
