// Setup, Kafka: the topic's check and its creation.

import type { Admin } from 'kafkajs';
import type { Config } from '../config/config.js';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import type { Findings } from './setup-findings.js';

/** Kafka topic max.message.bytes: one change event carries a whole row (TOASTed values up to 1 GB
 * are possible in Postgres; Kafka's default of 1 MB would reject ordinary large rows). */
export const TOPIC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

export interface KafkaState {
  topicExists: boolean;
}

export async function checkKafka(admin: Admin, cfg: Config, topic: string, f: Findings): Promise<KafkaState> {
  const topics = await admin.listTopics();
  if (!topics.includes(topic)) return { topicExists: false };
  const meta = await admin.fetchTopicMetadata({ topics: [topic] });
  const n = meta.topics[0]?.partitions.length ?? 0;
  if (n !== cfg.kafka.partitions) {
    f.problems.push(
      `Kafka topic ${topic} exists with ${n} partitions, configured kafka.partitions is ${cfg.kafka.partitions}: set kafka.partitions to ${n} (or use another topic)`,
    );
  }
  return { topicExists: true };
}

export async function createTopic(admin: Admin, cfg: Config, topic: string): Promise<void> {
  try {
    await admin.createTopics({
      waitForLeaders: true,
      topics: [
        {
          topic,
          numPartitions: cfg.kafka.partitions,
          replicationFactor: cfg.kafka.replicationFactor,
          configEntries: [
            { name: 'retention.ms', value: String(cfg.kafka.retentionMs) },
            { name: 'cleanup.policy', value: 'delete' },
            { name: 'max.message.bytes', value: String(TOPIC_MAX_MESSAGE_BYTES) },
          ],
        },
      ],
    });
  } catch (err) {
    throw new CdpError(ErrorCodes.KAFKA, `cannot create Kafka topic ${topic}: ${toError(err).message}`, { cause: err });
  }
}
