// Capture start-up, Kafka side: the topic must exist (setup creates it with the right partitions
// and limits); its partition count and max.message.bytes are what the session works with.

// ConfigResourceTypes is not among the names Node finds in kafkajs's CommonJS exports: reach it
// through the default export.
import kafkajs, { type Admin } from 'kafkajs';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import type { Logger } from '../util/log.js';

export interface TopicFacts {
  partitions: number;
  /** The topic's max.message.bytes; null when it could not be read (the broker still checks). */
  maxMessageBytes: number | null;
}

/** Connects `admin`, reads the topic, disconnects. A missing topic is SOURCE_NOT_READY (exit 2); anything else Kafka, retryable. */
export async function readTopic(admin: Admin, topic: string, log: Logger): Promise<TopicFacts> {
  try {
    await admin.connect();
    const meta = await admin.fetchTopicMetadata({ topics: [topic] }).catch((err: unknown) => {
      const e = toError(err);
      if (/does not host this topic-partition|UNKNOWN_TOPIC/i.test(e.message) || (e as { type?: string }).type === 'UNKNOWN_TOPIC_OR_PARTITION') {
        throw new CdpError(ErrorCodes.SOURCE_NOT_READY, `Kafka topic ${topic} does not exist: run \`cdp setup\` first`, { cause: e });
      }
      throw e;
    });
    const partitions = meta.topics[0]?.partitions.length ?? 0;
    if (partitions < 1) throw new CdpError(ErrorCodes.KAFKA, `Kafka topic ${topic} has no partitions`, { canRetry: true });
    const maxMessageBytes = await topicMaxMessageBytes(admin, topic, log);
    return { partitions, maxMessageBytes };
  } catch (err) {
    throw err instanceof CdpError ? err : new CdpError(ErrorCodes.KAFKA, `Kafka is not reachable: ${toError(err).message}`, { cause: err, canRetry: true });
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** The topic's max.message.bytes (Kafka topic configs), or null if it cannot be read (e.g. no DescribeConfigs ACL). */
async function topicMaxMessageBytes(admin: Admin, topic: string, log: Logger): Promise<number | null> {
  try {
    const r = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: topic, configNames: ['max.message.bytes'] }],
    });
    const v = Number(r.resources[0]?.configEntries.find((e) => e.configName === 'max.message.bytes')?.configValue);
    return Number.isSafeInteger(v) && v > 0 ? v : null;
  } catch (err) {
    log.warn({ err: toError(err).message, topic }, 'cannot read the topic max.message.bytes; a row larger than it will be reported by Kafka instead');
    return null;
  }
}
