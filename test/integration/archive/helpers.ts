import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { Readable } from 'node:stream';
import { inflateRawSync } from 'node:zlib';
import avro from 'avsc';
import { AssignerProtocol, Kafka, logLevel, Partitioners, type Producer } from 'kafkajs';
import { pino } from 'pino';
import { decompress as zstdDecompress } from 'zstd-napi';
import { parseSegmentKey, archiveManifestKey, type ArchiveManifest } from '../../../src/archive/layout.js';
import { loadConfig, type Config } from '../../../src/config/config.js';
import { emptyEvent, encodeChange, kafkaKey, SCHEMA_HEADER, type ChangeEvent } from '../../../src/format/change-event.js';
import { createStore, getObject, listObjects, putOnce, sha256, type Store } from '../../../src/s3/client.js';
import { applyStackEnv } from '../../support/stack.js';

// Shared pieces of the archiver's integration tests: the local stack's environment, a producer
// that behaves like capture (transactions with COMMIT markers, WATERMARK to every partition), an
// independent reader of the archive (avsc's own container decoder), and a faulty S3 proxy.

export const REPO = new URL('../../../', import.meta.url).pathname;

let envLoaded = false;
export function loadStackEnv(): void {
  if (envLoaded) return;
  applyStackEnv(); // variables already set win (a developer may point the tests at another broker)
  envLoaded = true;
}

export const rand = () => randomBytes(4).toString('hex');
export const silentLog = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

export function testConfig(over: Record<string, unknown>): Config {
  loadStackEnv();
  return loadConfig({ env: process.env, flags: { 'metrics.port': 0, ...over } });
}

export function kafkaClient(): Kafka {
  loadStackEnv();
  return new Kafka({ clientId: 'archive-test', brokers: (process.env.CDP_KAFKA_BROKERS ?? '127.0.0.1:9092').split(','), logLevel: logLevel.NOTHING });
}

export async function createTopic(kafka: Kafka, topic: string, partitions: number): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

export async function deleteTopic(kafka: Kafka, topic: string): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.deleteTopics({ topics: [topic] });
  } catch {
    // best effort
  } finally {
    await admin.disconnect();
  }
}

/** What setup writes: the restorable point is the minimum over these partitions. */
export async function writeArchiveManifest(store: Store, root: string, topic: string, partitions: number): Promise<void> {
  const m: ArchiveManifest = { version: 1, database: 'postgres', systemId: 'test', topic, partitions, createdAt: new Date().toISOString() };
  await putOnce(store, archiveManifestKey(root), Buffer.from(JSON.stringify(m)));
}

/** Produces like capture: each transaction's changes and its COMMIT marker, then watermarks. */
export class FakeCapture {
  private lsn = 0x1000_0000;
  private xid = 5000;
  readonly produced: ChangeEvent[] = [];
  lastWatermark = 0;
  /** Bytes of record values produced so far. */
  producedBytes = 0;
  private producer: Producer;

  constructor(
    kafka: Kafka,
    readonly topic: string,
    readonly partitions: number,
  ) {
    this.producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: false });
  }

  async connect(): Promise<void> {
    await this.producer.connect();
  }
  async disconnect(): Promise<void> {
    await this.producer.disconnect();
  }

  /** n transactions of 1..maxRows rows each, produced (acks=all), then a watermark to every partition. */
  async transactions(n: number, maxRows = 5, payload = 40): Promise<void> {
    const msgs: { key: string; value: Buffer; headers: Record<string, string> }[] = [];
    for (let t = 0; t < n; t++) {
      this.lsn += 0x100 + Math.floor(Math.random() * 0x100);
      this.xid += 1;
      const commitLsn = this.lsn;
      const commitTime = Date.now() * 1000;
      const rows = 1 + Math.floor(Math.random() * maxRows);
      const evs: ChangeEvent[] = [];
      for (let i = 0; i < rows; i++) {
        const id = String(this.xid * 100 + i);
        evs.push(
          emptyEvent({
            op: 'INSERT',
            database: 'postgres',
            commitLsn,
            changeLsn: commitLsn - 0x80 + i,
            xid: this.xid,
            commitTime,
            position: i,
            schema: 'public',
            table: 'items',
            relation: { oid: 16390, replicaIdentity: 'd', columns: ['id', 'note'], types: ['bigint', 'text'], key: [0] },
            new: [id, randomBytes(payload).toString('hex')],
          }),
        );
      }
      evs.push(emptyEvent({ op: 'COMMIT', database: 'postgres', commitLsn, endLsn: commitLsn + 0x30, xid: this.xid, commitTime, position: rows }));
      for (const ev of evs) {
        this.produced.push(ev);
        const value = encodeChange(ev);
        this.producedBytes += value.length;
        msgs.push({ key: kafkaKey(ev), value, headers: { [SCHEMA_HEADER.name]: SCHEMA_HEADER.value } });
      }
    }
    for (let i = 0; i < msgs.length; i += 2000) {
      await this.producer.send({ topic: this.topic, acks: -1, messages: msgs.slice(i, i + 2000) });
    }
    await this.watermark();
  }

  async watermark(): Promise<void> {
    const commitTime = Date.now() * 1000;
    this.lsn += 0x40;
    const w = this.lsn;
    await this.producer.send({
      topic: this.topic,
      acks: -1,
      messages: Array.from({ length: this.partitions }, (_, p) => ({
        partition: p,
        key: 'watermark',
        value: encodeChange(emptyEvent({ op: 'WATERMARK', database: 'postgres', commitLsn: w, commitTime, content: JSON.stringify({ partition: p }) })),
        headers: { [SCHEMA_HEADER.name]: SCHEMA_HEADER.value },
      })),
    });
    this.lastWatermark = w;
  }
}

