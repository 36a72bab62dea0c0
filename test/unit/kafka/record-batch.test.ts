import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { compress } from 'zstd-napi';
import { describe, expect, it } from 'vitest';
import { crc32c, encodeRecordBatch, singleRecordBatchSize } from '../../../src/kafka/protocol/record-batch.js';
import { murmur2, partitionOf } from '../../../src/kafka/partitioner.js';
import { crc32cBitwise, decodeBatch } from './wire-reader.js';

// Record batch v2 as capture writes it, read back by the test-only reader (wire-reader.ts).

const require = createRequire(import.meta.url);
// Test-only oracle: kafkajs's partitioner (what the kafkajs fallback producer and earlier versions
// used). Test code may read kafkajs internals; src may not (eslint no-restricted-imports).
const kafkajsMurmur2 = require('kafkajs/src/producer/partitioners/default/murmur2') as (key: Buffer) => number;

const HK = Buffer.from('cdp-schema');
const HV = Buffer.from('io.katya.cdp.ChangeEvent/1');

describe('record batch v2', () => {
  it('matches a hand-written fixture byte for byte (one record)', () => {
    const b = encodeRecordBatch([{ key: Buffer.from('k'), value: Buffer.from('vv') }], {
      producerId: 1000n,
      producerEpoch: 3,
      baseSequence: 5,
      timestamp: 0x0102030405,
      headerKey: Buffer.from('h'),
      headerValue: Buffer.from('x'),
    });
    // Record: attributes 0, timestampDelta 0, offsetDelta 0, key len 1 (zigzag 02) "k",
    // value len 2 (04) "vv", 1 header (02): key len 1 (02) "h", value len 1 (02) "x" = 13 bytes (zigzag 1a).
    const record = '1a' + '00' + '00' + '00' + '02 6b' + '04 7676' + '02' + '02 68' + '02 78';
    const afterCrc =
      '0000' + // attributes
      '00000000' + // lastOffsetDelta
      '0000000102030405' + // baseTimestamp
      '0000000102030405' + // maxTimestamp
      '00000000000003e8' + // producerId 1000
      '0003' + // producerEpoch
      '00000005' + // baseSequence
      '00000001' + // records count
      record;
    const tail = Buffer.from(afterCrc.replace(/\s+/g, ''), 'hex');
    const crc = crc32cBitwise(tail).toString(16).padStart(8, '0');
    const length = (4 + 1 + 4 + tail.length).toString(16).padStart(8, '0');
    const fixture = Buffer.from(('0000000000000000' + length + 'ffffffff' + '02' + crc + afterCrc).replace(/\s+/g, ''), 'hex');
    expect(b.toString('hex')).toBe(fixture.toString('hex'));
    expect(singleRecordBatchSize(Buffer.from('k'), Buffer.from('vv'), Buffer.from('h'), Buffer.from('x'))).toBe(b.length);
  });

  it('decodes record for record with the independent reader (uncompressed)', () => {
    const records = Array.from({ length: 500 }, (_, i) => ({
      key: Buffer.from(`public\u0000t\u0000${i}`),
      value: Buffer.concat([Buffer.from(`row ${i} `.repeat(5)), randomBytes(i % 7)]),
    }));
    const b = encodeRecordBatch(records, { producerId: 77n, producerEpoch: 0, baseSequence: 42, timestamp: 1_700_000_000_000, headerKey: HK, headerValue: HV });
    const d = decodeBatch(b);
    expect([d.magic, d.crcOk, d.attributes & 7, d.baseSequence, d.producerId, d.lastOffsetDelta, d.partitionLeaderEpoch]).toEqual([
      2,
      true,
      0,
      42,
      77n,
      499,
      -1,
    ]);
    expect(d.records.map((r) => [r.key!.toString('hex'), r.value!.toString('hex'), r.offsetDelta, r.headers[0]![0], r.headers[0]![1]!.toString()])).toEqual(
      records.map((r, i) => [r.key.toString('hex'), r.value.toString('hex'), i, 'cdp-schema', 'io.katya.cdp.ChangeEvent/1']),
    );
  });

  it('writes zstd batches (type 4) that are smaller and decode to the same records', () => {
    const records = Array.from({ length: 300 }, (_, i) => ({ key: Buffer.from(`k${i}`), value: Buffer.from(`value ${i} `.repeat(8)) }));
    const opts = { producerId: 1n, producerEpoch: 0, baseSequence: 0, timestamp: 1, headerKey: HK, headerValue: HV };
    const plain = encodeRecordBatch(records, opts);
    const packed = encodeRecordBatch(records, { ...opts, compress: (x) => compress(x) });
    const d = decodeBatch(packed);
    expect([d.crcOk, d.attributes & 7]).toEqual([true, 4]);
    expect(packed.length).toBeLessThan(plain.length / 2);
    expect(d.records.map((r) => r.value!.toString())).toEqual(records.map((r) => r.value.toString()));
  });

  it('keeps an incompressible batch uncompressed', () => {
    const records = [{ key: randomBytes(8), value: randomBytes(64) }];
    const b = encodeRecordBatch(records, {
      producerId: 1n,
      producerEpoch: 0,
      baseSequence: 0,
      timestamp: 1,
      headerKey: HK,
      headerValue: HV,
      compress: (x) => compress(x),
    });
    expect(decodeBatch(b).attributes & 7).toBe(0);
  });
});

describe('crc32c', () => {
  it('gives the standard check value and agrees with a bitwise CRC at every length', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    for (let len = 0; len < 100; len++) {
      const b = randomBytes(len);
      expect(crc32c(b)).toBe(crc32cBitwise(b));
    }
    const big = randomBytes(1 << 16);
    expect(crc32c(big)).toBe(crc32cBitwise(big));
  });
});

describe('murmur2', () => {
  it('matches the Java client test vectors', () => {
    // org.apache.kafka.common.utils.UtilsTest#testMurmur2
    const cases: [string, number][] = [
      ['21', -973932308],
      ['foobar', -790332482],
      ['a-little-bit-long-string', -985981536],
      ['a-little-bit-longer-string', -1486304829],
      ['lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8', -58897971],
      ['abc', 479470107],
    ];
    for (const [k, h] of cases) expect(murmur2(Buffer.from(k))).toBe(h);
  });

  it('agrees with kafkajs for keys of every length, so partitions do not change', () => {
    for (let len = 0; len < 200; len++) {
      const key = randomBytes(len);
      expect(murmur2(key)).toBe(kafkajsMurmur2(key));
    }
    const key = Buffer.from('public\u0000items\u000012345');
    expect(partitionOf(key, 6)).toBe((kafkajsMurmur2(key) & 0x7fffffff) % 6);
  });
});
