// Reading primitives of the pgoutput decoder (pgoutput.ts, pgoutput-tuple.ts, copy-envelopes.ts).
// A cursor over one whole message; every read checks the end, so a truncated or over-long message
// fails loudly with CdpError(PROTOCOL) instead of producing NaN or garbage.

import { CdpError, ErrorCodes } from '../errors.js';
import { PG_EPOCH_OFFSET_US, type Lsn } from '../util/lsn.js';

export class Cursor {
  pos: number;
  readonly end: number;
  constructor(
    readonly buf: Buffer,
    pos: number,
    readonly what: string,
  ) {
    this.pos = pos;
    this.end = buf.length;
  }

  need(n: number): void {
    if (this.pos + n > this.end) {
      throw protocolError(`truncated pgoutput ${this.what} message: needs ${this.pos + n - this.end} more byte(s) at offset ${this.pos} of ${this.end}`);
    }
  }

  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }

  u16(): number {
    this.need(2);
    const b = this.buf;
    const p = this.pos;
    this.pos = p + 2;
    return (b[p]! << 8) | b[p + 1]!;
  }

  u32(): number {
    this.need(4);
    const b = this.buf;
    const p = this.pos;
    this.pos = p + 4;
    return ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
  }

  i32(): number {
    this.need(4);
    const b = this.buf;
    const p = this.pos;
    this.pos = p + 4;
    return (b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!;
  }

  /** XLogRecPtr: unsigned 64-bit, read as two halves into a JS number (exact below 2^53). */
  lsn(): Lsn {
    const hi = this.u32();
    const lo = this.u32();
    if (hi >= 0x200000) throw protocolError(`LSN ${hi.toString(16)}/${lo.toString(16)} in pgoutput ${this.what} is beyond 2^53`);
    return hi * 0x1_0000_0000 + lo;
  }

  /** TimestampTz (microseconds since 2000-01-01) as microseconds since the Unix epoch. */
  timestamp(): number {
    this.need(8);
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return Number(v) + PG_EPOCH_OFFSET_US;
  }

  /** NUL-terminated String (55.7 "Message Data Types"). */
  cstring(): string {
    const nul = this.buf.indexOf(0, this.pos);
    if (nul < 0) throw protocolError(`truncated pgoutput ${this.what} message: string at offset ${this.pos} has no terminating NUL`);
    const s = this.buf.toString('utf8', this.pos, nul);
    this.pos = nul + 1;
    return s;
  }

  done(): void {
    if (this.pos !== this.end) {
      throw protocolError(`pgoutput ${this.what} message has ${this.end - this.pos} unexpected trailing byte(s) at offset ${this.pos}`);
    }
  }
}

export function protocolError(message: string, details: Record<string, unknown> = {}): CdpError {
  return new CdpError(ErrorCodes.PROTOCOL, message, { details });
}

export function tagText(tag: number): string {
  return tag >= 0x20 && tag < 0x7f ? `'${String.fromCharCode(tag)}' (0x${tag.toString(16)})` : `0x${tag.toString(16)}`;
}
