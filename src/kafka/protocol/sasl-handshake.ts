import { Writer, type Api, type Reader } from './primitives.js';

// SaslHandshake v1 (API key 17; protocol guide, "SaslHandshake API" and "SASL Authentication
// Sequence", https://kafka.apache.org/protocol#sasl_handshake): names the mechanism; with v1 the
// exchange that follows travels in SaslAuthenticate requests (KIP-152), so the broker can answer
// a failure with an error code and message instead of closing the connection.
//
//   SaslHandshake Request (Version: 1) => mechanism
//     mechanism => STRING
//   SaslHandshake Response (Version: 1) => error_code [mechanisms]
//     error_code => INT16, mechanisms => STRING

export interface SaslHandshakeResponse {
  errorCode: number;
  mechanisms: string[];
}

export const SaslHandshake: Api<string, SaslHandshakeResponse> = {
  name: 'SaslHandshake',
  apiKey: 17,
  version: 1,
  encode: (mechanism) => new Writer(32).string(mechanism).done(),
  decode: (r: Reader) => ({ errorCode: r.int16(), mechanisms: r.array((m) => m.string()) }),
};
