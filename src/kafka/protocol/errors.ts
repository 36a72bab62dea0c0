// Kafka error codes (protocol guide, "Error Codes", https://kafka.apache.org/protocol#protocol_error_codes)
// that the requests in this folder can return and that messages should name.

export const KafkaErrorNames: Record<number, string> = {
  [-1]: 'UNKNOWN_SERVER_ERROR',
  1: 'OFFSET_OUT_OF_RANGE',
  2: 'CORRUPT_MESSAGE',
  3: 'UNKNOWN_TOPIC_OR_PARTITION',
  5: 'LEADER_NOT_AVAILABLE',
  6: 'NOT_LEADER_OR_FOLLOWER',
  7: 'REQUEST_TIMED_OUT',
  10: 'MESSAGE_TOO_LARGE',
  15: 'COORDINATOR_NOT_AVAILABLE',
  18: 'RECORD_LIST_TOO_LARGE',
  19: 'NOT_ENOUGH_REPLICAS',
  20: 'NOT_ENOUGH_REPLICAS_AFTER_APPEND',
  29: 'TOPIC_AUTHORIZATION_FAILED',
  31: 'CLUSTER_AUTHORIZATION_FAILED',
  33: 'UNSUPPORTED_SASL_MECHANISM',
  34: 'ILLEGAL_SASL_STATE',
  35: 'UNSUPPORTED_VERSION',
  45: 'OUT_OF_ORDER_SEQUENCE_NUMBER',
  46: 'DUPLICATE_SEQUENCE_NUMBER',
  47: 'INVALID_PRODUCER_EPOCH',
  53: 'TRANSACTIONAL_ID_AUTHORIZATION_FAILED',
  58: 'SASL_AUTHENTICATION_FAILED',
  59: 'UNKNOWN_PRODUCER_ID',
  87: 'INVALID_RECORD',
};

export function kafkaErrorName(code: number): string {
  return KafkaErrorNames[code] ?? `error ${code}`;
}

/** Errors that no retry fixes: credentials or permissions (the operator must act). */
export const AUTH_ERRORS = new Set([29, 31, 33, 53, 58]);
