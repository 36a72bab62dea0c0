// Avro binary encoding primitives (Avro 1.11 specification, "Binary Encoding"), the one copy the
// engine has: int and long are zig-zag varints; a string is a long byte count then UTF-8; a union
// is the long branch index then the value; an array is blocks of (long count [, long byte size
// when the count is negative]) ended by a 0 count; a record is its fields in order.
//
// Longs are exact for |n| <= 2^53 (LSNs, xids, microsecond times): arithmetic, not 32-bit bit
// operations, above 2^28.

type Utf8Buffer = Buffer & { utf8Slice(start: number, end: number): string };

/** The zig-zag varint of one long, as its own Buffer (headers, tests). */
export function writeLong(n: number): Buffer {
  const w = new Writer(10);
  w.long(n);
  return w.take();
}

/** Reads a zig-zag varint at `pos`: [value, next position]. */
export function readLong(buf: Buffer, pos: number): [value: number, next: number] {
  let z = 0;
  let mul = 1;
  let b: number;
  // A negative position would read undefined bytes as 0 (a silent value); every caller's position is
  // checked, this is the last line.
  if (pos < 0) throw new RangeError(`varint at negative position ${pos}`);
  do {
    if (pos >= buf.length) throw new RangeError('truncated varint');
    b = buf[pos++]!;
    z += (b & 0x7f) * mul;
    mul *= 0x80;
    if (mul > 2 ** 70) throw new RangeError('varint too long');
  } while (b & 0x80);
  return [z % 2 === 0 ? z / 2 : -(z + 1) / 2, pos];
}

/** A growing output buffer. `take()` copies the bytes out; `reset()` reuses the memory. */
export class Writer {
  buf: Buffer;
  pos = 0;
  constructor(initial = 256) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  byte(b: number): void {
    this.ensure(1);
    this.buf[this.pos++] = b;
  }

  long(n: number): void {
    this.ensure(10);
    let z = n >= 0 ? n * 2 : -n * 2 - 1;
    const b = this.buf;
    while (z >= 0x80) {
      b[this.pos++] = (z % 0x80) | 0x80;
      z = Math.floor(z / 0x80);
    }
    b[this.pos++] = z;
  }

  string(s: string): void {
    // Up to 21 UTF-16 units are at most 63 UTF-8 bytes: a one-byte length, filled in afterwards.
    if (s.length < 22) {
      this.ensure(1 + s.length * 3);
      const at = this.pos++;
      const n = this.buf.write(s, this.pos, 'utf8');
      this.buf[at] = n * 2;
      this.pos += n;
      return;
    }
    const n = Buffer.byteLength(s, 'utf8');
    this.long(n);
    this.ensure(n);
    this.pos += this.buf.write(s, this.pos, 'utf8');
  }

  nullableString(s: string | null): void {
    if (s === null) this.byte(0);
    else {
      this.byte(2);
      this.string(s);
    }
  }

  /** Bytes already in Avro binary form. */
  raw(src: Buffer, start = 0, end = src.length): void {
    const n = end - start;
    this.ensure(n);
    if (n <= 48) {
      // Short runs (names, values, one-byte nulls) are most of what the batch builder copies; a
      // byte loop costs less than a call into Buffer.copy for them.
      const b = this.buf;
      let o = this.pos;
      for (let i = start; i < end; i++) b[o++] = src[i]!;
      this.pos = o;
      return;
    }
    src.copy(this.buf, this.pos, start, end);
    this.pos += n;
  }

  take(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.pos));
  }

  reset(): void {
    this.pos = 0;
  }
}

/** A cursor over Avro binary data; every read checks that it stays inside the buffer. */
export class Reader {
  pos: number;
  readonly buf: Utf8Buffer;
  constructor(buf: Buffer, pos = 0) {
    this.buf = buf as Utf8Buffer;
    this.pos = pos;
  }

  long(): number {
    const b = this.buf;
    if (this.pos >= b.length) throw new RangeError('truncated long');
    let byte = b[this.pos++]!;
    let n = byte & 0x7f;
    if (byte & 0x80) {
      let shift = 7;
      let mul = 128;
      do {
        if (this.pos >= b.length) throw new RangeError('truncated long');
        byte = b[this.pos++]!;
        if (shift < 28) n |= (byte & 0x7f) << shift;
        else n += (byte & 0x7f) * mul;
        shift += 7;
        mul *= 128;
        if (shift > 70) throw new RangeError('long too long');
      } while (byte & 0x80);
      if (shift > 28) return n % 2 === 0 ? n / 2 : -(n + 1) / 2;
    }
    return (n >>> 1) ^ -(n & 1);
  }

  /** Skips `len` bytes, checking they exist; returns where they start. */
  skip(len: number): number {
    const start = this.pos;
    if (len < 0 || start + len > this.buf.length) throw new RangeError('truncated bytes');
    this.pos = start + len;
    return start;
  }

  string(): string {
    const start = this.skip(this.long());
    return this.buf.utf8Slice(start, this.pos);
  }

  skipString(): void {
    this.skip(this.long());
  }

  nullableString(): string | null {
    const branch = this.long();
    if (branch === 0) return null;
    if (branch !== 1) throw new RangeError(`bad union branch ${branch}`);
    return this.string();
  }

  /** The item count of an array's next block, 0 at the end (a negative count is followed by a byte size we do not need). */
  blockCount(): number {
    const n = this.long();
    if (n >= 0) return n;
    this.long();
    return -n;
  }
}
