import avro from 'avsc';
import { describe, expect, it } from 'vitest';
import { Compressor } from 'zstd-napi';
import { emptyEvent, type ChangeEvent } from '../../../src/format/change-event.js';
import { BatchBuilder, changeBatchSchema } from '../../../src/format/batch.js';
import { encodeEvent } from '../../../src/format/event-codec.js';
import { IntegrityError } from '../../../src/errors.js';
import { encodeSegment, MAX_BLOCK_RAW_BYTES, openContainer, readLong, writeLong } from '../../../src/archive/segment.js';
import { sha256 } from '../../../src/s3/client.js';

// Forged bytes in an unencrypted segment (their SHA-256 matching their name: the attacker renames
// the object too): every length, position and size the reader takes from the bytes is checked, and
// each failure is an IntegrityError (exit 3), never a silent value or an unbounded allocation.

const MAGIC = Buffer.from([0x4f, 0x62, 0x6a, 0x01]);

function bytes(b: Buffer | string): Buffer {
  const v = typeof b === 'string' ? Buffer.from(b, 'utf8') : b;
  return Buffer.concat([writeLong(v.length), v]);
}

/** The header's metadata map as the writer encodes it (one block, then 0). */
function metaPart(meta: Map<string, Buffer>): Buffer {
  const parts = [writeLong(meta.size)];
  for (const [k, v] of meta) parts.push(bytes(k), bytes(v));
  parts.push(writeLong(0));
  return Buffer.concat(parts);
}

const events: ChangeEvent[] = [0, 1, 2].map((i) =>
  emptyEvent({
    op: 'INSERT',
    database: 'db',
    commitLsn: 0x5000,
    changeLsn: 0x4f00 + i,
    xid: 900,
    commitTime: 1_700_000_000_000_000,
    position: i,
    schema: 'public',
    table: 't',
    relation: { oid: 16384, replicaIdentity: 'd', columns: ['id', 'v'], types: ['bigint', 'text'], key: [0] },
    new: [String(i + 1), `v${i}`],
  }),
);
const real = encodeSegment(events, { partition: 0, codec: 'zstandard' });
const realMeta = openContainer(real.bytes, { expectedSha256: real.name.sha256 }).meta;
const headerLen = MAGIC.length + metaPart(realMeta).length;
const sync = real.bytes.subarray(headerLen, headerLen + 16);
const realBlocks = real.bytes.subarray(headerLen + 16);

function container(meta: Buffer, blocks: Buffer = realBlocks): Buffer {
  return Buffer.concat([MAGIC, meta, sync, blocks]);
}

function block(count: number, data: Buffer, size = data.length): Buffer {
  return Buffer.concat([writeLong(count), writeLong(size), data, sync]);
}

/** Opens `b` as a stored segment (its checksum matching) and reads every block; returns the error. */
function failure(b: Buffer): IntegrityError {
  try {
    const c = openContainer(b, { expectedSha256: sha256(b), key: 'a/segments/p0000/forged.avro' });
    for (const _ of c.blocks()) void _;
  } catch (err) {
    expect(err).toBeInstanceOf(IntegrityError);
    expect((err as IntegrityError).exitCode).toBe(3);
    return err as IntegrityError;
  }
  throw new Error('the forged segment was read without an error');
}

describe('segment reader against forged bytes', () => {
  it('the helpers rebuild the writer bytes exactly (so the forgeries differ only where meant)', () => {
    expect(container(metaPart(realMeta)).equals(real.bytes)).toBe(true);
  });

  it('refuses negative and oversized lengths in the header metadata', () => {
    const key = bytes('avro.codec');
    expect(failure(container(Buffer.concat([writeLong(1), writeLong(-1), Buffer.from('x'), writeLong(0)]))).message).toMatch(
      /metadata key has a negative length -1/,
    );
    expect(failure(container(Buffer.concat([writeLong(1), key, writeLong(-5), writeLong(0)]))).message).toMatch(
      /metadata value "avro.codec" has a negative length -5/,
    );
    expect(failure(container(Buffer.concat([writeLong(1), writeLong(100_000), Buffer.from('k')]))).message).toMatch(
      /metadata key of 100000 bytes .* extends past the end/,
    );
    expect(failure(container(Buffer.concat([writeLong(1), key, writeLong(100_000), Buffer.from('zstandard')]))).message).toMatch(
      /metadata value "avro.codec" of 100000 bytes .* extends past the end/,
    );
    // A negative item count is followed by the block's byte size: checked as well.
    expect(failure(container(Buffer.concat([writeLong(-1), writeLong(-7), key, bytes('zstandard'), writeLong(0)]))).message).toMatch(
      /header metadata block has a negative length -7/,
    );
    expect(failure(container(Buffer.concat([writeLong(-1), writeLong(1 << 30), key, bytes('zstandard'), writeLong(0)]))).message).toMatch(
      /header metadata block .* extends past the end/,
    );
  });

  it('refuses a metadata key given twice (which value the reader took would be a guess)', () => {
    const m = metaPart(realMeta);
    const twice = Buffer.concat([writeLong(1), bytes('avro.codec'), bytes('deflate'), m]);
    expect(failure(container(twice)).message).toMatch(/metadata key "avro.codec" appears twice/);
  });

  it('refuses a negative block count and a negative block size', () => {
    const meta = metaPart(realMeta);
    const data = Buffer.from('abcd');
    expect(failure(container(meta, block(-1, data))).message).toMatch(/block record count -1 is negative/);
    expect(failure(container(meta, block(1, data, -4))).message).toMatch(/block has a negative length -4/);
    expect(failure(container(meta, block(1, data, 1 << 20))).message).toMatch(/block of 1048576 bytes .* extends past the end/);
  });

  it('refuses, before allocating, a zstd frame that claims more than a block may hold', () => {
    const claimed = 2n ** 33n; // 8 GiB: more than MAX_BLOCK_RAW_BYTES
    expect(Number(claimed)).toBeGreaterThan(MAX_BLOCK_RAW_BYTES);
    const fcs = Buffer.alloc(8);
    fcs.writeBigUInt64LE(claimed);
    const frame = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xe0]), fcs, Buffer.from([(4 << 3) | 1, 0, 0]), Buffer.from('abcd')]);
    const err = failure(container(metaPart(realMeta), block(1, frame)));
    expect(err.message).toMatch(/corrupt block after 0 records/);
    expect(err.message).toMatch(/claims 8589934592 decompressed bytes, more than the 2149580800/);
  });

  it('a readLong at a negative position throws instead of reading 0', () => {
    expect(() => readLong(Buffer.from([0x02]), -1)).toThrow(RangeError);
  });

  it('a ChangeBatch that is not our exact encoding is an integrity error of the segment', () => {
    const b = new BatchBuilder();
    for (const ev of events) b.append(encodeEvent(ev));
    const type = avro.Type.forSchema(changeBatchSchema as avro.Schema);
    const batch = type.fromBuffer(b.finish()) as { oldCount: number[] };
    batch.oldCount[1] = -2; // the writer writes -1 for a null old tuple, nothing below
    const c = new Compressor();
    c.setParameters({ compressionLevel: 1 });
    expect(failure(container(metaPart(realMeta), block(1, c.compress(type.toBuffer(batch))))).message).toMatch(/oldCount -2 is below -1/);
  });
});
