import { CdpError, ErrorCodes, toError } from '../errors.js';
import { createCodec, type BlockCodec } from '../format/codec.js';
import { KafkaConnection } from './connection.js';
import type { KafkaClientOptions } from './security.js';
import { partitionOf } from './partitioner.js';
import { AUTH_ERRORS, kafkaErrorName } from './protocol/errors.js';
import { InitProducerId } from './protocol/init-producer-id.js';
import { Metadata } from './protocol/metadata.js';
import { Produce, type ProduceResponse } from './protocol/produce.js';
import { encodeRecordBatch, singleRecordBatchSize as batchSizeOf } from './protocol/record-batch.js';

// Capture's idempotent producer, on the engine's own Kafka connections (connection.ts) and
// requests (protocol/): Metadata v4 for the leaders, InitProducerId v0 for the producer id, then
// Produce v7 with record batch v2 built straight into one buffer per partition.
//
// Why not kafkajs's producer: kafkajs 2.2.4 spends ~15 µs per message before a byte reaches the
// socket (a new Encoder and Long arithmetic per record, a header array per record, and
// groupMessagesPerPartition copying its per-partition array for every message: quadratic in the
// batch). Capture produces hundreds of thousands of small records per second (bench/capture.ts),
// so that was the ceiling. Why our own connections (not kafkajs's, as before): kafkajs exposes no
// public way to send raw bytes; reaching its Cluster meant a private symbol and private modules.
// What kafkajs still does, through its public API (client.ts): the archiver's consumer group, the
// admin calls (topic creation, configs, offsets) and the test readers; replacing those would mean
// the group membership protocol (JoinGroup, SyncGroup, Heartbeat, rebalances) for no gain.
//
// Idempotence (KIP-98): one producer id per session, a sequence number per partition that grows
// by the records of each acknowledged batch; one request in flight per broker (the pipeline sends
// one batch at a time). Any error fails the whole send; the capture session then restarts with a
// new producer (and id), so sequence bookkeeping never survives an error.
//
// Compression (capture.compression = zstd): the records of a batch are one zstd frame after the
// 61-byte batch header (attributes type 4). The broker stores the batch as it is (topic
// compression.type=producer), so Kafka writes, replicates and serves ~3x fewer bytes; it costs
// one level-1 zstd pass, a few percent of a core at capture's rate.

export interface OutRecord {
  key: Buffer;
  value: Buffer;
  /** Explicit partition (watermarks); -1 = by key. */
  partition: number;
}

const PRODUCE_TIMEOUT_MS = 30_000;
/** Reconnect when less than this is left of a SASL session: more than one produce request can take. */
const REAUTH_MARGIN_MS = PRODUCE_TIMEOUT_MS + 10_000;

export class DirectProducer {
  private producerId = 0n;
  private producerEpoch = 0;
  private sequences: number[] = [];
  private leaders: number[] = [];
  private readonly addresses = new Map<number, { host: string; port: number }>();
  private readonly connections = new Map<number, Promise<KafkaConnection>>();
  private readonly headerKey: Buffer;
  private readonly headerValue: Buffer;
  /** The archive's zstandard codec: one context for every batch (cheaper than one per batch). */
  private zstd: BlockCodec | undefined;

  constructor(
    private readonly client: KafkaClientOptions,
    private readonly topic: string,
    schemaHeader: { name: string; value: string },
    private readonly compression: 'none' | 'zstd' = 'none',
  ) {
    this.headerKey = Buffer.from(schemaHeader.name, 'utf8');
    this.headerValue = Buffer.from(schemaHeader.value, 'utf8');
  }

  get partitions(): number {
    return this.leaders.length;
  }

