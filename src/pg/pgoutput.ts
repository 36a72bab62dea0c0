// pgoutput decoder: bytes in, messages out. No sockets, no state, no type conversion.
//
// Grammar: PostgreSQL 15 documentation, 55.9 "Logical Replication Message Formats"
// (https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html) for the payloads,
// and 55.4 "Streaming Replication Protocol" (protocol-replication.html) for the CopyData envelopes
// ('w' XLogData, 'k' Primary keepalive, 'r' Standby status update).
//
// We ask for protocol version 1 in text mode (see pluginOptions in replication-stream.ts), so:
// - no message carries the "Xid of the transaction (only present for streamed transactions)" field;
// - column values are the type's text output, kept as JS strings exactly as sent (DESIGN.md
//   section 3: text output is lossless for every type; conversion is the consumer's choice);
// - stream / two-phase messages are refused with a protocol error instead of being misread.
//
// Every parser takes one whole message (CopyData framing delivers whole messages) and checks
// every read against the end of the buffer, so a truncated or over-long message fails loudly
// with CdpError(PROTOCOL) instead of producing NaN or garbage.

import { CdpError, ErrorCodes } from '../errors.js';
import { PG_EPOCH_OFFSET_US, type Lsn } from '../util/lsn.js';

/** First byte of each pgoutput message (55.9), ASCII letter beside each. */
export const MessageTag = {
  Begin: 0x42, // 'B'
  Commit: 0x43, // 'C'
  Origin: 0x4f, // 'O'
  Relation: 0x52, // 'R'
  Type: 0x59, // 'Y'
  Insert: 0x49, // 'I'
  Update: 0x55, // 'U'
  Delete: 0x44, // 'D'
  Truncate: 0x54, // 'T'
  Message: 0x4d, // 'M'
  // Sent only with the `streaming` option (protocol >= 2) or `two_phase` (protocol >= 3). We never
  // ask for either; they are listed so that the error can say what arrived.
  StreamStart: 0x53, // 'S'
  StreamStop: 0x45, // 'E'
  StreamCommit: 0x63, // 'c'
  StreamAbort: 0x41, // 'A'
  BeginPrepare: 0x62, // 'b'
  Prepare: 0x50, // 'P'
  CommitPrepared: 0x4b, // 'K'
  RollbackPrepared: 0x72, // 'r'
  StreamPrepare: 0x70, // 'p'
} as const;

/** First byte of the CopyData messages of the replication protocol (55.4). */
export const CopyTag = {
  XLogData: 0x77, // 'w'
  Keepalive: 0x6b, // 'k'
  StandbyStatus: 0x72, // 'r'
} as const;

/** First byte of each column inside TupleData (55.9, "TupleData"). */
const ColumnKind = {
  Null: 0x6e, // 'n'
  UnchangedToast: 0x75, // 'u'
  Text: 0x74, // 't'
  Binary: 0x62, // 'b'
} as const;

/** Tuple-part markers inside Insert / Update / Delete. */
const TuplePart = {
  New: 0x4e, // 'N'
  Key: 0x4b, // 'K'
  Old: 0x4f, // 'O'
} as const;

// ---------------------------------------------------------------------------------------------
// Message types

/** Column values of one row in text output format. */
export interface Tuple {
  /** One entry per column: the text output, or null for SQL NULL and for unchanged TOAST values. */
  values: (string | null)[];
  /**
   * Indexes of columns whose value is an unchanged TOASTed value that the server did not send
   * ('u'). Their entry in `values` is null but they are NOT NULL: the row keeps its old value.
   */
  unchanged: number[];
}

export interface Begin {
  tag: 'begin';
  /** LSN of the commit record of this transaction (the "final LSN"). */
  finalLsn: Lsn;
  /** Microseconds since the Unix epoch. */
  commitTime: number;
  xid: number;
}

export interface Commit {
  tag: 'commit';
  /** Currently unused by the server; always 0. */
  flags: number;
  /** LSN of the commit record (equals Begin.finalLsn). */
  commitLsn: Lsn;
  /** End of the commit record: confirming this LSN means "this transaction is done". */
  endLsn: Lsn;
  /** Microseconds since the Unix epoch. */
  commitTime: number;
}

