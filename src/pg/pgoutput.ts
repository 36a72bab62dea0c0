// pgoutput decoder: bytes in, messages out. No sockets, no state, no type conversion.
//
// Grammar: PostgreSQL 15 documentation, 55.9 "Logical Replication Message Formats"
// (https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html) for the payloads,
// and 55.4 "Streaming Replication Protocol" (protocol-replication.html) for the CopyData envelopes
// ('w' XLogData, 'k' Primary keepalive, 'r' Standby status update).
//
// We ask for protocol version 1 in text mode (see pluginOptions in replication-command.ts), so:
// - no message carries the "Xid of the transaction (only present for streamed transactions)" field;
// - column values are the type's text output, kept as JS strings exactly as sent (DESIGN.md
//   section 3: text output is lossless for every type; conversion is the consumer's choice);
// - stream / two-phase messages are refused with a protocol error instead of being misread.
//
// Every parser takes one whole message (CopyData framing delivers whole messages) and checks
// every read against the end of the buffer, so a truncated or over-long message fails loudly
// with CdpError(PROTOCOL) instead of producing NaN or garbage.

//
// This module dispatches on the message tag and parses each message; the pieces it uses are the
// bounds-checked cursor (pgoutput-cursor.ts) and TupleData (pgoutput-tuple.ts). The message types
// (pgoutput-messages.ts) and the CopyData envelopes around the messages (copy-envelopes.ts) are
// re-exported, so that importers keep one module for the whole decoder.

import { Cursor, protocolError, tagText } from './pgoutput-cursor.js';
import type {
  Begin,
  Commit,
  Delete,
  Insert,
  Message,
  Origin,
  PgoutputMessage,
  ReplicaIdentity,
  Relation,
  RelationColumn,
  Truncate,
  Tuple,
  Type,
  Update,
} from './pgoutput-messages.js';
import { parseTuple, TuplePart } from './pgoutput-tuple.js';

export type * from './pgoutput-messages.js';
export { CopyTag, encodeStandbyStatus, parseKeepalive, parseXLogData, XLOGDATA_HEADER_SIZE, type Keepalive, type XLogData } from './copy-envelopes.js';

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
