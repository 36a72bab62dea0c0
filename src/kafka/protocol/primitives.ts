// The primitive types of the Kafka protocol (protocol guide, "Protocol Primitive Types",
// https://kafka.apache.org/protocol#protocol_types), for the non-flexible request versions the
// engine sends: big-endian integers, INT16-length STRING / NULLABLE_STRING, INT32-length BYTES,
// INT32-count ARRAY (-1 = null). Pure code over Buffers; sockets live in ../connection.ts.

import { CdpError, ErrorCodes } from '../../errors.js';

/** Builds a request body. Sizes are computed first by the callers that care (produce), so this one grows as needed. */
export class Writer {
  private buf: Buffer;
  private o = 0;

  constructor(initial = 256) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  private room(n: number): void {
    if (this.o + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.o + n));
    this.buf.copy(next, 0, 0, this.o);
    this.buf = next;
  }

  int8(v: number): this {
    this.room(1);
    this.o = this.buf.writeInt8(v, this.o);
    return this;
  }

  int16(v: number): this {
    this.room(2);
    this.o = this.buf.writeInt16BE(v, this.o);
    return this;
  }

  int32(v: number): this {
    this.room(4);
    this.o = this.buf.writeInt32BE(v, this.o);
    return this;
  }

  int64(v: bigint): this {
    this.room(8);
    this.o = this.buf.writeBigInt64BE(v, this.o);
    return this;
  }

  bool(v: boolean): this {
    return this.int8(v ? 1 : 0);
  }

  /** STRING (null not allowed) or NULLABLE_STRING (null = length -1). */
  string(v: string | null): this {
    if (v === null) return this.int16(-1);
    const n = Buffer.byteLength(v, 'utf8');
    if (n > 0x7fff) throw new CdpError(ErrorCodes.INTERNAL, `Kafka STRING longer than 32767 bytes (${n})`);
    this.int16(n);
    this.room(n);
    this.o += this.buf.write(v, this.o, 'utf8');
    return this;
  }

  /** BYTES: INT32 length, then the bytes. */
  bytes(v: Buffer): this {
    this.int32(v.length);
    return this.raw(v);
  }

  raw(v: Buffer): this {
    this.room(v.length);
    this.o += v.copy(this.buf, this.o);
    return this;
  }

  /** ARRAY: INT32 count (null = -1), then each element. */
  array<T>(items: readonly T[] | null, each: (w: this, item: T) => void): this {
    if (items === null) return this.int32(-1);
    this.int32(items.length);
    for (const item of items) each(this, item);
    return this;
  }

  done(): Buffer {
    return this.buf.subarray(0, this.o);
  }
}

/** Reads a response body; every read checks bounds, so a short or corrupt frame fails with one clear error. */
export class Reader {
  private o = 0;

  constructor(private readonly buf: Buffer) {}

  get offset(): number {
    return this.o;
  }

  get remaining(): number {
    return this.buf.length - this.o;
  }

  private need(n: number): number {
    if (this.o + n > this.buf.length) {
      throw new CdpError(ErrorCodes.PROTOCOL, `Kafka response shorter than its fields (needed ${n} bytes at offset ${this.o} of ${this.buf.length})`);
    }
    const at = this.o;
    this.o += n;
    return at;
  }

  int8(): number {
    return this.buf.readInt8(this.need(1));
  }

  int16(): number {
    return this.buf.readInt16BE(this.need(2));
  }

  int32(): number {
    return this.buf.readInt32BE(this.need(4));
  }

  int64(): bigint {
    return this.buf.readBigInt64BE(this.need(8));
  }

  bool(): boolean {
    return this.int8() !== 0;
  }

  nullableString(): string | null {
    const n = this.int16();
    if (n < 0) return null;
    const at = this.need(n);
    return this.buf.toString('utf8', at, at + n);
  }

  string(): string {
    const s = this.nullableString();
    if (s === null) throw new CdpError(ErrorCodes.PROTOCOL, `Kafka response holds a null where a STRING is required (offset ${this.o - 2})`);
    return s;
  }

  nullableBytes(): Buffer | null {
    const n = this.int32();
    if (n < 0) return null;
    const at = this.need(n);
    return this.buf.subarray(at, at + n);
  }

  bytes(): Buffer {
    return this.nullableBytes() ?? Buffer.alloc(0);
  }

  array<T>(each: (r: Reader) => T): T[] {
    const n = this.int32();
    if (n < 0) return [];
    if (n > this.remaining) throw new CdpError(ErrorCodes.PROTOCOL, `Kafka response array count ${n} exceeds the bytes left (${this.remaining})`);
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(each(this));
    return out;
  }
}

/** One API version the engine speaks: its key and version, the body encoder and the response decoder. */
export interface Api<Req, Res> {
  readonly name: string;
  readonly apiKey: number;
  readonly version: number;
  encode(req: Req): Buffer;
  decode(r: Reader): Res;
}