/** Reads every segment under root with avsc's own BlockDecoder (zstandard registered HERE). */
export async function readArchiveWithAvsc(store: Store, root: string): Promise<{ events: ChangeEvent[]; segments: number; keys: string[] }> {
  const events: ChangeEvent[] = [];
  const keys: string[] = [];
  for await (const o of listObjects(store, `${root}/segments/`)) {
    const name = parseSegmentKey(o.key);
    if (!name) throw new Error(`unexpected object ${o.key}`);
    const bytes = await getObject(store, o.key);
    if (sha256(bytes) !== name.sha256) throw new Error(`checksum mismatch on ${o.key}`);
    const decoder = new avro.streams.BlockDecoder({
      codecs: {
        zstandard: (buf: Buffer, cb: (err: Error | null, out?: Buffer) => void) => cb(null, zstdDecompress(buf)),
        deflate: (buf: Buffer, cb: (err: Error | null, out?: Buffer) => void) => cb(null, inflateRawSync(buf)),
      },
    });
    let format = '1';
    decoder.on('metadata', (_t: unknown, _c: unknown, header: { meta: Record<string, Buffer> }) => (format = header.meta['cdp.format']?.toString() ?? '1'));
    Readable.from([bytes]).pipe(decoder);
    for await (const r of decoder) {
      if (format === '2') events.push(...batchToEvents(r as AvscBatch));
      else events.push({ ...(r as ChangeEvent) });
    }
    keys.push(o.key);
  }
  return { events, segments: keys.length, keys };
}

/** A format-2 ChangeBatch as avsc decodes it (docs/format.md): named union branches are wrapped. */
interface AvscBatch {
  count: number;
  ops: Buffer;
  txns: Array<{ database: string; commitLsn: number; xid: number; commitTime: number; count: number }>;
  changeLsn: number[];
  position: number[];
  endLsn: Array<number | null>;
  relations: Array<{ schema: string; table: string; relation: NonNullable<ChangeEvent['relation']> }>;
  relation: number[];
  schemas: string[];
  tables: string[];
  oldKind: Array<string | null>;
  oldCount: number[];
  newCount: number[];
  columns: Array<Array<Record<string, { values?: Array<string | null>; deltas?: Array<number | null> }>>>;
  unchanged: number[][];
  content: Array<string | null>;
  prefix: Array<string | null>;
}

