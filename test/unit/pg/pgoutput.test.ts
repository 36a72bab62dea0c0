import { PassThrough } from 'node:stream';
import { parse as parsePgProtocol } from 'pg-protocol';
import { describe, expect, it } from 'vitest';
import { CdpError, ErrorCodes } from '../../../src/errors.js';
import { decodePgoutput, encodeStandbyStatus, parseKeepalive, parseXLogData, type PgoutputMessage } from '../../../src/pg/pgoutput.js';
import { PG_EPOCH_OFFSET_US } from '../../../src/util/lsn.js';

// Hand-built fixtures, field by field, following PostgreSQL 15 docs 55.9 (Logical Replication
// Message Formats) and 55.4 (Streaming Replication Protocol). The helpers below only concatenate
// bytes; every field is spelled out in the fixture itself.

const u8 = (v: number) => Buffer.from([v & 0xff]);
const u16 = (v: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
};
const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
};
const i32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(v);
  return b;
};
/** Int64 from two hex halves, as Postgres prints LSNs ("16/B374D848"). */
const lsn64 = (hi: number, lo: number) => Buffer.concat([u32(hi), u32(lo)]);
const i64 = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(v);
  return b;
};
const cstr = (s: string) => Buffer.concat([Buffer.from(s, 'utf8'), u8(0)]);
const ch = (c: string) => Buffer.from(c, 'latin1');
const text = (s: string) => {
  const v = Buffer.from(s, 'utf8');
  return Buffer.concat([ch('t'), u32(v.length), v]);
};
const bytes = (...parts: Buffer[]) => Buffer.concat(parts);

// 2024-05-06T07:08:09.123456Z in microseconds since 2000-01-01.
const UNIX_US = 1_714_979_289_123_456;
const PG_US = BigInt(UNIX_US - PG_EPOCH_OFFSET_US);

const LSN_16_B374D848 = 0x16 * 2 ** 32 + 0xb374d848;

