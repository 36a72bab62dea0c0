import { createRequire } from 'node:module';
import type { Kafka } from 'kafkajs';
import { CdpError, ErrorCodes } from '../errors.js';
import { createCodec, type BlockCodec } from '../archive/codec.js';
import { SCHEMA_HEADER } from '../events/change-event.js';

// An idempotent Kafka producer for capture's hot path that writes the Produce request bytes itself.
//
// Why: kafkajs 2.2.4 spends ~15 µs per message before a byte reaches the socket (a new Encoder and
// Long arithmetic per record, a header array per record, and groupMessagesPerPartition copying its
// per-partition array for every message: quadratic in the batch). Capture produces hundreds of
// thousands of small records per second, so that cost was the ceiling (bench/capture.ts). Here a
// batch is encoded straight into one buffer per partition.
//
// What kafkajs still does: connections, metadata, broker lookup, API-version negotiation and
// InitProducerId (through its Cluster, reached via the Kafka instance's private factory: kafkajs is
// pinned to 2.2.4 in package.json). What we do: record batch v2 and Produce v7 encoding (Kafka
// protocol guide, "Record Batch" and "Produce API"; KIP-98 for the idempotent fields; v7 is the
// first version that may carry zstd batches, KIP-110, Kafka 2.1+), per-partition sequence numbers,
// optional zstd compression of each batch's records, response checking.
//
// Compression (capture.compression = zstd): the records of a batch are one zstd frame after the
// uncompressed 61-byte batch header, attributes bit 2 set (type 4). The broker validates and stores
// the batch as it is (topic compression.type=producer), so Kafka writes, replicates and serves
// ~3x fewer bytes, and the archiver's fetches shrink the same way; it costs us one level-1 zstd
// pass, a few percent of a core at capture's rate (bench/capture.ts). Any error fails the whole send; the capture session then
// restarts with a new producer id, so sequence bookkeeping never needs to survive an error.
//
// Partitioning is kafkajs's DefaultPartitioner (murmur2 of the key, like the Java client), so records
// land in the same partitions as with the kafkajs path.

const require = createRequire(import.meta.url);
const Encoder = require('kafkajs/src/protocol/encoder') as new () => { writeBuffer(b: Buffer): unknown };
const Decoder = require('kafkajs/src/protocol/decoder') as new (b: Buffer) => {
  readInt16(): number;
  readInt32(): number;
  readInt64(): { toString(): string };
  readString(): string;
  readArray<T>(fn: (d: InstanceType<typeof Decoder>) => T): T[];
};

interface ClusterLike {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  addTargetTopic(topic: string): Promise<void>;
  refreshMetadata(): Promise<void>;
  findTopicPartitionMetadata(topic: string): { partitionId: number; leader: number }[];
  findBroker(q: { nodeId: string | number }): Promise<BrokerLike>;
  findControllerBroker(): Promise<BrokerLike>;
}

interface BrokerLike {
  initProducerId(q: { transactionalId?: string; transactionTimeout: number }): Promise<{ producerId: string | number; producerEpoch: number }>;
  /** kafkajs 2.2 Broker: one pool of connections; send() picks the connection by API key. */
  connectionPool: { send(q: { request: unknown; response: unknown; requestTimeout?: number }): Promise<unknown> };
}

export interface OutRecord {
  key: Buffer;
  value: Buffer;
  /** Explicit partition (watermarks); -1 = by key. */
  partition: number;
}

const PRODUCE_TIMEOUT_MS = 30_000;
const HEADER_KEY = Buffer.from(SCHEMA_HEADER.name, 'utf8');

/** Kafka error codes (protocol guide, "Error Codes") worth naming in messages. */
const KAFKA_ERRORS: Record<number, string> = {
  1: 'OFFSET_OUT_OF_RANGE',
  2: 'CORRUPT_MESSAGE',
  3: 'UNKNOWN_TOPIC_OR_PARTITION',
  6: 'NOT_LEADER_OR_FOLLOWER',
  7: 'REQUEST_TIMED_OUT',
  10: 'MESSAGE_TOO_LARGE',
  18: 'RECORD_LIST_TOO_LARGE',
  19: 'NOT_ENOUGH_REPLICAS',
  20: 'NOT_ENOUGH_REPLICAS_AFTER_APPEND',
  45: 'OUT_OF_ORDER_SEQUENCE_NUMBER',
  46: 'DUPLICATE_SEQUENCE_NUMBER',
  47: 'INVALID_PRODUCER_EPOCH',
  59: 'UNKNOWN_PRODUCER_ID',
};

