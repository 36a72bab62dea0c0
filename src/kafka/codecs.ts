import kafkajs from 'kafkajs';
import { Compressor, decompress } from 'zstd-napi';

// kafkajs 2.2.4 ships only GZIP; any other codec must be registered in its CompressionCodecs table
// (kafkajs docs, "Producing Messages" > "Compression"). Capture may produce zstd record batches
// (capture.compression), so every kafkajs client of ours (the archiver's consumer, the kafkajs
// fallback producer, the test readers) must be able to read them. The frames are standard zstd
// frames (Kafka protocol guide, "Record Batch": compression type 4 = zstd, KIP-110), the same ones
// the Java client writes with zstd-jni.

let registered = false;

export function registerKafkaCodecs(): void {
  if (registered) return;
  registered = true;
  const { CompressionCodecs, CompressionTypes } = kafkajs;
  let cctx: Compressor | undefined;
  CompressionCodecs[CompressionTypes.ZSTD] = () => ({
    async compress(encoder: { buffer: Buffer }) {
      if (!cctx) {
        cctx = new Compressor();
        cctx.setParameters({ compressionLevel: 1 });
      }
      return cctx.compress(encoder.buffer);
    },
    async decompress(buffer: Buffer) {
      return decompress(buffer);
    },
  });
}

registerKafkaCodecs();
