import { deflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { Compressor } from 'zstd-napi';
import { BlockTooLargeError, createCodec, decompressBlock } from '../../../src/format/codec.js';

// The reader's block decompression is bounded (src/format/codec.ts): forged bytes in an unencrypted
// segment must not make it allocate what a zstd frame header claims, nor inflate without limit.

const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

/** A zstd frame whose header claims `claimed` bytes (8-byte content size, single segment) and holds one raw block of `raw`. */
function forgedFrame(claimed: bigint, raw: Buffer): Buffer {
  const fcs = Buffer.alloc(8);
  fcs.writeBigUInt64LE(claimed);
  const blockHeader = (raw.length << 3) | 1; // last block, type raw
  return Buffer.concat([Buffer.from([...ZSTD_MAGIC, 0xe0]), fcs, Buffer.from([blockHeader & 0xff, (blockHeader >> 8) & 0xff, blockHeader >> 16]), raw]);
}

function zstd(raw: Buffer, contentSize = true): Buffer {
  const c = new Compressor();
  c.setParameters({ compressionLevel: 1, contentSizeFlag: contentSize });
  return c.compress(raw);
}

const text = Buffer.from('row '.repeat(16_384)); // 64 KiB, compresses well

describe('decompressBlock: bounded output', () => {
  it('refuses a zstd frame whose header claims more than the limit, naming the claim', () => {
    // 2^40 bytes: zstd-napi's own decompress() would try to allocate them.
    expect(() => decompressBlock('zstandard', forgedFrame(2n ** 40n, Buffer.from('abcd')), 1 << 20)).toThrow(BlockTooLargeError);
    expect(() => decompressBlock('zstandard', forgedFrame(2n ** 40n, Buffer.from('abcd')), 1 << 20)).toThrow(
      /claims 1099511627776 decompressed bytes, more than the 1048576/,
    );
    // A real frame (64 KiB declared) against a smaller limit.
    expect(() => decompressBlock('zstandard', zstd(text), text.length - 1)).toThrow(BlockTooLargeError);
  });

  it('a frame that declares a size it does not hold is an error, not a short buffer', () => {
    expect(() => decompressBlock('zstandard', forgedFrame(100n, Buffer.from('abcd')), 1 << 20)).toThrow();
  });

  it('counts the output of frames without a declared size (streamed in bounded chunks)', () => {
    const frame = zstd(text, false);
    expect(decompressBlock('zstandard', frame, text.length)).toEqual(text);
    expect(() => decompressBlock('zstandard', frame, text.length - 1)).toThrow(BlockTooLargeError);
    // Two frames back to back (streamed too): the output of both, bounded as one.
    const two = Buffer.concat([zstd(text), zstd(Buffer.from('tail'))]);
    expect(decompressBlock('zstandard', two, text.length + 4)).toEqual(Buffer.concat([text, Buffer.from('tail')]));
    expect(() => decompressBlock('zstandard', two, text.length + 3)).toThrow(BlockTooLargeError);
  });

  it('refuses a truncated zstd frame without a declared size (zstd-napi returned the partial output)', () => {
    const frame = zstd(text, false);
    expect(() => decompressBlock('zstandard', frame.subarray(0, frame.length - 3), 1 << 20)).toThrow(/truncated zstd frame/);
  });

  it('stops inflating deflate data at the limit', () => {
    const bomb = deflateRawSync(Buffer.alloc(8 << 20)); // 8 MiB of zeros in ~8 KiB
    expect(bomb.length).toBeLessThan(64 * 1024);
    expect(() => decompressBlock('deflate', bomb, 1 << 20)).toThrow(BlockTooLargeError);
    expect(decompressBlock('deflate', deflateRawSync(text), text.length)).toEqual(text);
  });

  it('bounds the null codec too', () => {
    expect(decompressBlock('null', text, text.length)).toBe(text);
    expect(() => decompressBlock('null', text, text.length - 1)).toThrow(BlockTooLargeError);
  });

  it('reads what the writer codecs produce, at exactly the limit', () => {
    for (const name of ['zstandard', 'deflate'] as const) {
      const data = createCodec(name).compress(text);
      expect(decompressBlock(name, data, text.length)).toEqual(text);
    }
  });
});