const fixtures: Record<string, { buf: Buffer; msg: PgoutputMessage }> = {
  begin: {
    buf: bytes(ch('B'), lsn64(0x16, 0xb374d848), i64(PG_US), u32(0xfffffff0)),
    msg: { tag: 'begin', finalLsn: LSN_16_B374D848, commitTime: UNIX_US, xid: 0xfffffff0 },
  },
  commit: {
    buf: bytes(ch('C'), u8(0), lsn64(0x16, 0xb374d848), lsn64(0x16, 0xb374d878), i64(PG_US)),
    msg: { tag: 'commit', flags: 0, commitLsn: LSN_16_B374D848, endLsn: LSN_16_B374D848 + 0x30, commitTime: UNIX_US },
  },
  origin: {
    buf: bytes(ch('O'), lsn64(0, 0x1000), cstr('pg_16384')),
    msg: { tag: 'origin', lsn: 0x1000, name: 'pg_16384' },
  },
  relation: {
    buf: bytes(
      ch('R'),
      u32(16385),
      cstr('public'),
      cstr('accounts'),
      ch('d'),
      u16(3),
      bytes(u8(1), cstr('id'), u32(20), i32(-1)),
      bytes(u8(0), cstr('naïve'), u32(1043), i32(68)),
      bytes(u8(0), cstr('amount'), u32(1700), i32(0x000a0006)),
    ),
    msg: {
      tag: 'relation',
      oid: 16385,
      schema: 'public',
      name: 'accounts',
      replicaIdentity: 'd',
      columns: [
        { flags: 1, name: 'id', typeOid: 20, typmod: -1 },
        { flags: 0, name: 'naïve', typeOid: 1043, typmod: 68 },
        { flags: 0, name: 'amount', typeOid: 1700, typmod: 0x000a0006 },
      ],
    },
  },
  relationFullNoColumns: {
    buf: bytes(ch('R'), u32(0xfffffffe), cstr(''), cstr('t'), ch('f'), u16(0)),
    msg: { tag: 'relation', oid: 0xfffffffe, schema: 'pg_catalog', name: 't', replicaIdentity: 'f', columns: [] },
  },
  type: {
    buf: bytes(ch('Y'), u32(16400), cstr('app'), cstr('mood')),
    msg: { tag: 'type', oid: 16400, schema: 'app', name: 'mood' },
  },
  insert: {
    // NULL, empty string, unchanged TOAST, and UTF-8 of 1, 2, 3 and 4 bytes (BMP and plane 1/2).
    buf: bytes(ch('I'), u32(16385), ch('N'), u16(6), text('42'), ch('n'), text(''), ch('u'), text('é € 中文 𝄞 😀 𠜎'), text('a\tb\nc\\d')),
    msg: {
      tag: 'insert',
      relationOid: 16385,
      new: { values: ['42', null, '', null, 'é € 中文 𝄞 😀 𠜎', 'a\tb\nc\\d'], unchanged: [3] },
    },
  },
  updateNoOld: {
    buf: bytes(ch('U'), u32(16385), ch('N'), u16(3), text('1'), ch('u'), ch('u')),
    msg: { tag: 'update', relationOid: 16385, oldKind: null, old: null, new: { values: ['1', null, null], unchanged: [1, 2] } },
  },
  updateKey: {
    // The key changed: old key 'K' (non-key columns are NULL in a key tuple), then the new row.
    buf: bytes(ch('U'), u32(16385), ch('K'), u16(2), text('1'), ch('n'), ch('N'), u16(2), text('2'), text('x')),
    msg: {
      tag: 'update',
      relationOid: 16385,
      oldKind: 'K',
      old: { values: ['1', null], unchanged: [] },
      new: { values: ['2', 'x'], unchanged: [] },
    },
  },
  updateOld: {
    // REPLICA IDENTITY FULL: the whole old row 'O'.
    buf: bytes(ch('U'), u32(16385), ch('O'), u16(2), text('1'), text('old'), ch('N'), u16(2), text('1'), text('new')),
    msg: {
      tag: 'update',
      relationOid: 16385,
      oldKind: 'O',
      old: { values: ['1', 'old'], unchanged: [] },
      new: { values: ['1', 'new'], unchanged: [] },
    },
  },
  deleteKey: {
    buf: bytes(ch('D'), u32(16385), ch('K'), u16(3), text('7'), ch('n'), ch('n')),
    msg: { tag: 'delete', relationOid: 16385, oldKind: 'K', old: { values: ['7', null, null], unchanged: [] } },
  },
  deleteOld: {
    buf: bytes(ch('D'), u32(16385), ch('O'), u16(3), text('7'), text(''), ch('n')),
    msg: { tag: 'delete', relationOid: 16385, oldKind: 'O', old: { values: ['7', '', null], unchanged: [] } },
  },
  truncatePlain: {
    buf: bytes(ch('T'), u32(1), u8(0), u32(16385)),
    msg: { tag: 'truncate', cascade: false, restartIdentity: false, relationOids: [16385] },
  },
  truncateCascade: {
    buf: bytes(ch('T'), u32(2), u8(1), u32(16385), u32(16390)),
    msg: { tag: 'truncate', cascade: true, restartIdentity: false, relationOids: [16385, 16390] },
  },
  truncateRestart: {
    buf: bytes(ch('T'), u32(1), u8(2), u32(16385)),
    msg: { tag: 'truncate', cascade: false, restartIdentity: true, relationOids: [16385] },
  },
  truncateBoth: {
    buf: bytes(ch('T'), u32(3), u8(3), u32(1), u32(2), u32(0xffffffff)),
    msg: { tag: 'truncate', cascade: true, restartIdentity: true, relationOids: [1, 2, 0xffffffff] },
  },
  messageTransactional: {
    buf: bytes(ch('M'), u8(1), lsn64(0, 0x1a2b3c), cstr('cdp.test'), u32(5), Buffer.from('hello')),
    msg: { tag: 'message', transactional: true, lsn: 0x1a2b3c, prefix: 'cdp.test', content: Buffer.from('hello') },
  },
  messageNonTransactionalEmpty: {
    buf: bytes(ch('M'), u8(0), lsn64(1, 0), cstr('cdp.ddl'), u32(0)),
    msg: { tag: 'message', transactional: false, lsn: 2 ** 32, prefix: 'cdp.ddl', content: Buffer.alloc(0) },
  },
};

function expectProtocolError(fn: () => unknown, pattern: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected a CdpError').toBeInstanceOf(CdpError);
  expect((caught as CdpError).code).toBe(ErrorCodes.PROTOCOL);
  expect((caught as CdpError).message).toMatch(pattern);
}