export class DirectProducer {
  private cluster: ClusterLike | null = null;
  private producerId = 0n;
  private producerEpoch = 0;
  private sequences: number[] = [];
  private leaders: number[] = [];
  private now = 0;

  constructor(
    private readonly kafka: Kafka,
    private readonly topic: string,
    private readonly schemaHeader: string,
    private readonly compression: 'none' | 'zstd' = 'none',
  ) {}

  /** The archive's zstandard codec: one context for every batch (cheaper than one per batch). */
  private zstd: BlockCodec | undefined;

  get partitions(): number {
    return this.leaders.length;
  }

  async connect(): Promise<void> {
    const sym = Object.getOwnPropertySymbols(this.kafka).find((s) => s.description === 'private:Kafka:createCluster');
    if (!sym) throw new CdpError(ErrorCodes.INTERNAL, 'kafkajs internals changed (no createCluster): the direct producer needs kafkajs 2.2.x');
    const create = (this.kafka as unknown as Record<symbol, (o: object) => ClusterLike>)[sym]!;
    this.cluster = create({ allowAutoTopicCreation: false, maxInFlightRequests: 1 });
    await this.cluster.connect();
    await this.cluster.addTargetTopic(this.topic);
    await this.cluster.refreshMetadata();
    const meta = this.cluster.findTopicPartitionMetadata(this.topic);
    if (meta.length === 0) throw new CdpError(ErrorCodes.KAFKA, `Kafka topic ${this.topic} has no partitions`, { canRetry: true });
    this.leaders = [];
    for (const p of meta) this.leaders[p.partitionId] = p.leader;
    // InitProducerId without a transactional id: any broker answers (KIP-98); kafkajs asks the controller.
    const broker = await this.cluster.findControllerBroker();
    const r = await broker.initProducerId({ transactionTimeout: 60_000 });
    this.producerId = BigInt(r.producerId);
    this.producerEpoch = r.producerEpoch;
    this.sequences = new Array<number>(meta.length).fill(0);
  }

  async disconnect(): Promise<void> {
    await this.cluster?.disconnect().catch(() => {});
    this.cluster = null;
  }

  partitionFor(key: Buffer): number {
    return partitionOf(key, this.leaders.length);
  }

  /** Sends the records (in order per partition) with acks=all; resolves when every partition acked. */
  async send(records: OutRecord[]): Promise<void> {
    const cluster = this.cluster;
    if (!cluster) throw new CdpError(ErrorCodes.INTERNAL, 'direct producer is not connected');
    const n = this.leaders.length;
    const byPartition: OutRecord[][] = Array.from({ length: n }, () => []);
    for (const r of records) byPartition[r.partition >= 0 ? r.partition : this.partitionFor(r.key)]!.push(r);
    this.now = Date.now();
    // One request per leader broker, each carrying its partitions' batches.
    const perLeader = new Map<number, { partition: number; batch: Buffer; count: number }[]>();
    for (let p = 0; p < n; p++) {
      const list = byPartition[p]!;
      if (list.length === 0) continue;
      const leader = this.leaders[p]!;
      let l = perLeader.get(leader);
      if (!l) perLeader.set(leader, (l = []));
      l.push({ partition: p, batch: this.recordBatch(list, this.sequences[p]!), count: list.length });
    }
    await Promise.all(
      [...perLeader].map(async ([leader, parts]) => {
        const broker = await cluster.findBroker({ nodeId: String(leader) });
        const body = this.produceRequest(parts);
        const res = (await broker.connectionPool.send({
          request: { apiKey: 0, apiVersion: 7, apiName: 'Produce', encode: async () => new Encoder().writeBuffer(body) },
          response: { decode: async (b: Buffer) => b, parse: async (b: Buffer) => b },
          requestTimeout: PRODUCE_TIMEOUT_MS + 5_000,
        })) as Buffer;
        this.checkResponse(res, parts.map((x) => x.partition));
      }),
    );
    for (let p = 0; p < n; p++) {
      const c = byPartition[p]!.length;
      if (c) this.sequences[p] = (this.sequences[p]! + c) % 0x80000000;
    }
  }

  /** Produce v3-v8 share one body: transactional_id, acks, timeout, [topic, [partition, records]]. */
  private produceRequest(parts: { partition: number; batch: Buffer }[]): Buffer {
    const topic = Buffer.from(this.topic, 'utf8');
    let size = 2 + 2 + 4 + 4 + 2 + topic.length + 4;
    for (const p of parts) size += 4 + 4 + p.batch.length;
    const b = Buffer.allocUnsafe(size);
    let o = 0;
    o = b.writeInt16BE(-1, o); // transactional_id: null
    o = b.writeInt16BE(-1, o); // acks: all in-sync replicas
    o = b.writeInt32BE(PRODUCE_TIMEOUT_MS, o);
    o = b.writeInt32BE(1, o); // one topic
    o = b.writeInt16BE(topic.length, o);
    o += topic.copy(b, o);
    o = b.writeInt32BE(parts.length, o);
    for (const p of parts) {
      o = b.writeInt32BE(p.partition, o);
      o = b.writeInt32BE(p.batch.length, o);
      o += p.batch.copy(b, o);
    }
    return b;
  }

