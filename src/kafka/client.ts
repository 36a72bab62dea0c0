import { Kafka, logLevel, type LogEntry } from 'kafkajs';
import type { Config } from '../config/config.js';
import type { Logger } from '../util/log.js';
import { logSummarizer } from '../util/log-summary.js';
import './codecs.js'; // zstd for kafkajs: capture may write zstd record batches
import { kafkajsSecurity } from './security.js';

// One place that builds the kafkajs client, so that every process logs through pino, uses the
// same retry policy and the same TLS / SASL settings (security.ts). kafkajs's own retries cover
// broker blips; our loops handle long outages. kafkajs is used only through its public API: the
// archiver's consumer group and admin calls; capture's producer speaks the protocol itself
// (producer.ts, protocol/).

export function createKafka(cfg: Config, log: Logger, clientSuffix = ''): Kafka {
  const summary = logSummarizer(log.child({ component: 'kafkajs' }), 'kafkajs');
  return new Kafka({
    clientId: `${cfg.kafka.clientId}${clientSuffix ? '-' + clientSuffix : ''}`,
    brokers: cfg.kafka.brokers,
    ...kafkajsSecurity(cfg),
    connectionTimeout: 5_000,
    requestTimeout: 30_000,
    retry: { initialRetryTime: 200, maxRetryTime: 10_000, retries: 8 },
    logLevel: logLevel.WARN,
    logCreator:
      () =>
      ({ level, log: entry }: LogEntry) => {
        const { message, stack: _stack, ...rest } = entry as LogEntry['log'] & { stack?: unknown };
        // Every kafkajs line at debug; its errors and warnings summarised at warn, once per kind a
        // minute, without its stack traces (util/log-summary.ts, issue 14). The ordinary rebalance
        // protocol ("The group is rebalancing, re-joining") is how partitions move, not a fault.
        const important = level <= logLevel.WARN && !/rebalanc/i.test(String(message) + String(rest.error ?? ''));
        summary(important, String(message), rest);
      },
  });
}