  async connect(): Promise<void> {
    const boot = await this.bootstrap();
    try {
      const meta = await boot.send(Metadata, { topics: [this.topic], allowAutoTopicCreation: false });
      for (const b of meta.brokers) this.addresses.set(b.nodeId, { host: b.host, port: b.port });
      const t = meta.topics.find((x) => x.name === this.topic);
      if (!t || t.errorCode === 3) throw new CdpError(ErrorCodes.SOURCE_NOT_READY, `Kafka topic ${this.topic} does not exist: run \`cdp setup\` first`);
      if (t.errorCode !== 0) {
        throw new CdpError(ErrorCodes.KAFKA, `Kafka metadata for topic ${this.topic}: ${kafkaErrorName(t.errorCode)}`, {
          canRetry: !AUTH_ERRORS.has(t.errorCode),
          details: { kafkaError: kafkaErrorName(t.errorCode) },
        });
      }
      if (t.partitions.length === 0) throw new CdpError(ErrorCodes.KAFKA, `Kafka topic ${this.topic} has no partitions`, { canRetry: true });
      this.leaders = [];
      for (const p of t.partitions) {
        if (p.leader < 0 || !this.addresses.has(p.leader))
          throw new CdpError(ErrorCodes.KAFKA, `Kafka topic ${this.topic} partition ${p.partition} has no leader now`, { canRetry: true });
        this.leaders[p.partition] = p.leader;
      }
      // InitProducerId without a transactional id: any broker answers (KIP-98).
      const id = await boot.send(InitProducerId, { transactionalId: null, transactionTimeoutMs: 60_000 });
      if (id.errorCode !== 0) {
        throw new CdpError(
          ErrorCodes.KAFKA,
          `Kafka InitProducerId: ${kafkaErrorName(id.errorCode)}${id.errorCode === 31 ? ' (the user needs IdempotentWrite on the cluster)' : ''}`,
          {
            canRetry: !AUTH_ERRORS.has(id.errorCode),
            details: { kafkaError: kafkaErrorName(id.errorCode) },
          },
        );
      }
      this.producerId = id.producerId;
      this.producerEpoch = id.producerEpoch;
      this.sequences = new Array<number>(t.partitions.length).fill(0);
    } finally {
      boot.close();
    }
  }

  async disconnect(): Promise<void> {
    const all = [...this.connections.values()];
    this.connections.clear();
    await Promise.all(all.map((c) => c.then((x) => x.close()).catch(() => {})));
  }

  partitionFor(key: Buffer): number {
    return partitionOf(key, this.leaders.length);
  }

  /** Sends the records (in order per partition) with acks=all; resolves when every partition acked. */
  async send(records: OutRecord[]): Promise<void> {
    const n = this.leaders.length;
    if (n === 0) throw new CdpError(ErrorCodes.INTERNAL, 'direct producer is not connected');
    const byPartition: OutRecord[][] = Array.from({ length: n }, () => []);
    for (const r of records) byPartition[r.partition >= 0 ? r.partition : this.partitionFor(r.key)]!.push(r);
    const now = Date.now();
    const compress = this.compression === 'zstd' ? (b: Buffer) => (this.zstd ??= createCodec('zstandard', 1)).compress(b) : undefined;
    // One request per leader broker, each carrying its partitions' batches.
    const perLeader = new Map<number, { partition: number; batch: Buffer }[]>();
    for (let p = 0; p < n; p++) {
      const list = byPartition[p]!;
      if (list.length === 0) continue;
      const leader = this.leaders[p]!;
      let l = perLeader.get(leader);
      if (!l) perLeader.set(leader, (l = []));
      const batch = encodeRecordBatch(list, {
        producerId: this.producerId,
        producerEpoch: this.producerEpoch,
        baseSequence: this.sequences[p]!,
        timestamp: now,
        headerKey: this.headerKey,
        headerValue: this.headerValue,
        compress,
      });
      l.push({ partition: p, batch });
    }
    await Promise.all(
      [...perLeader].map(async ([leader, parts]) => {
        const conn = await this.connection(leader);
        const res = await conn.send(Produce, { acks: -1, timeoutMs: PRODUCE_TIMEOUT_MS, topic: this.topic, partitions: parts }, PRODUCE_TIMEOUT_MS + 5_000);
        this.checkResponse(
          res,
          parts.map((x) => x.partition),
        );
      }),
    );
    for (let p = 0; p < n; p++) {
      const c = byPartition[p]!.length;
      if (c) this.sequences[p] = (this.sequences[p]! + c) % 0x80000000;
    }
  }

