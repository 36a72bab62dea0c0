// Request and response headers (protocol guide, "Headers" under "Protocol API Keys",
// https://kafka.apache.org/protocol#protocol_messages): every request the engine sends uses a
// non-flexible version, so its header is Request Header v1 and the answer's is Response Header v0.
//
//   Request Header v1 => request_api_key request_api_version correlation_id client_id
//     request_api_key => INT16, request_api_version => INT16, correlation_id => INT32,
//     client_id => NULLABLE_STRING
//   Response Header v0 => correlation_id
//     correlation_id => INT32
//
// Framing (guide, "Common Request and Response Structure"): each message is an INT32 size, then
// that many bytes (header and body).

/** The size prefix and request header v1 of a request whose body is `bodyLength` bytes long. */
export function requestPrefix(apiKey: number, version: number, correlationId: number, clientId: string, bodyLength: number): Buffer {
  const id = Buffer.from(clientId, 'utf8');
  const b = Buffer.allocUnsafe(4 + 2 + 2 + 4 + 2 + id.length);
  let o = b.writeInt32BE(2 + 2 + 4 + 2 + id.length + bodyLength, 0);
  o = b.writeInt16BE(apiKey, o);
  o = b.writeInt16BE(version, o);
  o = b.writeInt32BE(correlationId, o);
  o = b.writeInt16BE(id.length, o);
  id.copy(b, o);
  return b;
}

/** Bytes of Response Header v0 before the body. */
export const RESPONSE_HEADER_V0 = 4;
