import { describe, expect, it } from 'vitest';
import { ApiVersions } from '../../../src/kafka/protocol/api-versions.js';
import { requestPrefix } from '../../../src/kafka/protocol/header.js';
import { InitProducerId } from '../../../src/kafka/protocol/init-producer-id.js';
import { Metadata } from '../../../src/kafka/protocol/metadata.js';
import { Reader } from '../../../src/kafka/protocol/primitives.js';
import { Produce } from '../../../src/kafka/protocol/produce.js';
import { SaslAuthenticate } from '../../../src/kafka/protocol/sasl-authenticate.js';
import { SaslHandshake } from '../../../src/kafka/protocol/sasl-handshake.js';
import { Cursor } from './wire-reader.js';

// Byte fixtures for every request the engine encodes and every answer it decodes, written by hand
// from the protocol guide's grammar (each src/kafka/protocol file quotes it). Requests: the
// encoder's bytes must equal the fixture, and the test-only reader (wire-reader.ts) must read the
// fields back. Responses: the fixture decodes to the expected fields.

const hex = (...parts: string[]) => Buffer.from(parts.join('').replace(/\s+/g, ''), 'hex');
const decode = <T>(api: { decode(r: Reader): T }, bytes: Buffer) => api.decode(new Reader(bytes));

describe('request header v1 and framing', () => {
  it('prefixes size, api key, version, correlation id and client id', () => {
    const b = requestPrefix(18, 0, 7, 'cdp', 0);
    //         size      key  ver  corr      id len + "cdp"
    expect(b).toEqual(hex('0000000d', '0012', '0000', '00000007', '0003 636470'));
    const c = new Cursor(b);
    expect([c.i32(), c.i16(), c.i16(), c.i32(), c.str()]).toEqual([13, 18, 0, 7, 'cdp']);
  });

  it('counts the body in the size', () => {
    expect(requestPrefix(0, 7, 1, '', 1000).readInt32BE(0)).toBe(2 + 2 + 4 + 2 + 1000);
  });
});

describe('ApiVersions v0', () => {
  it('has an empty request body', () => {
    expect([ApiVersions.apiKey, ApiVersions.version, ApiVersions.encode(undefined).length]).toEqual([18, 0, 0]);
  });

  it('decodes error code and the version ranges', () => {
    const r = decode(ApiVersions, hex('0000', '00000002', '0000 0003 0007', '0003 0004 000c'));
    expect(r.errorCode).toBe(0);
    expect([...r.apis]).toEqual([
      [0, { min: 3, max: 7 }],
      [3, { min: 4, max: 12 }],
    ]);
  });
});

describe('Metadata v4', () => {
  it('encodes the topics and allow_auto_topic_creation', () => {
    const b = Metadata.encode({ topics: ['t1'], allowAutoTopicCreation: false });
    expect(b).toEqual(hex('00000001', '0002 7431', '00'));
    const c = new Cursor(b);
    expect([c.arr(c.str), c.i8(), c.done]).toEqual([['t1'], 0, true]);
    expect(Metadata.encode({ topics: null, allowAutoTopicCreation: true })).toEqual(hex('ffffffff', '01'));
  });

  it('decodes brokers, cluster id, controller and partition leaders', () => {
    const r = decode(
      Metadata,
      hex(
        '00000000', // throttle_time_ms
        '00000001',
        '00000001',
        '0009 3132372e302e302e31',
        '00002386',
        'ffff', // broker 1 127.0.0.1:9094, rack null
        '0002 6964', // cluster_id "id"
        '00000001', // controller_id
        '00000001', // one topic
        '0000',
        '0002 7431',
        '00', // error, "t1", not internal
        '00000002',
        '0000 00000000 00000001 00000001 00000001 00000001 00000001', // p0 leader 1, replicas [1], isr [1]
        '0005 00000001 ffffffff 00000000 00000000', // p1 LEADER_NOT_AVAILABLE, leader -1, [] []
      ),
    );
    expect(r).toEqual({
      brokers: [{ nodeId: 1, host: '127.0.0.1', port: 9094 }],
      clusterId: 'id',
      controllerId: 1,
      topics: [
        {
          errorCode: 0,
          name: 't1',
          partitions: [
            { errorCode: 0, partition: 0, leader: 1 },
            { errorCode: 5, partition: 1, leader: -1 },
          ],
        },
      ],
    });
  });

  it('refuses a truncated answer with a clear error', () => {
    expect(() => decode(Metadata, hex('00000000', '00000001', '00000001'))).toThrow(/shorter than its fields/);
  });
});

describe('InitProducerId v0', () => {
  it('encodes a null transactional id and the timeout', () => {
    const b = InitProducerId.encode({ transactionalId: null, transactionTimeoutMs: 60_000 });
    expect(b).toEqual(hex('ffff', '0000ea60'));
    const c = new Cursor(b);
    expect([c.str(), c.i32()]).toEqual([null, 60_000]);
  });

  it('decodes producer id and epoch', () => {
    expect(decode(InitProducerId, hex('00000000', '0000', '00000000000003e9', '0002'))).toEqual({ errorCode: 0, producerId: 1001n, producerEpoch: 2 });
  });
});