  /**
   * Record batch v2 (magic 2), idempotent (producer id, epoch, base sequence); the records are
   * zstd-compressed when configured.
   * Layout: baseOffset i64, batchLength i32, partitionLeaderEpoch i32, magic i8, crc u32 (CRC-32C
   * of everything after it), attributes i16, lastOffsetDelta i32, baseTimestamp i64,
   * maxTimestamp i64, producerId i64, producerEpoch i16, baseSequence i32, records count i32, records.
   */
  private recordBatch(list: OutRecord[], baseSequence: number): Buffer {
    const header = Buffer.from(this.schemaHeader, 'utf8');
    let size = 61;
    for (let i = 0; i < list.length; i++) size += recordSize(list[i]!, i, header) + 5;
    const b = Buffer.allocUnsafe(size);
    let o = 0;
    o = b.writeBigInt64BE(0n, o);
    const lengthAt = o;
    o += 4;
    o = b.writeInt32BE(-1, o); // partitionLeaderEpoch: set by the broker
    o = b.writeInt8(2, o);
    const crcAt = o;
    o += 4;
    const attributesAt = o;
    o = b.writeInt16BE(0, o); // attributes: no compression, CreateTime, not transactional
    o = b.writeInt32BE(list.length - 1, o);
    o = b.writeBigInt64BE(BigInt(this.now), o);
    o = b.writeBigInt64BE(BigInt(this.now), o);
    o = b.writeBigInt64BE(this.producerId, o);
    o = b.writeInt16BE(this.producerEpoch, o);
    o = b.writeInt32BE(baseSequence, o);
    o = b.writeInt32BE(list.length, o);
    for (let i = 0; i < list.length; i++) {
      const r = list[i]!;
      o = writeVarint(b, o, recordSize(r, i, header));
      b[o++] = 0; // attributes
      b[o++] = 0; // timestampDelta varlong 0
      o = writeVarint(b, o, i); // offsetDelta
      o = writeVarint(b, o, r.key.length);
      o += r.key.copy(b, o);
      o = writeVarint(b, o, r.value.length);
      o += r.value.copy(b, o);
      b[o++] = 2; // one header (zigzag 1)
      o = writeVarint(b, o, HEADER_KEY.length);
      o += HEADER_KEY.copy(b, o);
      o = writeVarint(b, o, header.length);
      o += header.copy(b, o);
    }
    let out = b.subarray(0, o);
    if (this.compression === 'zstd') {
      this.zstd ??= createCodec('zstandard', 1);
      const packed = this.zstd.compress(out.subarray(61));
      if (packed.length < out.length - 61) {
        out = Buffer.concat([out.subarray(0, 61), packed]);
        o = out.length;
        out.writeInt16BE(4, attributesAt); // compression type 4: zstd
      }
    }
    out.writeInt32BE(o - lengthAt - 4, lengthAt);
    out.writeUInt32BE(crc32c(out.subarray(crcAt + 4)), crcAt);
    return out;
  }

  private checkResponse(res: Buffer, partitions: number[]): void {
    const d = new Decoder(res);
    const errors: string[] = [];
    const seen = new Set<number>();
    let tooLarge = false;
    d.readArray((t) => {
      t.readString();
      t.readArray((p) => {
        const partition = p.readInt32();
        const code = p.readInt16();
        p.readInt64(); // base_offset
        p.readInt64(); // log_append_time_ms (v2+)
        p.readInt64(); // log_start_offset (v5+)
        seen.add(partition);
        if (code !== 0) errors.push(`partition ${partition}: ${KAFKA_ERRORS[code] ?? `error ${code}`}`);
        if (code === 10 || code === 18) tooLarge = true; // MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE
        return null;
      });
      return null;
    });
    for (const p of partitions) if (!seen.has(p)) errors.push(`partition ${p}: no answer`);
    if (tooLarge) {
      // Retrying sends the same records again: the operator must act.
      throw new CdpError(
        ErrorCodes.KAFKA,
        `Kafka refused a record batch to ${this.topic} as larger than the topic's max.message.bytes (${errors.join(', ')}): raise max.message.bytes on topic ${this.topic}, or lower capture.batchMaxBytes below it, then start capture again`,
        { canRetry: false, details: { errors, kafkaError: 'MESSAGE_TOO_LARGE' } },
      );
    }
    if (errors.length > 0) {
      throw new CdpError(ErrorCodes.KAFKA, `Kafka refused a produce request to ${this.topic}: ${errors.join(', ')}`, { canRetry: true, details: { errors } });
    }
  }
}