export interface Origin {
  tag: 'origin';
  /** LSN of the commit on the origin server. */
  lsn: Lsn;
  name: string;
}

export type ReplicaIdentity = 'd' | 'n' | 'f' | 'i';

export interface RelationColumn {
  /** 1 when the column is part of the replica identity key, else 0. */
  flags: number;
  name: string;
  typeOid: number;
  /** atttypmod, -1 when the type has none. */
  typmod: number;
}

export interface Relation {
  tag: 'relation';
  oid: number;
  /** Namespace. The server sends '' for pg_catalog; we report 'pg_catalog'. */
  schema: string;
  name: string;
  /** relreplident: d = default (primary key), n = nothing, f = full, i = index. */
  replicaIdentity: ReplicaIdentity;
  columns: RelationColumn[];
}

export interface Type {
  tag: 'type';
  oid: number;
  /** Namespace. The server sends '' for pg_catalog; we report 'pg_catalog'. */
  schema: string;
  name: string;
}

export interface Insert {
  tag: 'insert';
  relationOid: number;
  new: Tuple;
}

export interface Update {
  tag: 'update';
  relationOid: number;
  /**
   * 'K': `old` holds the old replica-identity key (sent only when the update changed it);
   * 'O': `old` holds the whole old row (REPLICA IDENTITY FULL); null: no old tuple was sent.
   */
  oldKind: 'K' | 'O' | null;
  old: Tuple | null;
  new: Tuple;
}

export interface Delete {
  tag: 'delete';
  relationOid: number;
  /** 'K': only the key columns are set (others are null); 'O': the whole old row. */
  oldKind: 'K' | 'O';
  old: Tuple;
}

export interface Truncate {
  tag: 'truncate';
  cascade: boolean;
  restartIdentity: boolean;
  relationOids: number[];
}

export interface Message {
  tag: 'message';
  /** True for pg_logical_emit_message(true, ...): delivered inside its transaction. */
  transactional: boolean;
  lsn: Lsn;
  prefix: string;
  /** A copy (messages are rare; the source buffer may be reused by the socket layer). */
  content: Buffer;
}

export type PgoutputMessage = Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | Message;

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

// ---------------------------------------------------------------------------------------------
// Reading primitives. A cursor over one whole message; every read checks the end.

