import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { Compressor, decompress as zstdDecompress } from 'zstd-napi';
import zstd from 'zstd-napi/binding.js';

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

/** A block whose decompressed size would pass the reader's limit (forged or corrupt bytes). */
export class BlockTooLargeError extends RangeError {}

/**
 * Decompression by codec name, for the reader (a segment names its own codec in avro.codec). Never
 * produces (nor allocates) more than `maxBytes`: a zstd frame whose header claims more is refused
 * before any allocation, and output without a declared size (a frame without its content size,
 * deflate) is counted as it comes. Throws BlockTooLargeError past the limit, RangeError or a zlib
 * or zstd error on bytes that do not decompress.
 */
export function decompressBlock(codec: string, data: Buffer, maxBytes: number): Buffer {
  switch (codec) {
    case 'zstandard':
      return zstdBounded(data, maxBytes);
    case 'deflate':
      try {
        return inflateRawSync(data, { maxOutputLength: maxBytes });
      } catch (err) {
        // zlib stops at maxOutputLength with ERR_BUFFER_TOO_LARGE (Node's zlib docs, "Class: Options").
        if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw tooLarge(maxBytes);
        throw err;
      }
    case 'null':
      if (data.length > maxBytes) throw tooLarge(maxBytes);
      return data;
    default:
      throw new Error(`unsupported Avro codec ${JSON.stringify(codec)} (supported: zstandard, deflate, null)`);
  }
}

function tooLarge(maxBytes: number, claimed?: number): BlockTooLargeError {
  const what = claimed === undefined ? 'decompresses to more than' : `claims ${claimed} decompressed bytes, more than`;
  return new BlockTooLargeError(`block ${what} the ${maxBytes} a block may hold`);
}

let dctx: zstd.DCtx | undefined;
const ZSTD_CHUNK = 128 * 1024;

/**
 * zstd-napi's decompress() allocates whatever size the frame header claims and, for a frame without
 * one, grows without limit (and returns a truncated frame's partial output). Here: a single frame
 * that declares its content size (what our writer produces) is decompressed in one call into a
 * buffer of that size once the size is checked; anything else (several frames, no declared size)
 * is streamed in bounded chunks, counting the output, and must end on a complete frame.
 */
function zstdBounded(data: Buffer, maxBytes: number): Buffer {
  dctx ??= new zstd.DCtx();
  dctx.reset(zstd.ResetDirective.sessionOnly);
  const declared = zstd.getFrameContentSize(data);
  if (declared !== null && declared > maxBytes) throw tooLarge(maxBytes, declared);
  if (declared !== null && zstd.findFrameCompressedSize(data) === data.length) {
    const out = Buffer.allocUnsafe(declared);
    const n = dctx.decompress(out, data);
    if (n !== declared) throw new RangeError(`zstd frame declares ${declared} bytes, holds ${n}`);
    return out;
  }
  const chunks: Buffer[] = [];
  let total = 0;
  let input = data;
  let pending = 0; // ZSTD_decompressStream's hint: 0 once a frame is complete and flushed
  while (input.length > 0 || pending !== 0) {
    const chunk = Buffer.allocUnsafe(Math.min(ZSTD_CHUNK, maxBytes - total + 1));
    const [hint, produced, consumed] = dctx.decompressStream(chunk, input);
    total += produced;
    if (total > maxBytes) throw tooLarge(maxBytes);
    if (produced === 0 && consumed === 0) throw new RangeError('truncated zstd frame');
    chunks.push(chunk.subarray(0, produced));
    input = input.subarray(consumed);
    pending = hint;
  }
  return Buffer.concat(chunks, total);
}
