import { Writer, type Api, type Reader } from './primitives.js';

// SaslAuthenticate v1 (API key 36; protocol guide, "SaslAuthenticate API",
// https://kafka.apache.org/protocol#The_Messages_SaslAuthenticate): one step of the SASL exchange
// (PLAIN: one step; SCRAM: two). v1 adds the session lifetime (KIP-368); v2 is flexible.
//
//   SaslAuthenticate Request (Version: 1) => auth_bytes
//     auth_bytes => BYTES
//   SaslAuthenticate Response (Version: 1) => error_code error_message auth_bytes session_lifetime_ms
//     error_code => INT16, error_message => NULLABLE_STRING, auth_bytes => BYTES,
//     session_lifetime_ms => INT64

export interface SaslAuthenticateResponse {
  errorCode: number;
  errorMessage: string | null;
  authBytes: Buffer;
  sessionLifetimeMs: bigint;
}

export const SaslAuthenticate: Api<Buffer, SaslAuthenticateResponse> = {
  name: 'SaslAuthenticate',
  apiKey: 36,
  version: 1,
  encode: (authBytes) => new Writer(authBytes.length + 8).bytes(authBytes).done(),
  decode: (r: Reader) => ({ errorCode: r.int16(), errorMessage: r.nullableString(), authBytes: r.bytes(), sessionLifetimeMs: r.int64() }),
};
