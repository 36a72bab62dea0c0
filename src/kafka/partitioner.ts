// Which partition a record with a key goes to: the Java client's default partitioner (and
// kafkajs's DefaultPartitioner): toPositive(murmur2(key)) % partitions, so records land where
// every other Kafka client would put them.

export function partitionOf(key: Buffer, partitions: number): number {
  return (murmur2(key) & 0x7fffffff) % partitions;
}

/**
 * Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2) in 32-bit integer arithmetic:
 * only the low 32 bits of each product matter, which is exactly what Math.imul gives.
 */
export function murmur2(data: Buffer): number {
  const length = data.length;
  const m = 0x5bd1e995;
  let h = (0x9747b28c ^ length) | 0;
  const length4 = length >> 2;
  for (let i = 0; i < length4; i++) {
    const i4 = i << 2;
    let k = data[i4]! | (data[i4 + 1]! << 8) | (data[i4 + 2]! << 16) | (data[i4 + 3]! << 24);
    k = Math.imul(k, m);
    k ^= k >>> 24;
    k = Math.imul(k, m);
    h = Math.imul(h, m);
    h ^= k;
  }
  // The tail: Java's switch falls through from case 3 to case 1.
  const tail = length & ~3;
  const rest = length & 3;
  if (rest === 3) h ^= data[tail + 2]! << 16;
  if (rest >= 2) h ^= data[tail + 1]! << 8;
  if (rest >= 1) {
    h ^= data[tail]!;
    h = Math.imul(h, m);
  }
  h ^= h >>> 13;
  h = Math.imul(h, m);
  h ^= h >>> 15;
  return h | 0;
}
