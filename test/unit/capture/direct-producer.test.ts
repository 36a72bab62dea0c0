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