describe('SaslHandshake v1 and SaslAuthenticate v1', () => {
  it('encodes the mechanism as a STRING', () => {
    expect(SaslHandshake.encode('SCRAM-SHA-512')).toEqual(hex('000d', Buffer.from('SCRAM-SHA-512').toString('hex')));
    expect([SaslHandshake.apiKey, SaslHandshake.version]).toEqual([17, 1]);
  });

  it('decodes the mechanisms a listener offers', () => {
    expect(decode(SaslHandshake, hex('0021', '00000001', '0005 504c41494e'))).toEqual({ errorCode: 33, mechanisms: ['PLAIN'] });
  });

  it('carries auth bytes as BYTES and decodes the error message and session lifetime', () => {
    expect(SaslAuthenticate.encode(Buffer.from('abc'))).toEqual(hex('00000003 616263'));
    expect([SaslAuthenticate.apiKey, SaslAuthenticate.version]).toEqual([36, 1]);
    const r = decode(SaslAuthenticate, hex('003a', '0003 626164', '00000000', '0000000000000000'));
    expect(r).toEqual({ errorCode: 58, errorMessage: 'bad', authBytes: Buffer.alloc(0), sessionLifetimeMs: 0n });
    expect(decode(SaslAuthenticate, hex('0000', 'ffff', '00000002 7631', '00000000000003e8')).sessionLifetimeMs).toBe(1000n);
  });
});

describe('Produce v7', () => {
  it('encodes null transactional id, acks, timeout and the batches per partition', () => {
    const batchA = hex('aabbcc');
    const batchB = hex('dd');
    const b = Produce.encode({
      acks: -1,
      timeoutMs: 30_000,
      topic: 't1',
      partitions: [
        { partition: 0, batch: batchA },
        { partition: 5, batch: batchB },
      ],
    });
    expect(b).toEqual(hex('ffff', 'ffff', '00007530', '00000001', '0002 7431', '00000002', '00000000 00000003 aabbcc', '00000005 00000001 dd'));
    const c = new Cursor(b);
    expect([c.str(), c.i16(), c.i32()]).toEqual([null, -1, 30_000]);
    expect(c.arr(() => ({ name: c.str(), parts: c.arr(() => [c.i32(), c.bytes()!.toString('hex')]) }))).toEqual([
      {
        name: 't1',
        parts: [
          [0, 'aabbcc'],
          [5, 'dd'],
        ],
      },
    ]);
    expect(c.done).toBe(true);
  });

  it('decodes per-partition error codes and offsets, then the throttle time', () => {
    const r = decode(
      Produce,
      hex(
        '00000001',
        '0002 7431',
        '00000002',
        '00000000 0000 000000000000000a ffffffffffffffff 0000000000000000',
        '00000001 000a ffffffffffffffff ffffffffffffffff 0000000000000000',
        '00000064',
      ),
    );
    expect(r).toEqual({
      topics: [
        {
          name: 't1',
          partitions: [
            { partition: 0, errorCode: 0, baseOffset: 10n },
            { partition: 1, errorCode: 10, baseOffset: -1n },
          ],
        },
      ],
      throttleTimeMs: 100,
    });
  });
});

describe('framing (FrameReader)', () => {
  it('returns the same frames however the stream is split', async () => {
    const { FrameReader } = await import('../../../src/kafka/connection.js');
    const frames = [hex('00000001 aa'), hex('0000000500'), hex('00000003 010203'), hex('00000000')].map((f) => f.subarray(4));
    const stream = Buffer.concat(frames.map((f) => Buffer.concat([hex(f.length.toString(16).padStart(8, '0')), f])));
    for (let a = 0; a <= stream.length; a++) {
      for (let b = a; b <= stream.length; b++) {
        const r = new FrameReader();
        const got = [...r.push(stream.subarray(0, a)), ...r.push(stream.subarray(a, b)), ...r.push(stream.subarray(b))];
        expect(got.map((g) => g.toString('hex'))).toEqual(frames.map((f) => f.toString('hex')));
      }
    }
  });
});

describe('framing refuses what no broker sends', () => {
  it('a negative or oversized frame size is a protocol error, not an endless loop or an unbounded buffer', async () => {
    const { FrameReader, MAX_FRAME_BYTES } = await import('../../../src/kafka/connection.js');
    const neg = Buffer.alloc(8);
    neg.writeInt32BE(-4, 0);
    expect(() => new FrameReader().push(neg)).toThrow(/response frame of -4 bytes/);
    const big = Buffer.alloc(4);
    big.writeInt32BE(MAX_FRAME_BYTES + 1, 0);
    expect(() => new FrameReader().push(big)).toThrow(/allowed 0 to/);
  });

  it('a frame arriving in many small chunks comes out whole and equal', async () => {
    const { FrameReader } = await import('../../../src/kafka/connection.js');
    const body = Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 251));
    const head = Buffer.alloc(4);
    head.writeInt32BE(body.length, 0);
    const stream = Buffer.concat([head, body, head, body]);
    const r = new FrameReader();
    const got: Buffer[] = [];
    for (let o = 0; o < stream.length; o += 997) got.push(...r.push(stream.subarray(o, o + 997)));
    expect(got.length).toBe(2);
    for (const g of got) expect(g.equals(body)).toBe(true);
  });
});
