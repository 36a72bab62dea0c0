import { decompress } from 'zstd-napi';

// A test-only reader of Kafka wire bytes, written from the protocol guide (primitive types,
// "Record Batch") separately from src/kafka/protocol: the unit tests decode what src encodes
// with it, so a shared misunderstanding would need the same mistake made twice. kafkajs has no
// public decoders (only private modules), so this is the independent decoder.

export class Cursor {
  at = 0;
  constructor(readonly b: Buffer) {}
  i8 = () => this.b.readInt8((this.at += 1) - 1);
  i16 = () => this.b.readInt16BE((this.at += 2) - 2);
  i32 = () => this.b.readInt32BE((this.at += 4) - 4);
  u32 = () => this.b.readUInt32BE((this.at += 4) - 4);
  i64 = () => this.b.readBigInt64BE((this.at += 8) - 8);
  take = (n: number) => this.b.subarray(this.at, (this.at += n));
  str = (): string | null => {
    const n = this.i16();
    return n < 0 ? null : this.take(n).toString('utf8');
  };
  bytes = (): Buffer | null => {
    const n = this.i32();
    return n < 0 ? null : this.take(n);
  };
  arr = <T>(f: () => T): T[] | null => {
    const n = this.i32();
    if (n < 0) return null;
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(f());
    return out;
  };
  /** Unsigned LEB128 then zigzag (the guide's VARINT / VARLONG), as a Number. */
  varint = (): number => {
    let shift = 0;
    let v = 0;
    for (;;) {
      const byte = this.b[this.at++]!;
      v += (byte & 0x7f) * 2 ** shift;
      shift += 7;
      if ((byte & 0x80) === 0) break;
    }
    return v % 2 === 0 ? v / 2 : -(v + 1) / 2;
  };
  get done(): boolean {
    return this.at === this.b.length;
  }
}

/** Bitwise CRC-32C (Castagnoli), one bit at a time: slow and obviously right. */
export function crc32cBitwise(b: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of b) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

export interface DecodedBatch {
  baseOffset: bigint;
  partitionLeaderEpoch: number;
  magic: number;
  crcOk: boolean;
  attributes: number;
  lastOffsetDelta: number;
  baseTimestamp: bigint;
  maxTimestamp: bigint;
  producerId: bigint;
  producerEpoch: number;
  baseSequence: number;
  records: { attributes: number; timestampDelta: number; offsetDelta: number; key: Buffer | null; value: Buffer | null; headers: [string, Buffer | null][] }[];
}

export function decodeBatch(b: Buffer): DecodedBatch {
  const c = new Cursor(b);
  const baseOffset = c.i64();
  const length = c.i32();
  if (length !== b.length - 12) throw new Error(`batchLength ${length} but ${b.length - 12} bytes follow it`);
  const partitionLeaderEpoch = c.i32();
  const magic = c.i8();
  const crc = c.u32();
  const crcOk = crc === crc32cBitwise(b.subarray(c.at));
  const attributes = c.i16();
  const lastOffsetDelta = c.i32();
  const baseTimestamp = c.i64();
  const maxTimestamp = c.i64();
  const producerId = c.i64();
  const producerEpoch = c.i16();
  const baseSequence = c.i32();
  const count = c.i32();
  let body = new Cursor(b.subarray(c.at));
  if ((attributes & 7) === 4) body = new Cursor(decompress(body.b));
  else if ((attributes & 7) !== 0) throw new Error(`compression ${attributes & 7} not supported by the test reader`);
  const records: DecodedBatch['records'] = [];
  for (let i = 0; i < count; i++) {
    const len = body.varint();
    const start = body.at;
    const rAttributes = body.i8();
    const timestampDelta = body.varint();
    const offsetDelta = body.varint();
    const kl = body.varint();
    const key = kl < 0 ? null : Buffer.from(body.take(kl));
    const vl = body.varint();
    const value = vl < 0 ? null : Buffer.from(body.take(vl));
    const headers: [string, Buffer | null][] = [];
    const hc = body.varint();
    for (let h = 0; h < hc; h++) {
      const hk = body.take(body.varint()).toString('utf8');
      const hvl = body.varint();
      headers.push([hk, hvl < 0 ? null : Buffer.from(body.take(hvl))]);
    }
    if (body.at - start !== len) throw new Error(`record ${i}: length ${len} but ${body.at - start} bytes read`);
    records.push({ attributes: rAttributes, timestampDelta, offsetDelta, key, value, headers });
  }
  if (!body.done) throw new Error(`${body.b.length - body.at} bytes after the last record`);
  return {
    baseOffset,
    partitionLeaderEpoch,
    magic,
    crcOk,
    attributes,
    lastOffsetDelta,
    baseTimestamp,
    maxTimestamp,
    producerId,
    producerEpoch,
    baseSequence,
    records,
  };
}