describe('decodePgoutput', () => {
  for (const [name, { buf, msg }] of Object.entries(fixtures)) {
    it(`decodes ${name}`, () => {
      expect(decodePgoutput(buf)).toEqual(msg);
    });
  }

  it('keeps NULL, empty string and unchanged TOAST distinct', () => {
    const m = decodePgoutput(fixtures.insert!.buf);
    if (m.tag !== 'insert') throw new Error('not an insert');
    expect(m.new.values[1]).toBeNull();
    expect(m.new.unchanged).not.toContain(1);
    expect(m.new.values[2]).toBe('');
    expect(m.new.values[3]).toBeNull();
    expect(m.new.unchanged).toEqual([3]);
  });

  it('decodes text values at any offset of a larger buffer (payload is a subarray)', () => {
    const { buf, msg } = fixtures.insert!;
    const big = Buffer.concat([Buffer.from('garbage-before'), buf, Buffer.from('garbage-after')]);
    expect(decodePgoutput(big.subarray(14, 14 + buf.length))).toEqual(msg);
  });

  it('copies Message content so that a reused source buffer cannot change it', () => {
    const buf = Buffer.from(fixtures.messageTransactional!.buf);
    const m = decodePgoutput(buf);
    buf.fill(0);
    if (m.tag !== 'message') throw new Error('not a message');
    expect(m.content.toString()).toBe('hello');
  });

  it('decodes a 1 MB text value', () => {
    const big = 'x'.repeat(1 << 20) + 'é';
    const m = decodePgoutput(bytes(ch('I'), u32(1), ch('N'), u16(1), text(big)));
    expect(m).toEqual({ tag: 'insert', relationOid: 1, new: { values: [big], unchanged: [] } });
  });

  it('throws a clear error for every truncation of every fixture', () => {
    for (const [name, { buf }] of Object.entries(fixtures)) {
      for (let cut = 0; cut < buf.length; cut++) {
        const part = Buffer.from(buf.subarray(0, cut)); // a copy: no bytes beyond `cut` to peek at
        let caught: unknown;
        try {
          decodePgoutput(part);
        } catch (err) {
          caught = err;
        }
        expect(caught, `${name} cut at ${cut} must throw`).toBeInstanceOf(CdpError);
        expect((caught as CdpError).code).toBe(ErrorCodes.PROTOCOL);
        expect((caught as CdpError).message, `${name} cut at ${cut}`).toMatch(cut === 0 ? /empty pgoutput message/ : /truncated pgoutput/);
      }
    }
  });

  it('refuses trailing bytes', () => {
    expectProtocolError(() => decodePgoutput(bytes(fixtures.begin!.buf, u8(0))), /1 unexpected trailing byte/);
    expectProtocolError(() => decodePgoutput(bytes(fixtures.insert!.buf, u8(0x6e))), /trailing/);
  });

  it('refuses binary-format columns', () => {
    const buf = bytes(ch('I'), u32(1), ch('N'), u16(2), text('1'), ch('b'), u32(4), i32(7));
    expectProtocolError(() => decodePgoutput(buf), /column 1 is in binary format.*'binary' option/);
  });

  it('refuses an unknown column kind', () => {
    expectProtocolError(() => decodePgoutput(bytes(ch('I'), u32(1), ch('N'), u16(1), ch('x'))), /unknown TupleData column kind 'x'/);
  });

  it('refuses bad tuple markers and replica identities', () => {
    expectProtocolError(() => decodePgoutput(bytes(ch('I'), u32(1), ch('K'), u16(0))), /Insert: expected 'N'/);
    expectProtocolError(() => decodePgoutput(bytes(ch('U'), u32(1), ch('X'), u16(0))), /Update: expected 'N'/);
    expectProtocolError(() => decodePgoutput(bytes(ch('U'), u32(1), ch('K'), u16(0), ch('K'), u16(0))), /Update: expected 'N'/);
    expectProtocolError(() => decodePgoutput(bytes(ch('D'), u32(1), ch('N'), u16(0))), /Delete: expected 'K' or 'O'/);
    expectProtocolError(() => decodePgoutput(bytes(ch('R'), u32(1), cstr('s'), cstr('t'), ch('x'), u16(0))), /unknown replica identity 'x'/);
  });

  it('refuses streaming, two-phase and unknown tags with a clear message', () => {
    for (const t of ['S', 'E', 'c', 'A', 'p']) {
      expectProtocolError(() => decodePgoutput(bytes(ch(t), u32(1))), /streaming .* not supported/);
    }
    for (const t of ['b', 'P', 'K', 'r']) {
      expectProtocolError(() => decodePgoutput(bytes(ch(t), u32(1))), /two-phase .* not supported/);
    }
    expectProtocolError(() => decodePgoutput(bytes(ch('Z'), u32(1))), /unknown pgoutput message tag 'Z' \(0x5a\)/);
    expectProtocolError(() => decodePgoutput(Buffer.from([0x01])), /unknown pgoutput message tag 0x1/);
  });

  it('refuses LSNs beyond 2^53', () => {
    expectProtocolError(() => decodePgoutput(bytes(ch('B'), lsn64(0x200000, 0), i64(0n), u32(1))), /beyond 2\^53/);
  });
});

