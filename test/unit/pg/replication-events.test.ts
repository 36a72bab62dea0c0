import { describe, expect, it } from 'vitest';
import { CdpError, ErrorCodes } from '../../../src/errors.js';
import { decodeCopyData } from '../../../src/pg/replication-events.js';
import { PG_EPOCH_OFFSET_US } from '../../../src/util/lsn.js';

// CopyData from the server as stream events (55.4), without a connection: this was the socket
// handler of ReplicationStream before replication-events.ts.

function int64(v: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(v));
  return b;
}

const TIME = int64(1_714_979_289_123_456 - PG_EPOCH_OFFSET_US);
const WAL_START = 0x16 * 2 ** 32 + 0xb374d848;
const WAL_END = 0x17 * 2 ** 32 + 0x10;

// Begin: final LSN, commit time, xid.
const BEGIN = Buffer.concat([Buffer.from('B'), int64(WAL_START), TIME, Buffer.from([0, 0, 0x30, 0x39])]);

function protocolError(fn: () => unknown, pattern: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CdpError);
    expect((err as CdpError).code).toBe(ErrorCodes.PROTOCOL);
    expect((err as Error).message).toMatch(pattern);
    return;
  }
  throw new Error('expected a protocol error');
}

describe('decodeCopyData', () => {
  it('reads XLogData walStart and walEnd in place and decodes its pgoutput message', () => {
    const buf = Buffer.concat([Buffer.from('w'), int64(WAL_START), int64(WAL_END), TIME, BEGIN]);
    expect(decodeCopyData(buf)).toEqual({
      kind: 'data',
      walStart: WAL_START,
      walEnd: WAL_END,
      message: { tag: 'begin', finalLsn: WAL_START, commitTime: 1_714_979_289_123_456, xid: 12345 },
    });
  });

  it('reads a primary keepalive with and without a reply request', () => {
    for (const reply of [0, 1]) {
      const buf = Buffer.concat([Buffer.from('k'), int64(WAL_END), TIME, Buffer.from([reply])]);
      expect(decodeCopyData(buf)).toEqual({ kind: 'keepalive', walEnd: WAL_END, replyRequested: reply === 1 });
    }
  });

  it('refuses what is not XLogData or a keepalive, and XLogData without a message', () => {
    protocolError(() => decodeCopyData(Buffer.alloc(0)), /unexpected CopyData message type \(empty\)/);
    protocolError(() => decodeCopyData(Buffer.from('r')), /unexpected CopyData message type 0x72/);
    protocolError(() => decodeCopyData(Buffer.concat([Buffer.from('w'), int64(1), int64(2), TIME])), /XLogData of 25 bytes is too short/);
    protocolError(() => decodeCopyData(Buffer.concat([Buffer.from('k'), int64(1)])), /truncated pgoutput keepalive/);
  });
});
