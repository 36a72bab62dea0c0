import { CompressionTypes, Partitioners, type Kafka } from 'kafkajs';
import type { Config } from '../config/config.js';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import { SCHEMA_HEADER } from '../format/change-event.js';
import { DirectProducer, type OutRecord } from '../kafka/producer.js';
import { kafkaClientOptions } from '../kafka/security.js';

// Where capture's batches go (capture.producer): by default the engine's own Produce requests
// (src/kafka/producer.ts: record batches written directly, the fast path), or kafkajs's producer
// (slower per record). Either way one batch at a time, acknowledged by all in-sync replicas.

export interface CaptureSender {
  send(records: OutRecord[]): Promise<void>;
  /** Closes the connections; never throws. */
  close(): Promise<void>;
}

/** Connects the configured producer for `topic`, which has `partitions` partitions (checked again by the direct one). */
export async function openSender(kafka: Kafka, cfg: Config, topic: string, partitions: number): Promise<CaptureSender> {
  if (cfg.capture.producer === 'kafkajs') {
    const producer = kafka.producer({
      idempotent: true,
      // kafkajs assigns idempotent sequence numbers when a request completes: more than one
      // request in flight would reuse them. Our pipeline sends one batch at a time anyway.
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      // murmur2 like the Java client (kafkajs's default since 2.0; explicit to silence its warning).
      createPartitioner: Partitioners.DefaultPartitioner,
      // Bounded: after these, the error reaches us and the session restarts from the slot
      // (kafkajs would otherwise retry forever while we hold the batch).
      retry: { retries: 6, initialRetryTime: 300, maxRetryTime: 10_000 },
    });
    const sender: CaptureSender = {
      send: async (records) => {
        const headers = { [SCHEMA_HEADER.name]: SCHEMA_HEADER.value };
        await producer.send({
          topic,
          acks: -1,
          compression: cfg.capture.compression === 'zstd' ? CompressionTypes.ZSTD : CompressionTypes.None,
          messages: records.map((r) =>
            r.partition >= 0 ? { key: r.key, value: r.value, partition: r.partition, headers } : { key: r.key, value: r.value, headers },
          ),
        });
      },
      close: () => producer.disconnect().catch(() => {}),
    };
    try {
      await producer.connect();
    } catch (err) {
      await sender.close();
      throw new CdpError(ErrorCodes.KAFKA, `cannot connect the Kafka producer: ${toError(err).message}`, { cause: err, canRetry: true });
    }
    return sender;
  }
  const direct = new DirectProducer(kafkaClientOptions(cfg, 'capture'), topic, SCHEMA_HEADER, cfg.capture.compression);
  const sender: CaptureSender = { send: (records) => direct.send(records), close: () => direct.disconnect().catch(() => {}) };
  try {
    await direct.connect();
  } catch (err) {
    await sender.close();
    throw err instanceof CdpError
      ? err
      : new CdpError(ErrorCodes.KAFKA, `cannot connect the Kafka producer: ${toError(err).message}`, { cause: err, canRetry: true });
  }
  if (direct.partitions !== partitions) {
    await sender.close();
    throw new CdpError(ErrorCodes.KAFKA, `Kafka topic ${topic} metadata changed during start-up`, { canRetry: true });
  }
  return sender;
}