  /** The first bootstrap broker that accepts a connection (and the credentials). */
  private async bootstrap(): Promise<KafkaConnection> {
    const errors: CdpError[] = [];
    for (const b of this.client.brokers) {
      const i = b.lastIndexOf(':');
      try {
        return await KafkaConnection.open({ ...this.client.connection, host: b.slice(0, i), port: Number(b.slice(i + 1)) });
      } catch (err) {
        const e = err instanceof CdpError ? err : new CdpError(ErrorCodes.KAFKA, toError(err).message, { cause: err, canRetry: true });
        // Credentials and certificates are the same for every broker: no point trying the others.
        if (!e.canRetry) throw e;
        errors.push(e);
      }
    }
    throw new CdpError(ErrorCodes.KAFKA, `cannot connect the Kafka producer: ${errors.map((e) => e.message).join('; ')}`, { canRetry: true, cause: errors[0] });
  }

  private connection(nodeId: number): Promise<KafkaConnection> {
    let c = this.connections.get(nodeId);
    if (c) {
      const cached = c;
      // A SASL session about to expire (KIP-368, connections.max.reauth.ms) is replaced by a fresh
      // connection rather than re-authenticated: the pipeline has at most one request in flight.
      c = cached.then((x) => {
        if (!x.closed && !(x.sessionExpiresAt > 0 && x.sessionExpiresAt - Date.now() < REAUTH_MARGIN_MS)) return x;
        x.close();
        return this.reopen(nodeId);
      });
    } else {
      c = this.reopen(nodeId);
    }
    return c;
  }

  private reopen(nodeId: number): Promise<KafkaConnection> {
    const addr = this.addresses.get(nodeId)!;
    const c = KafkaConnection.open({ ...this.client.connection, host: addr.host, port: addr.port });
    c.catch(() => this.connections.delete(nodeId));
    this.connections.set(nodeId, c);
    return c;
  }

  private checkResponse(res: ProduceResponse, partitions: number[]): void {
    const errors: string[] = [];
    const seen = new Set<number>();
    let tooLarge = false;
    let auth: string | undefined;
    for (const t of res.topics) {
      // Only an answer for our own topic acknowledges our records.
      if (t.name !== this.topic) {
        errors.push(`an answer for topic ${JSON.stringify(t.name)}, which was not asked`);
        continue;
      }
      for (const p of t.partitions) {
        if (!partitions.includes(p.partition)) {
          errors.push(`partition ${p.partition}: an answer for a partition not in the request`);
          continue;
        }
        seen.add(p.partition);
        if (p.errorCode === 0) continue;
        errors.push(`partition ${p.partition}: ${kafkaErrorName(p.errorCode)}`);
        if (p.errorCode === 10 || p.errorCode === 18) tooLarge = true; // MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE
        if (AUTH_ERRORS.has(p.errorCode)) auth = kafkaErrorName(p.errorCode);
      }
    }
    for (const p of partitions) if (!seen.has(p)) errors.push(`partition ${p}: no answer`);
    if (tooLarge) {
      // Retrying sends the same records again: the operator must act.
      throw new CdpError(
        ErrorCodes.KAFKA,
        `Kafka refused a record batch to ${this.topic} as larger than the topic's max.message.bytes (${errors.join(', ')}): raise max.message.bytes on topic ${this.topic}, or lower capture.batchMaxBytes below it, then start capture again`,
        { canRetry: false, details: { errors, kafkaError: 'MESSAGE_TOO_LARGE' } },
      );
    }
    if (auth) {
      throw new CdpError(
        ErrorCodes.KAFKA,
        `Kafka refused writes to ${this.topic}: ${errors.join(', ')}: grant the user Write on the topic (and IdempotentWrite on the cluster)`,
        {
          canRetry: false,
          details: { errors, kafkaError: auth },
        },
      );
    }
    if (errors.length > 0) {
      throw new CdpError(ErrorCodes.KAFKA, `Kafka refused a produce request to ${this.topic}: ${errors.join(', ')}`, { canRetry: true, details: { errors } });
    }
  }
}

/**
 * Bytes of a record batch holding just this record, as the broker compares it with the topic's
 * max.message.bytes.
 */
export function singleRecordBatchSize(key: Buffer, value: Buffer, schemaHeader: { name: string; value: string }): number {
  return batchSizeOf(key, value, Buffer.from(schemaHeader.name, 'utf8'), Buffer.from(schemaHeader.value, 'utf8'));
}
