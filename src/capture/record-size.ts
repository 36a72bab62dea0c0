// Records Kafka would refuse: a change whose record batch is larger than the topic's
// max.message.bytes (read at session start, topic-check.ts).

import { CdpError, ErrorCodes } from '../errors.js';
import { SCHEMA_HEADER, type ChangeEvent } from '../format/change-event.js';
import { singleRecordBatchSize } from '../kafka/producer.js';
import { formatLsn } from '../util/lsn.js';

/**
 * A change Kafka would refuse (its record batch larger than the topic's max.message.bytes) would
 * fail every session at the same place: a restart loop that never ends. Stop with an error that
 * says which table, how large, and what the operator must change. Nothing is skipped.
 * @param maxMessageBytes null when the topic's limit could not be read (the broker still checks).
 */
export function checkRecordSize(ev: ChangeEvent, key: Buffer, value: Buffer, maxMessageBytes: number | null, topic: string): void {
  const max = maxMessageBytes;
  if (max === null || key.length + value.length + 256 < max) return;
  const size = singleRecordBatchSize(key, value, SCHEMA_HEADER);
  if (size <= max) return;
  throw recordTooLarge(ev, size, max, topic);
}

export function recordTooLarge(ev: ChangeEvent, size: number, maxMessageBytes: number, topic: string): CdpError {
  const what = ev.table ? `a ${ev.op} on table ${ev.schema}.${ev.table}` : `a ${ev.op} record`;
  return new CdpError(
    ErrorCodes.KAFKA,
    `${what} (commit LSN ${formatLsn(ev.commitLsn)}, xid ${ev.xid}) is ${size} bytes as a Kafka record, more than max.message.bytes = ${maxMessageBytes} of topic ${topic}: ` +
      `Kafka would refuse it on every attempt and capture does not skip changes. Raise the topic's limit above ${size} ` +
      `(kafka-configs.sh --alter --entity-type topics --entity-name ${topic} --add-config max.message.bytes=N; N at most the broker's socket.request.max.bytes), then start capture again; the slot keeps the WAL meanwhile`,
    {
      canRetry: false,
      details: { kafkaError: 'MESSAGE_TOO_LARGE', schema: ev.schema, table: ev.table, bytes: size, maxMessageBytes, commitLsn: formatLsn(ev.commitLsn) },
    },
  );
}
