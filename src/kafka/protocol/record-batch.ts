// Record batch v2 (magic 2; protocol guide, "Record Batch", https://kafka.apache.org/documentation/#recordbatch,
// and KIP-98 for the idempotent producer fields), written straight into one buffer per partition.
//
//   baseOffset: int64, batchLength: int32, partitionLeaderEpoch: int32, magic: int8 (2),
//   crc: uint32 (CRC-32C of everything after it), attributes: int16, lastOffsetDelta: int32,
//   baseTimestamp: int64, maxTimestamp: int64, producerId: int64, producerEpoch: int16,
//   baseSequence: int32, records: [Record]
//   Record: length varint, attributes int8, timestampDelta varlong, offsetDelta varint,
//           keyLength varint, key, valueLength varint, value, [Header] (count varint)
//   Header: headerKeyLength varint, headerKey, headerValueLength varint, headerValue
//
// attributes bits 0-2 are the compression type (4 = zstd, KIP-110; the records after the 61-byte
// header are then one zstd frame). Why the engine writes batches itself: see ../producer.ts.

/** What the batch carries per record: a key and a value (plus one header shared by all records). */
export interface BatchRecord {
  key: Buffer;
  value: Buffer;
}

export interface BatchOptions {
  producerId: bigint;
  producerEpoch: number;
  baseSequence: number;
  /** CreateTime of every record, ms since the epoch. */
  timestamp: number;
  /** The one header every record carries. */
  headerKey: Buffer;
  headerValue: Buffer;
  /** zstd-compresses the records section; omitted = no compression. */
  compress?: (records: Buffer) => Buffer;
}

/** Bytes of the batch header before the first record. */
export const BATCH_HEADER_BYTES = 61;
const ZSTD = 4;

export function encodeRecordBatch(list: readonly BatchRecord[], opts: BatchOptions): Buffer {
  const { headerKey, headerValue } = opts;
  let size = BATCH_HEADER_BYTES;
  for (let i = 0; i < list.length; i++) size += recordSize(list[i]!, i, headerKey, headerValue) + 5;
  const b = Buffer.allocUnsafe(size);
  let o = 0;
  o = b.writeBigInt64BE(0n, o); // baseOffset: assigned by the broker
  const lengthAt = o;
  o += 4;
  o = b.writeInt32BE(-1, o); // partitionLeaderEpoch: set by the broker
  o = b.writeInt8(2, o);
  const crcAt = o;
  o += 4;
  const attributesAt = o;
  o = b.writeInt16BE(0, o); // attributes: no compression, CreateTime, not transactional, no control
  o = b.writeInt32BE(list.length - 1, o);
  const ts = BigInt(opts.timestamp);
  o = b.writeBigInt64BE(ts, o);
  o = b.writeBigInt64BE(ts, o);
  o = b.writeBigInt64BE(opts.producerId, o);
  o = b.writeInt16BE(opts.producerEpoch, o);
  o = b.writeInt32BE(opts.baseSequence, o);
  o = b.writeInt32BE(list.length, o);
  for (let i = 0; i < list.length; i++) {
    const r = list[i]!;
    o = writeVarint(b, o, recordSize(r, i, headerKey, headerValue));
    b[o++] = 0; // attributes (unused)
    b[o++] = 0; // timestampDelta varlong 0
    o = writeVarint(b, o, i); // offsetDelta
    o = writeVarint(b, o, r.key.length);
    o += r.key.copy(b, o);
    o = writeVarint(b, o, r.value.length);
    o += r.value.copy(b, o);
    b[o++] = 2; // one header (zigzag 1)
    o = writeVarint(b, o, headerKey.length);
    o += headerKey.copy(b, o);
    o = writeVarint(b, o, headerValue.length);
    o += headerValue.copy(b, o);
  }
  let out = b.subarray(0, o);
  if (opts.compress) {
    const packed = opts.compress(out.subarray(BATCH_HEADER_BYTES));
    // Only when it saves bytes: an incompressible batch goes as it is.
    if (packed.length < out.length - BATCH_HEADER_BYTES) {
      out = Buffer.concat([out.subarray(0, BATCH_HEADER_BYTES), packed]);
      o = out.length;
      out.writeInt16BE(ZSTD, attributesAt);
    }
  }
  out.writeInt32BE(o - lengthAt - 4, lengthAt);
  out.writeUInt32BE(crc32c(out.subarray(crcAt + 4)), crcAt);
  return out;
}

/**
 * Bytes of a record batch holding just this record, as the broker compares it with the topic's
 * max.message.bytes (the batch's sizeInBytes: the 61-byte batch header, log overhead included).
 */
export function singleRecordBatchSize(key: Buffer, value: Buffer, headerKey: Buffer, headerValue: Buffer): number {
  const body = recordSize({ key, value }, 0, headerKey, headerValue);
  return BATCH_HEADER_BYTES + varintSize(body) + body;
}

/** Bytes of one record's body (after its length varint). */
function recordSize(r: BatchRecord, i: number, headerKey: Buffer, headerValue: Buffer): number {
  return (
    1 + // attributes
    1 + // timestampDelta 0
    varintSize(i) +
    varintSize(r.key.length) +
    r.key.length +
    varintSize(r.value.length) +
    r.value.length +
    1 + // header count
    varintSize(headerKey.length) +
    headerKey.length +
    varintSize(headerValue.length) +
    headerValue.length
  );
}

/** Zigzag varint (protobuf style), as Kafka records use; values here are non-negative int32. */
function varintSize(v: number): number {
  let z = (v << 1) ^ (v >> 31);
  z >>>= 0;
  let n = 1;
  while (z >= 0x80) {
    z >>>= 7;
    n++;
  }
  return n;
}

function writeVarint(b: Buffer, o: number, v: number): number {
  let z = ((v << 1) ^ (v >> 31)) >>> 0;
  while (z >= 0x80) {
    b[o++] = (z & 0x7f) | 0x80;
    z >>>= 7;
  }
  b[o++] = z;
  return o;
}

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as record batch v2 requires, sliced by 8:
// eight table lookups per 8 bytes instead of one per byte.
const CRC_TABLES = (() => {
  const t = new Int32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c;
  }
  for (let i = 0; i < 256; i++) {
    let c = t[i]!;
    for (let s = 1; s < 8; s++) {
      c = t[c & 0xff]! ^ (c >>> 8);
      t[s * 256 + i] = c;
    }
  }
  return t;
})();

export function crc32c(buf: Uint8Array): number {
  const t = CRC_TABLES;
  const n = buf.length;
  let crc = -1;
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const a = crc ^ (buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24));
    crc =
      t[1792 + (a & 0xff)]! ^
      t[1536 + ((a >>> 8) & 0xff)]! ^
      t[1280 + ((a >>> 16) & 0xff)]! ^
      t[1024 + (a >>> 24)]! ^
      t[768 + buf[i + 4]!]! ^
      t[512 + buf[i + 5]!]! ^
      t[256 + buf[i + 6]!]! ^
      t[buf[i + 7]!]!;
  }
  for (; i < n; i++) crc = t[(crc ^ buf[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ -1) >>> 0;
}
