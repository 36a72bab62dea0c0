import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';

/**
 * A pass-through stream that counts the bytes going through it and hashes them with SHA-256:
 * what a base's manifest records (size, sha256) and what its readers check, measured where the
 * bytes flow (upload or download) instead of in a second pass.
 */
export interface HashMeter {
  stream: Transform;
  /** Bytes seen so far. */
  size(): number;
  /** Hex SHA-256 of every byte seen; call once, after the stream ended. */
  digest(): string;
}

export function hashMeter(): HashMeter {
  const hash = createHash('sha256');
  let size = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _e, cb) {
      hash.update(chunk);
      size += chunk.length;
      cb(null, chunk);
    },
  });
  return { stream, size: () => size, digest: () => hash.digest('hex') };
}
