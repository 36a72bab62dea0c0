import type { Api, Reader } from './primitives.js';

// Produce v7 (API key 0; protocol guide, "Produce API", https://kafka.apache.org/protocol#The_Messages_Produce).
// v7 is the first version that may carry zstd batches (KIP-110, Kafka 2.1+) and is still accepted
// by Kafka 4 (KIP-896 removed only v0-v2); v8 adds only per-record errors to the response, v9 is
// flexible. The engine sends one topic per request, its batches built by record-batch.ts.
//
//   Produce Request (Version: 7) => transactional_id acks timeout_ms [topic_data]
//     transactional_id => NULLABLE_STRING, acks => INT16, timeout_ms => INT32
//     topic_data => name [partition_data]
//       name => STRING
//       partition_data => index records
//         index => INT32, records => RECORDS (INT32 length, then record batches)
//   Produce Response (Version: 7) => [responses] throttle_time_ms
//     responses => name [partition_responses]
//       name => STRING
//       partition_responses => index error_code base_offset log_append_time_ms log_start_offset
//         index => INT32, error_code => INT16, base_offset => INT64,
//         log_append_time_ms => INT64, log_start_offset => INT64
//     throttle_time_ms => INT32

export interface ProduceRequest {
  /** -1: all in-sync replicas. */
  acks: number;
  timeoutMs: number;
  topic: string;
  partitions: readonly { partition: number; batch: Buffer }[];
}

export interface ProducePartitionResponse {
  partition: number;
  errorCode: number;
  baseOffset: bigint;
}

export interface ProduceResponse {
  topics: { name: string; partitions: ProducePartitionResponse[] }[];
  throttleTimeMs: number;
}

export const Produce: Api<ProduceRequest, ProduceResponse> = {
  name: 'Produce',
  apiKey: 0,
  version: 7,
  /** One allocation and one copy per batch: this is capture's hot path. */
  encode(req: ProduceRequest): Buffer {
    const topic = Buffer.from(req.topic, 'utf8');
    let size = 2 + 2 + 4 + 4 + 2 + topic.length + 4;
    for (const p of req.partitions) size += 4 + 4 + p.batch.length;
    const b = Buffer.allocUnsafe(size);
    let o = 0;
    o = b.writeInt16BE(-1, o); // transactional_id: null (idempotent, not transactional)
    o = b.writeInt16BE(req.acks, o);
    o = b.writeInt32BE(req.timeoutMs, o);
    o = b.writeInt32BE(1, o); // one topic
    o = b.writeInt16BE(topic.length, o);
    o += topic.copy(b, o);
    o = b.writeInt32BE(req.partitions.length, o);
    for (const p of req.partitions) {
      o = b.writeInt32BE(p.partition, o);
      o = b.writeInt32BE(p.batch.length, o);
      o += p.batch.copy(b, o);
    }
    return b;
  },
  decode(r: Reader): ProduceResponse {
    const topics = r.array((t) => ({
      name: t.string(),
      partitions: t.array((p) => {
        const partition = p.int32();
        const errorCode = p.int16();
        const baseOffset = p.int64();
        p.int64(); // log_append_time_ms
        p.int64(); // log_start_offset
        return { partition, errorCode, baseOffset };
      }),
    }));
    return { topics, throttleTimeMs: r.int32() };
  },
};
