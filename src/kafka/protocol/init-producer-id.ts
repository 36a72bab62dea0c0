import { Writer, type Api, type Reader } from './primitives.js';

// InitProducerId v0 (API key 22; protocol guide, "InitProducerId API",
// https://kafka.apache.org/protocol#The_Messages_InitProducerId): a producer id and epoch for the
// idempotent producer (KIP-98). Without a transactional id any broker may answer. v0 is the last
// non-flexible version (v2 is flexible) and enough: the engine does not bump epochs (v3+), a
// failed session takes a new id.
//
//   InitProducerId Request (Version: 0) => transactional_id transaction_timeout_ms
//     transactional_id => NULLABLE_STRING, transaction_timeout_ms => INT32
//   InitProducerId Response (Version: 0) => throttle_time_ms error_code producer_id producer_epoch
//     throttle_time_ms => INT32, error_code => INT16, producer_id => INT64, producer_epoch => INT16

export interface InitProducerIdRequest {
  transactionalId: string | null;
  transactionTimeoutMs: number;
}

export interface InitProducerIdResponse {
  errorCode: number;
  producerId: bigint;
  producerEpoch: number;
}

export const InitProducerId: Api<InitProducerIdRequest, InitProducerIdResponse> = {
  name: 'InitProducerId',
  apiKey: 22,
  version: 0,
  encode: (req) => new Writer(16).string(req.transactionalId).int32(req.transactionTimeoutMs).done(),
  decode(r: Reader): InitProducerIdResponse {
    r.int32(); // throttle_time_ms
    return { errorCode: r.int16(), producerId: r.int64(), producerEpoch: r.int16() };
  },
};
