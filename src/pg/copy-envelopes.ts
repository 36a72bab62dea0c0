// CopyData envelopes of the streaming replication protocol (PostgreSQL 15 docs, 55.4 "Streaming
// Replication Protocol"): 'w' XLogData and 'k' Primary keepalive from the server, 'r' Standby
// status update from us. The pgoutput message inside an XLogData is decoded by pgoutput.ts.

import { CdpError, ErrorCodes } from '../errors.js';
import { PG_EPOCH_OFFSET_US, type Lsn } from '../util/lsn.js';
import { Cursor, protocolError, tagText } from './pgoutput-cursor.js';

/** First byte of the CopyData messages of the replication protocol (55.4). */
export const CopyTag = {
  XLogData: 0x77, // 'w'
  Keepalive: 0x6b, // 'k'
  StandbyStatus: 0x72, // 'r'
} as const;

export interface XLogData {
  /** Starting point of the WAL data in this message. */
  walStart: Lsn;
  /** Current end of WAL on the server. */
  walEnd: Lsn;
  /** Server clock at transmission, microseconds since the Unix epoch. */
  serverTime: number;
  /** The pgoutput message: a view into the input buffer, not a copy. */
  payload: Buffer;
}

export interface Keepalive {
  walEnd: Lsn;
  /** Microseconds since the Unix epoch. */
  serverTime: number;
  /** The server asks for a standby status update now, or it will soon time the connection out. */
  replyRequested: boolean;
}

/** Bytes before the payload of an XLogData message: Byte1('w'), Int64 x 3. */
export const XLOGDATA_HEADER_SIZE = 25;

/** XLogData ('w'): Int64 walStart, Int64 walEnd, Int64 server time, Byte(n) payload (no copy). */
export function parseXLogData(buf: Buffer): XLogData {
  const c = new Cursor(buf, 0, 'XLogData');
  const tag = c.u8();
  if (tag !== CopyTag.XLogData) throw protocolError(`expected XLogData ('w'), got ${tagText(tag)}`);
  const walStart = c.lsn();
  const walEnd = c.lsn();
  const serverTime = c.timestamp();
  return { walStart, walEnd, serverTime, payload: buf.subarray(c.pos) };
}

/** Primary keepalive ('k'): Int64 walEnd, Int64 server time, Byte1 reply requested. */
export function parseKeepalive(buf: Buffer): Keepalive {
  const c = new Cursor(buf, 0, 'keepalive');
  const tag = c.u8();
  if (tag !== CopyTag.Keepalive) throw protocolError(`expected primary keepalive ('k'), got ${tagText(tag)}`);
  const walEnd = c.lsn();
  const serverTime = c.timestamp();
  const replyRequested = c.u8() === 1;
  c.done();
  return { walEnd, serverTime, replyRequested };
}

/**
 * Standby status update ('r'): Int64 written, Int64 flushed, Int64 applied ("last WAL byte + 1"),
 * Int64 client time (microseconds since 2000-01-01), Byte1 reply requested.
 * For a logical slot the flushed position becomes the slot's confirmed_flush_lsn (55.4; walsender
 * ProcessStandbyReplyMessage -> LogicalConfirmReceivedLocation); 0 (InvalidXLogRecPtr) is ignored.
 * @param clientTimeUs microseconds since the Unix epoch; defaults to now.
 */
export function encodeStandbyStatus(write: Lsn, flush: Lsn, apply: Lsn, replyRequested: boolean, clientTimeUs: number = Date.now() * 1000): Buffer {
  const out = Buffer.allocUnsafe(34);
  out[0] = CopyTag.StandbyStatus;
  writeU64(out, 1, write);
  writeU64(out, 9, flush);
  writeU64(out, 17, apply);
  out.writeBigInt64BE(BigInt(Math.round(clientTimeUs - PG_EPOCH_OFFSET_US)), 25);
  out[33] = replyRequested ? 1 : 0;
  return out;
}

function writeU64(out: Buffer, at: number, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new CdpError(ErrorCodes.INTERNAL, `not an LSN: ${v}`);
  const hi = Math.floor(v / 0x1_0000_0000);
  out.writeUInt32BE(hi, at);
  out.writeUInt32BE(v - hi * 0x1_0000_0000, at + 4);
}
