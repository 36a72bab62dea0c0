// The events of a replication stream: each CopyData message of COPY BOTH (PostgreSQL 15 docs, 55.4)
// decoded whole, XLogData with its pgoutput message (pgoutput.ts) or a primary keepalive.

import { CdpError, ErrorCodes } from '../errors.js';
import { CopyTag, decodePgoutput, parseKeepalive, XLOGDATA_HEADER_SIZE, type PgoutputMessage } from './pgoutput.js';

export type StreamEvent =
  { kind: 'data'; walStart: number; walEnd: number; message: PgoutputMessage } | { kind: 'keepalive'; walEnd: number; replyRequested: boolean };

/**
 * One CopyData message from the server as an event. Throws CdpError(PROTOCOL) for a message that
 * is neither XLogData nor a keepalive, is truncated, or holds a pgoutput message we cannot decode.
 */
export function decodeCopyData(buf: Buffer): StreamEvent {
  const tag = buf[0];
  if (tag === CopyTag.XLogData) {
    if (buf.length < XLOGDATA_HEADER_SIZE + 1) throw new CdpError(ErrorCodes.PROTOCOL, `XLogData of ${buf.length} bytes is too short`);
    // Int64 walStart, Int64 walEnd (55.4), read in place: no envelope object, no subarray.
    const walStart = buf.readUInt32BE(1) * 0x1_0000_0000 + buf.readUInt32BE(5);
    const walEnd = buf.readUInt32BE(9) * 0x1_0000_0000 + buf.readUInt32BE(13);
    const message = decodePgoutput(buf, XLOGDATA_HEADER_SIZE);
    return { kind: 'data', walStart, walEnd, message };
  }
  if (tag === CopyTag.Keepalive) {
    const k = parseKeepalive(buf);
    return { kind: 'keepalive', walEnd: k.walEnd, replyRequested: k.replyRequested };
  }
  throw new CdpError(
    ErrorCodes.PROTOCOL,
    `unexpected CopyData message type ${tag === undefined ? '(empty)' : `0x${tag.toString(16)}`} on a replication connection`,
  );
}
