import { Writer, type Api, type Reader } from './primitives.js';

// Metadata v4 (API key 3; protocol guide, "Metadata API",
// https://kafka.apache.org/protocol#The_Messages_Metadata): the brokers' addresses and each
// partition's leader. v4 is the oldest version Kafka 4.0 still accepts (KIP-896 removed v0-v3) and
// the newest before flexible versions change the encoding (v9); it also lets the request say "do
// not create the topic" (allow_auto_topic_creation, KIP-204).
//
//   Metadata Request (Version: 4) => [topics] allow_auto_topic_creation
//     topics => name          name => STRING
//     allow_auto_topic_creation => BOOLEAN
//   Metadata Response (Version: 4) => throttle_time_ms [brokers] cluster_id controller_id [topics]
//     throttle_time_ms => INT32
//     brokers => node_id host port rack
//       node_id => INT32, host => STRING, port => INT32, rack => NULLABLE_STRING
//     cluster_id => NULLABLE_STRING
//     controller_id => INT32
//     topics => error_code name is_internal [partitions]
//       error_code => INT16, name => STRING, is_internal => BOOLEAN
//       partitions => error_code partition_index leader_id [replica_nodes] [isr_nodes]
//         error_code => INT16, partition_index => INT32, leader_id => INT32,
//         replica_nodes => INT32, isr_nodes => INT32

export interface MetadataRequest {
  /** null = every topic. */
  topics: string[] | null;
  allowAutoTopicCreation: boolean;
}

export interface MetadataBroker {
  nodeId: number;
  host: string;
  port: number;
}

export interface MetadataPartition {
  errorCode: number;
  partition: number;
  leader: number;
}

export interface MetadataTopic {
  errorCode: number;
  name: string;
  partitions: MetadataPartition[];
}

export interface MetadataResponse {
  brokers: MetadataBroker[];
  clusterId: string | null;
  controllerId: number;
  topics: MetadataTopic[];
}

export const Metadata: Api<MetadataRequest, MetadataResponse> = {
  name: 'Metadata',
  apiKey: 3,
  version: 4,
  encode(req: MetadataRequest): Buffer {
    return new Writer(64)
      .array(req.topics, (w, t) => w.string(t))
      .bool(req.allowAutoTopicCreation)
      .done();
  },
  decode(r: Reader): MetadataResponse {
    r.int32(); // throttle_time_ms
    const brokers = r.array((b) => {
      const nodeId = b.int32();
      const host = b.string();
      const port = b.int32();
      b.nullableString(); // rack
      return { nodeId, host, port };
    });
    const clusterId = r.nullableString();
    const controllerId = r.int32();
    const topics = r.array((t) => {
      const errorCode = t.int16();
      const name = t.string();
      t.bool(); // is_internal
      const partitions = t.array((p) => {
        const errorCode = p.int16();
        const partition = p.int32();
        const leader = p.int32();
        p.array((x) => x.int32()); // replica_nodes
        p.array((x) => x.int32()); // isr_nodes
        return { errorCode, partition, leader };
      });
      return { errorCode, name, partitions };
    });
    return { brokers, clusterId, controllerId, topics };
  },
};