describe('replication CopyData envelopes', () => {
  const xlog = bytes(ch('w'), lsn64(0x16, 0xb374d848), lsn64(0x17, 0), i64(PG_US), fixtures.begin!.buf);
  const keepalive = bytes(ch('k'), lsn64(0x17, 0x10), i64(PG_US), u8(1));

  it('parses XLogData without copying the payload', () => {
    const x = parseXLogData(xlog);
    expect(x.walStart).toBe(LSN_16_B374D848);
    expect(x.walEnd).toBe(0x17 * 2 ** 32);
    expect(x.serverTime).toBe(UNIX_US);
    expect(x.payload.buffer).toBe(xlog.buffer);
    expect(x.payload.byteOffset).toBe(xlog.byteOffset + 25);
    expect(decodePgoutput(x.payload)).toEqual(fixtures.begin!.msg);
  });

  it('parses keepalives, with and without reply requested', () => {
    expect(parseKeepalive(keepalive)).toEqual({ walEnd: 0x17 * 2 ** 32 + 0x10, serverTime: UNIX_US, replyRequested: true });
    const noReply = Buffer.from(keepalive);
    noReply[17] = 0;
    expect(parseKeepalive(noReply).replyRequested).toBe(false);
  });

  it('throws on truncated envelopes and wrong tags', () => {
    for (let cut = 0; cut < 25; cut++) expectProtocolError(() => parseXLogData(xlog.subarray(0, cut)), /truncated/);
    for (let cut = 0; cut < keepalive.length; cut++) expectProtocolError(() => parseKeepalive(keepalive.subarray(0, cut)), /truncated/);
    expectProtocolError(() => parseXLogData(keepalive), /expected XLogData/);
    expectProtocolError(() => parseKeepalive(xlog), /expected primary keepalive/);
  });

  it('encodes a standby status update byte for byte', () => {
    const out = encodeStandbyStatus(LSN_16_B374D848, 0x16 * 2 ** 32, 0, true, UNIX_US);
    expect(out).toEqual(bytes(ch('r'), lsn64(0x16, 0xb374d848), lsn64(0x16, 0), lsn64(0, 0), i64(PG_US), u8(1)));
    expect(encodeStandbyStatus(1, 2, 3, false, PG_EPOCH_OFFSET_US)).toEqual(bytes(ch('r'), lsn64(0, 1), lsn64(0, 2), lsn64(0, 3), i64(0n), u8(0)));
  });

  it('encodes the client clock as microseconds since 2000-01-01 by default', () => {
    const before = Date.now() * 1000 - PG_EPOCH_OFFSET_US;
    const out = encodeStandbyStatus(0, 0, 0, false);
    const t = Number(out.readBigInt64BE(25));
    expect(t).toBeGreaterThanOrEqual(before);
    expect(t).toBeLessThanOrEqual(Date.now() * 1000 - PG_EPOCH_OFFSET_US);
  });
});

// The decoder takes whole messages; the buffering layer in front of it is node-postgres's
// pg-protocol parser, which reassembles CopyData ('d') frames from socket chunks and reuses its
// internal buffer. Feed a whole stream of frames split at every position and check that every
// message decodes identically: this also proves that no decoded value aliases a reused buffer.
describe('CopyData framing split at every position', () => {
  const copyData = (payload: Buffer) => bytes(ch('d'), u32(payload.length + 4), payload);
  const frames: Buffer[] = [];
  const expected: unknown[] = [];
  let walStart = 0x1000;
  for (const { buf, msg } of Object.values(fixtures)) {
    frames.push(copyData(bytes(ch('w'), lsn64(0, walStart), lsn64(0, walStart + 100), i64(PG_US), buf)));
    expected.push({ walStart, msg });
    walStart += 100;
  }
  frames.push(copyData(bytes(ch('k'), lsn64(0, 0x9999), i64(PG_US), u8(1))));
  expected.push({ keepalive: 0x9999, replyRequested: true });
  const stream = Buffer.concat(frames);

  async function feed(chunks: Buffer[]): Promise<unknown[]> {
    const out: unknown[] = [];
    const pass = new PassThrough();
    const done = parsePgProtocol(pass, (m) => {
      const chunk = (m as unknown as { chunk: Buffer }).chunk;
      if (chunk[0] === 0x77) {
        const x = parseXLogData(chunk);
        out.push({ walStart: x.walStart, msg: decodePgoutput(x.payload) });
      } else {
        const k = parseKeepalive(chunk);
        out.push({ keepalive: k.walEnd, replyRequested: k.replyRequested });
      }
    });
    for (const c of chunks) pass.write(Buffer.from(c)); // fresh buffers, as a socket delivers them
    pass.end();
    await done;
    return out;
  }

  it('decodes the unsplit stream', async () => {
    expect(await feed([stream])).toEqual(expected);
  });

  it('decodes the stream split in two at every position', async () => {
    for (let at = 1; at < stream.length; at++) {
      const got = await feed([stream.subarray(0, at), stream.subarray(at)]);
      expect(got, `split at ${at}`).toEqual(expected);
    }
  });

  it('decodes the stream delivered one byte at a time', async () => {
    const chunks: Buffer[] = [];
    for (let i = 0; i < stream.length; i++) chunks.push(stream.subarray(i, i + 1));
    expect(await feed(chunks)).toEqual(expected);
  });
});