class Cursor {
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

function protocolError(message: string, details: Record<string, unknown> = {}): CdpError {
  return new CdpError(ErrorCodes.PROTOCOL, message, { details });
}

function tagText(tag: number): string {
  return tag >= 0x20 && tag < 0x7f ? `'${String.fromCharCode(tag)}' (0x${tag.toString(16)})` : `0x${tag.toString(16)}`;
}

// ---------------------------------------------------------------------------------------------
// pgoutput messages (55.9). One parser per message type.

/**
 * Decodes one pgoutput message (the payload of an XLogData CopyData message), which runs from
 * `start` to the end of `buf`. Passing the whole XLogData with start = XLOGDATA_HEADER_SIZE decodes
 * its payload without creating a subarray. Strings are copies; nothing returned aliases `buf`.
 * Throws CdpError(PROTOCOL) for truncated, malformed or unsupported messages.
 */
export function decodePgoutput(buf: Buffer, start = 0): PgoutputMessage {
  if (start >= buf.length) throw protocolError('empty pgoutput message');
  const tag = buf[start]!;
  const at = start + 1;
  switch (tag) {
    case MessageTag.Begin:
      return parseBegin(new Cursor(buf, at, 'Begin'));
    case MessageTag.Commit:
      return parseCommit(new Cursor(buf, at, 'Commit'));
    case MessageTag.Origin:
      return parseOrigin(new Cursor(buf, at, 'Origin'));
    case MessageTag.Relation:
      return parseRelation(new Cursor(buf, at, 'Relation'));
    case MessageTag.Type:
      return parseType(new Cursor(buf, at, 'Type'));
    case MessageTag.Insert:
      return parseInsert(new Cursor(buf, at, 'Insert'));
    case MessageTag.Update:
      return parseUpdate(new Cursor(buf, at, 'Update'));
    case MessageTag.Delete:
      return parseDelete(new Cursor(buf, at, 'Delete'));
    case MessageTag.Truncate:
      return parseTruncate(new Cursor(buf, at, 'Truncate'));
    case MessageTag.Message:
      return parseMessage(new Cursor(buf, at, 'Message'));
    case MessageTag.StreamStart:
    case MessageTag.StreamStop:
    case MessageTag.StreamCommit:
    case MessageTag.StreamAbort:
    case MessageTag.StreamPrepare:
      throw protocolError(
        `pgoutput streaming message ${tagText(tag)} received, but streaming of in-progress transactions is not supported: start replication without the 'streaming' option`,
        { tag },
      );
    case MessageTag.BeginPrepare:
    case MessageTag.Prepare:
    case MessageTag.CommitPrepared:
    case MessageTag.RollbackPrepared:
      throw protocolError(
        `pgoutput two-phase message ${tagText(tag)} received, but two-phase decoding is not supported: use a slot created without TWO_PHASE and no 'two_phase' option`,
        { tag },
      );
    default:
      throw protocolError(`unknown pgoutput message tag ${tagText(tag)}; only protocol version 1 is supported`, { tag });
  }
}

/** Begin: Int64 final LSN, Int64 commit timestamp, Int32 xid. */
function parseBegin(c: Cursor): Begin {
  const finalLsn = c.lsn();
  const commitTime = c.timestamp();
  const xid = c.u32();
  c.done();
  return { tag: 'begin', finalLsn, commitTime, xid };
}

/** Commit: Int8 flags, Int64 commit LSN, Int64 end LSN, Int64 commit timestamp. */
function parseCommit(c: Cursor): Commit {
  const flags = c.u8();
  const commitLsn = c.lsn();
  const endLsn = c.lsn();
  const commitTime = c.timestamp();
  c.done();
  return { tag: 'commit', flags, commitLsn, endLsn, commitTime };
}

/** Origin: Int64 commit LSN on the origin, String name. */
function parseOrigin(c: Cursor): Origin {
  const lsn = c.lsn();
  const name = c.cstring();
  c.done();
  return { tag: 'origin', lsn, name };
}

/**
 * Relation: Int32 oid, String namespace ('' = pg_catalog), String name, Int8 replica identity,
 * Int16 column count, then per column: Int8 flags, String name, Int32 type oid, Int32 typmod.
 * Generated columns are not sent (55.9), so column i here is value i of every tuple.
 */
function parseRelation(c: Cursor): Relation {
  const oid = c.u32();
  const schema = c.cstring() || 'pg_catalog';
  const name = c.cstring();
  const ri = c.u8();
  if (ri !== 0x64 /* d */ && ri !== 0x6e /* n */ && ri !== 0x66 /* f */ && ri !== 0x69 /* i */) {
    throw protocolError(`pgoutput Relation ${schema}.${name}: unknown replica identity ${tagText(ri)}`);
  }
  const n = c.u16();
  const columns: RelationColumn[] = [];
  for (let i = 0; i < n; i++) {
    const flags = c.u8();
    const colName = c.cstring();
    const typeOid = c.u32();
    const typmod = c.i32();
    columns.push({ flags, name: colName, typeOid, typmod });
  }
  c.done();
  return { tag: 'relation', oid, schema, name, replicaIdentity: String.fromCharCode(ri) as ReplicaIdentity, columns };
}

/** Type: Int32 oid, String namespace ('' = pg_catalog), String name. */
function parseType(c: Cursor): Type {
  const oid = c.u32();
  const schema = c.cstring() || 'pg_catalog';
  const name = c.cstring();
  c.done();
  return { tag: 'type', oid, schema, name };
}

/** Insert: Int32 relation oid, Byte1 'N', TupleData. */
function parseInsert(c: Cursor): Insert {
  const relationOid = c.u32();
  const part = c.u8();
  if (part !== TuplePart.New) throw protocolError(`pgoutput Insert: expected 'N' before the new tuple, got ${tagText(part)}`);
  const tuple = parseTuple(c);
  c.done();
  return { tag: 'insert', relationOid, new: tuple };
}

/** Update: Int32 relation oid, optional ('K' | 'O') TupleData, then 'N' TupleData. */
function parseUpdate(c: Cursor): Update {
  const relationOid = c.u32();
  let part = c.u8();
  let oldKind: 'K' | 'O' | null = null;
  let old: Tuple | null = null;
  if (part === TuplePart.Key || part === TuplePart.Old) {
    oldKind = part === TuplePart.Key ? 'K' : 'O';
    old = parseTuple(c);
    part = c.u8();
  }
  if (part !== TuplePart.New) throw protocolError(`pgoutput Update: expected 'N' before the new tuple, got ${tagText(part)}`);
  const tuple = parseTuple(c);
  c.done();
  return { tag: 'update', relationOid, oldKind, old, new: tuple };
}

/** Delete: Int32 relation oid, 'K' | 'O', TupleData. */
function parseDelete(c: Cursor): Delete {
  const relationOid = c.u32();
  const part = c.u8();
  if (part !== TuplePart.Key && part !== TuplePart.Old) {
    throw protocolError(`pgoutput Delete: expected 'K' or 'O' before the old tuple, got ${tagText(part)}`);
  }
  const old = parseTuple(c);
  c.done();
  return { tag: 'delete', relationOid, oldKind: part === TuplePart.Key ? 'K' : 'O', old };
}

/** Truncate: Int32 relation count, Int8 options (1 = CASCADE, 2 = RESTART IDENTITY), Int32 oids. */
function parseTruncate(c: Cursor): Truncate {
  const n = c.u32();
  const options = c.u8();
  // Bound the count by the bytes present before allocating anything.
  c.need(n * 4);
  const relationOids: number[] = [];
  for (let i = 0; i < n; i++) relationOids.push(c.u32());
  c.done();
  return { tag: 'truncate', cascade: (options & 1) !== 0, restartIdentity: (options & 2) !== 0, relationOids };
}

/** Message: Int8 flags (1 = transactional), Int64 LSN, String prefix, Int32 length, Byte(n). */
function parseMessage(c: Cursor): Message {
  const flags = c.u8();
  const lsn = c.lsn();
  const prefix = c.cstring();
  const len = c.u32();
  c.need(len);
  const content = Buffer.from(c.buf.subarray(c.pos, c.pos + len));
  c.pos += len;
  c.done();
  return { tag: 'message', transactional: (flags & 1) !== 0, lsn, prefix, content };
}

/**
 * TupleData: Int16 column count, then per column Byte1 kind: 'n' NULL, 'u' unchanged TOASTed value
 * (not sent), 't' Int32 length + text bytes, 'b' Int32 length + binary bytes.
 * This is the hot path: one string per text column, nothing else allocated per column.
 */
function parseTuple(c: Cursor): Tuple {
  const n = c.u16();
  const buf = c.buf;
  const end = c.end;
  const values: (string | null)[] = [];
  const unchanged: number[] = [];
  let p = c.pos;
  for (let i = 0; i < n; i++) {
    if (p >= end) {
      c.pos = p;
      c.need(1);
    }
    const kind = buf[p++]!;
    if (kind === ColumnKind.Text) {
      if (p + 4 > end) {
        c.pos = p;
        c.need(4);
      }
      const len = ((buf[p]! << 24) | (buf[p + 1]! << 16) | (buf[p + 2]! << 8) | buf[p + 3]!) >>> 0;
      p += 4;
      if (p + len > end) {
        c.pos = p;
        c.need(len);
      }
      values.push(buf.toString('utf8', p, p + len));
      p += len;
    } else if (kind === ColumnKind.Null) {
      values.push(null);
    } else if (kind === ColumnKind.UnchangedToast) {
      values.push(null);
      unchanged.push(i);
    } else if (kind === ColumnKind.Binary) {
      throw protocolError(
        `pgoutput ${c.what}: column ${i} is in binary format, but only text format is supported: start replication without the 'binary' option`,
      );
    } else {
      throw protocolError(`pgoutput ${c.what}: unknown TupleData column kind ${tagText(kind)} for column ${i}`);
    }
  }
  c.pos = p;
  return { values, unchanged };
}

// ---------------------------------------------------------------------------------------------
// CopyData envelopes of the streaming replication protocol (55.4).

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