/** kafkajs's DefaultPartitioner (and the Java client's): toPositive(murmur2(key)) % partitions. */
export function partitionOf(key: Buffer, partitions: number): number {
  return (murmur2(key) & 0x7fffffff) % partitions;
}

/**
 * Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2) in 32-bit integer arithmetic.
 * kafkajs computes the same with a 64-bit Long library, several allocations per 4 bytes of key;
 * only the low 32 bits of each product matter, which is exactly what Math.imul gives.
 */
export function murmur2(data: Buffer): number {
  const length = data.length;
  const m = 0x5bd1e995;
  let h = (0x9747b28c ^ length) | 0;
  const length4 = length >> 2;
  for (let i = 0; i < length4; i++) {
    const i4 = i << 2;
    let k = data[i4]! | (data[i4 + 1]! << 8) | (data[i4 + 2]! << 16) | (data[i4 + 3]! << 24);
    k = Math.imul(k, m);
    k ^= k >>> 24;
    k = Math.imul(k, m);
    h = Math.imul(h, m);
    h ^= k;
  }
  // The tail: Java's switch falls through from case 3 to case 1.
  const tail = length & ~3;
  const rest = length & 3;
  if (rest === 3) h ^= data[tail + 2]! << 16;
  if (rest >= 2) h ^= data[tail + 1]! << 8;
  if (rest >= 1) {
    h ^= data[tail]!;
    h = Math.imul(h, m);
  }
  h ^= h >>> 13;
  h = Math.imul(h, m);
  h ^= h >>> 15;
  return h | 0;
}

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as record batch v2 requires, sliced by 8:
// eight table lookups per 8 bytes instead of one per byte (kafkajs's version).
const CRC_TABLES = (() => {
  const t = new Int32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c;
  }
  for (let i = 0; i < 256; i++) {
    let c = t[i]!;
    for (let s = 1; s < 8; s++) {
      c = t[c & 0xff]! ^ (c >>> 8);
      t[s * 256 + i] = c;
    }
  }
  return t;
})();

export function crc32c(buf: Uint8Array): number {
  const t = CRC_TABLES;
  const n = buf.length;
  let crc = -1;
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const a = crc ^ (buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24));
    crc =
      t[1792 + (a & 0xff)]! ^
      t[1536 + ((a >>> 8) & 0xff)]! ^
      t[1280 + ((a >>> 16) & 0xff)]! ^
      t[1024 + (a >>> 24)]! ^
      t[768 + buf[i + 4]!]! ^
      t[512 + buf[i + 5]!]! ^
      t[256 + buf[i + 6]!]! ^
      t[buf[i + 7]!]!;
  }
  for (; i < n; i++) crc = t[(crc ^ buf[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ -1) >>> 0;
}

/**
 * Bytes of a record batch holding just this record, as the broker compares it with the topic's
 * max.message.bytes (the batch's sizeInBytes: the 61-byte batch header, log overhead included).
 */
export function singleRecordBatchSize(key: Buffer, value: Buffer, schemaHeader: string): number {
  const body = recordSize({ key, value, partition: -1 }, 0, Buffer.from(schemaHeader, 'utf8'));
  return 61 + varintSize(body) + body;
}

/** Bytes of one record's body (after its length varint). */
function recordSize(r: OutRecord, i: number, header: Buffer): number {
  return (
    1 + // attributes
    1 + // timestampDelta 0
    varintSize(i) +
    varintSize(r.key.length) +
    r.key.length +
    varintSize(r.value.length) +
    r.value.length +
    1 + // header count
    varintSize(HEADER_KEY.length) +
    HEADER_KEY.length +
    varintSize(header.length) +
    header.length
  );
}

/** Zigzag varint (protobuf style), as Kafka records use; values here are non-negative int32. */
function varintSize(v: number): number {
  let z = (v << 1) ^ (v >> 31);
  z >>>= 0;
  let n = 1;
  while (z >= 0x80) {
    z >>>= 7;
    n++;
  }
  return n;
}

function writeVarint(b: Buffer, o: number, v: number): number {
  let z = ((v << 1) ^ (v >> 31)) >>> 0;
  while (z >= 0x80) {
    b[o++] = (z & 0x7f) | 0x80;
    z >>>= 7;
  }
  b[o++] = z;
  return o;
}
