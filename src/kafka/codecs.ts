import kafkajs from 'kafkajs';
import { createCodec, type BlockCodec } from '../format/codec.js';

// kafkajs 2.2.4 ships only GZIP; any other codec must be registered in its CompressionCodecs table
// (kafkajs docs, "Producing Messages" > "Compression"). Capture may produce zstd record batches
// (capture.compression), so every kafkajs client of ours (the archiver's consumer, the kafkajs
// fallback producer, the test readers) must be able to read them. The frames are standard zstd
// frames (Kafka protocol guide, "Record Batch": compression type 4 = zstd, KIP-110), the same ones
// the Java client writes with zstd-jni, and the same ones the archive's zstandard codec writes.

let registered = false;

export function registerKafkaCodecs(): void {
  if (registered) return;
  registered = true;
  const { CompressionCodecs, CompressionTypes } = kafkajs;
  let zstd: BlockCodec | undefined;
  const codec = () => (zstd ??= createCodec('zstandard', 1));
  CompressionCodecs[CompressionTypes.ZSTD] = () => ({
    async compress(encoder: { buffer: Buffer }) {
      return codec().compress(encoder.buffer);
    },
    async decompress(buffer: Buffer) {
      return codec().decompress(buffer);
    },
  });
}

registerKafkaCodecs();
