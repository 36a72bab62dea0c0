import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { crc32c, murmur2, partitionOf } from '../../../src/capture/direct-producer.js';

const require = createRequire(import.meta.url);
const kafkajsMurmur2 = require('kafkajs/src/producer/partitioners/default/murmur2') as (key: Buffer) => number;
const kafkajsCrc32c = require('kafkajs/src/protocol/recordBatch/crc32C') as (buf: Buffer) => number;

describe('crc32c', () => {
  it('gives the standard check value and agrees with kafkajs at every length', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    for (let len = 0; len < 100; len++) {
      const b = randomBytes(len);
      expect(crc32c(b)).toBe(kafkajsCrc32c(b));
    }
    const big = randomBytes(1 << 20);
    expect(crc32c(big)).toBe(kafkajsCrc32c(big));
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

describe('record batch encoding', () => {
  // kafkajs's own record batch decoder (the archiver's reader) decodes what the direct producer
  // writes; with zstd it must go through the codec registered by src/kafka/codecs.ts.
  const KafkaDecoder = require('kafkajs/src/protocol/decoder') as new (b: Buffer) => unknown;
  const decodeBatch = require('kafkajs/src/protocol/recordBatch/v0/decoder') as (d: unknown) => Promise<{
    records: Array<{ key: Buffer; value: Buffer; headers: Record<string, Buffer> }>;
    firstSequence: number;
  }>;

  async function roundTrip(compression: 'none' | 'zstd') {
    await import('../../../src/kafka/codecs.js');
    const { DirectProducer } = await import('../../../src/capture/direct-producer.js');
    const p = new DirectProducer({} as never, 'topic', 'io.katya.cdp.ChangeEvent/1', compression);
    const records = Array.from({ length: 500 }, (_, i) => ({
      key: Buffer.from(`public\u0000t\u0000${i}`),
      value: Buffer.concat([Buffer.from(`row ${i} `.repeat(5)), randomBytes(i % 7)]),
      partition: 0,
    }));
    const batch = (p as unknown as { recordBatch(l: typeof records, seq: number): Buffer }).recordBatch(records, 42);
    const decoded = await decodeBatch(new KafkaDecoder(batch));
    expect(decoded.firstSequence).toBe(42);
    expect(decoded.records.map((r) => [r.key.toString('hex'), r.value.toString('hex'), r.headers['cdp-schema']?.toString()])).toEqual(
      records.map((r) => [r.key.toString('hex'), r.value.toString('hex'), 'io.katya.cdp.ChangeEvent/1']),
    );
    return { batch, decoded };
  }

  it('writes uncompressed batches that kafkajs decodes record for record', async () => {
    const { batch } = await roundTrip('none');
    expect(batch.readInt16BE(21) & 7).toBe(0); // attributes: compression bits
  });

  it('writes zstd batches (type 4) that are smaller and decode to the same records', async () => {
    const plain = await roundTrip('none');
    const packed = await roundTrip('zstd');
    expect(packed.batch.readInt16BE(21) & 7).toBe(4);
    expect(packed.batch.length).toBeLessThan(plain.batch.length / 2);
  });
});
