import type { Api, Reader } from './primitives.js';

// ApiVersions v0 (API key 18; protocol guide, "ApiVersions API",
// https://kafka.apache.org/protocol#The_Messages_ApiVersions). The first request on a connection:
// the broker's range per API, so the engine can refuse a broker that does not speak the versions it
// sends (rather than meet a closed connection later). v0 because every broker answers it, and
// because the broker answers ApiVersions with Response Header v0 whatever the version (KIP-511).
//
//   ApiVersions Request (Version: 0) =>            (empty body)
//   ApiVersions Response (Version: 0) => error_code [api_keys]
//     error_code => INT16
//     api_keys => api_key min_version max_version
//       api_key => INT16, min_version => INT16, max_version => INT16

export interface ApiVersionsResponse {
  errorCode: number;
  apis: Map<number, { min: number; max: number }>;
}

export const ApiVersions: Api<void, ApiVersionsResponse> = {
  name: 'ApiVersions',
  apiKey: 18,
  version: 0,
  encode: () => Buffer.alloc(0),
  decode(r: Reader): ApiVersionsResponse {
    const errorCode = r.int16();
    const apis = new Map<number, { min: number; max: number }>();
    r.array((a) => {
      const key = a.int16();
      apis.set(key, { min: a.int16(), max: a.int16() });
      return null;
    });
    return { errorCode, apis };
  },
};
