import { Kafka, logLevel, type LogEntry } from 'kafkajs';
import type { Config } from '../config/config.js';
import type { Logger } from '../util/log.js';
import './codecs.js'; // zstd for kafkajs: capture may write zstd record batches

// One place that builds the kafkajs client, so that every process logs through pino and uses the
// same retry policy. kafkajs's own retries cover broker blips; our loops handle long outages.

export function createKafka(cfg: Config, log: Logger, clientSuffix = ''): Kafka {
  const kafkaLog = log.child({ component: 'kafkajs' });
  return new Kafka({
    clientId: `${cfg.kafka.clientId}${clientSuffix ? '-' + clientSuffix : ''}`,
    brokers: cfg.kafka.brokers,
    connectionTimeout: 5_000,
    requestTimeout: 30_000,
    retry: { initialRetryTime: 200, maxRetryTime: 10_000, retries: 8 },
    logLevel: logLevel.WARN,
    logCreator:
      () =>
      ({ level, log: entry }: LogEntry) => {
        const { message, ...rest } = entry;
        // kafkajs reports the ordinary rebalance protocol ("The group is rebalancing, re-joining")
        // as an error; it is how partitions move between archivers, not a fault.
        if (/rebalanc/i.test(String(message) + String(rest.error ?? ''))) kafkaLog.info(rest, message);
        else if (level <= logLevel.ERROR) kafkaLog.error(rest, message);
        else if (level === logLevel.WARN) kafkaLog.warn(rest, message);
        else kafkaLog.debug(rest, message);
      },
  });
}