const OP_NAMES: ChangeEvent['op'][] = ['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'DDL', 'MESSAGE', 'SEQUENCES', 'COMMIT', 'WATERMARK'];

/**
 * The change events of a ChangeBatch, written here from docs/format.md and NOT with src/format's
 * decoder: the archive is read back by code that shares nothing with the writer but the document.
 */
function batchToEvents(b: AvscBatch): ChangeEvent[] {
  // Columns as plain value lists, integers undone from their deltas.
  const groups = b.columns.map((cols) =>
    cols.map((wrapped) => {
      const c = Object.values(wrapped)[0]!;
      if (c.values) return { values: c.values, next: 0 };
      let v = 0;
      return { values: c.deltas!.map((d) => (d === null ? null : String((v += d)))), next: 0 };
    }),
  );
  const out: ChangeEvent[] = [];
  let run = 0;
  let left = b.txns[0]!.count;
  let named = 0;
  let lsn = 0;
  let pos = 0;
  for (let k = 0; k < b.count; k++) {
    while (left === 0) left = b.txns[++run]!.count;
    left--;
    const t = b.txns[run]!;
    lsn += b.changeLsn[k]!;
    pos += b.position[k]!;
    const ri = b.relation[k]!;
    const rel = ri >= 0 ? b.relations[ri]! : undefined;
    const cols = groups[ri + 1]!;
    const tuple = (n: number) => (n < 0 ? null : Array.from({ length: n }, (_, i) => cols[i]!.values[cols[i]!.next++]!));
    const old = tuple(b.oldCount[k]!);
    const nw = tuple(b.newCount[k]!);
    const end = b.endLsn[k];
    out.push({
      op: OP_NAMES[b.ops[k]!]!,
      database: t.database,
      commitLsn: t.commitLsn,
      changeLsn: lsn,
      endLsn: end === null || end === undefined ? 0 : t.commitLsn + end,
      xid: t.xid,
      commitTime: t.commitTime,
      position: pos,
      schema: rel ? rel.schema : b.schemas[named]!,
      table: rel ? rel.table : b.tables[named++]!,
      relation: rel ? { ...rel.relation } : null,
      oldKind: b.oldKind[k]!,
      old,
      new: nw,
      unchanged: b.unchanged[k]!,
      content: b.content[k]!,
      prefix: b.prefix[k]!,
    });
  }
  return out;
}

/** Data and COMMIT records, deduplicated by identity (commitLsn, position), in identity order. */
export function uniqueChanges(events: ChangeEvent[]): ChangeEvent[] {
  const byId = new Map<string, ChangeEvent>();
  for (const ev of events) {
    if (ev.op === 'WATERMARK') continue;
    const id = `${ev.commitLsn}/${ev.position}`;
    const prev = byId.get(id);
    if (prev && JSON.stringify(prev) !== JSON.stringify(ev)) throw new Error(`two different records share identity ${id}`);
    byId.set(id, ev);
  }
  return [...byId.values()].sort((a, b) => a.commitLsn - b.commitLsn || a.position - b.position);
}

export function sortedById(events: ChangeEvent[]): ChangeEvent[] {
  return [...events].sort((a, b) => a.commitLsn - b.commitLsn || a.position - b.position);
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 180_000, everyMs = 500): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export function testStore(cfg: Config): Store {
  return createStore(cfg, silentLog, { maxElapsedMs: 60_000 });
}

/** `node bin/cdp.mjs archive` as a child process, logs to a file. */
export function spawnArchiver(
  env: Record<string, string>,
  logFile: string,
): ChildProcess & { exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> } {
  loadStackEnv();
  const child = spawn(process.execPath, [`${REPO}bin/cdp.mjs`, 'archive'], {
    cwd: REPO,
    env: { ...process.env, CDP_LOG_FORMAT: 'json', CDP_LOG_LEVEL: 'info', CDP_METRICS_PORT: '0', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr!.pipe(createWriteStream(logFile, { flags: 'a' }));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return Object.assign(child, { exited });
}

export type ProxyMode = 'pass' | 'slowdown' | 'drop';

/** A loopback HTTP proxy in front of the S3 server that can answer 503 SlowDown or cut connections. */
export async function startFaultyProxy(target: URL): Promise<{ url: string; setMode(m: ProxyMode): void; faults: () => number; close(): Promise<void> }> {
  let mode: ProxyMode = 'pass';
  let faults = 0;
  const server: Server = createServer((req, res) => {
    if (mode === 'slowdown') {
      faults += 1;
      req.resume();
      req.on('end', () => {
        res.writeHead(503, { 'content-type': 'application/xml' });
        res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>');
      });
      return;
    }
    if (mode === 'drop') {
      faults += 1;
      req.socket.destroy();
      return;
    }
    const up = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    setMode: (m) => (mode = m),
    faults: () => faults,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

export async function committedOffsets(kafka: Kafka, groupId: string, topic: string): Promise<Map<number, bigint>> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const [t] = await admin.fetchOffsets({ groupId, topics: [topic] });
    return new Map((t?.partitions ?? []).map((p) => [p.partition, BigInt(p.offset)]));
  } finally {
    await admin.disconnect();
  }
}

export async function endOffsets(kafka: Kafka, topic: string): Promise<Map<number, bigint>> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const offs = await admin.fetchTopicOffsets(topic);
    return new Map(offs.map((p) => [p.partition, BigInt(p.high)]));
  } finally {
    await admin.disconnect();
  }
}

/** Number of group members that hold at least one partition of the topic (admin DescribeGroups). */
export async function membersWithPartitions(kafka: Kafka, groupId: string, topic: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const { groups } = await admin.describeGroups([groupId]);
    let n = 0;
    for (const member of groups[0]?.members ?? []) {
      if (!member.memberAssignment?.length) continue;
      const a = AssignerProtocol.MemberAssignment.decode(member.memberAssignment);
      if ((a?.assignment[topic]?.length ?? 0) > 0) n++;
    }
    return n;
  } finally {
    await admin.disconnect();
  }
}
