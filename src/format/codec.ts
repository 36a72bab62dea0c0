import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { Compressor, decompress as zstdDecompress } from 'zstd-napi';

// Block codecs of the Avro Object Container File (Avro 1.11 specification, "Required Codecs" and
// "Optional Codecs"): `deflate` is raw RFC 1951 data (no zlib header), `zstandard` is one zstd
// frame per block. avsc ships only null and deflate; zstandard is registered by name, the way any
// Avro reader (avsc `codecs: {...}`, Java's CodecFactory.zstandardCodec) expects it.

export type CodecName = 'zstandard' | 'deflate' | 'null';

export interface BlockCodec {
  name: CodecName;
  compress(raw: Buffer): Buffer;
  decompress(data: Buffer): Buffer;
}

export function createCodec(name: CodecName, zstdLevel = 1): BlockCodec {
  switch (name) {
    case 'zstandard': {
      // One compression context reused for every block: creating a ZSTD_CCtx per block costs more
      // than compressing a 1 MiB block at level 1.
      const cctx = new Compressor();
      cctx.setParameters({ compressionLevel: zstdLevel });
      return { name, compress: (raw) => cctx.compress(raw), decompress: (data) => zstdDecompress(data) };
    }
    case 'deflate':
      return { name, compress: (raw) => deflateRawSync(raw, { level: 6 }), decompress: (data) => inflateRawSync(data) };
    case 'null':
      return { name, compress: (raw) => raw, decompress: (data) => data };
  }
}

/** Decompression by codec name, for the reader (a segment names its own codec in avro.codec). */
export function decompressBlock(codec: string, data: Buffer): Buffer {
  switch (codec) {
    case 'zstandard':
      return zstdDecompress(data);
    case 'deflate':
      return inflateRawSync(data);
    case 'null':
      return data;
    default:
      throw new Error(`unsupported Avro codec ${JSON.stringify(codec)} (supported: zstandard, deflate, null)`);
  }
}
