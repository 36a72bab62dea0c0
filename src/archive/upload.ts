import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { CdpError, ErrorCodes } from '../errors.js';
import { isNotFound, putOnce, s3Error, type Store } from '../s3/client.js';
import { uploadMultipart } from '../s3/multipart.js';
import { withRetry } from '../util/retry.js';

// Storing a finished segment. Small objects go through putOnce (one PUT, If-None-Match: *, with its
// SHA-256 checked by the server). Above MULTIPART_THRESHOLD a single PUT is one long request that
// an S3 blip restarts from zero; a multipart upload (s3/multipart.ts) sends 8 MiB parts, each
// checksummed by the server, and retries parts independently.

export const MULTIPART_THRESHOLD = 16 * 1024 * 1024;

export async function storeSegment(store: Store, key: string, bytes: Buffer, sha: string): Promise<'created' | 'exists'> {
  if (bytes.length < MULTIPART_THRESHOLD) {
    return putOnce(store, key, bytes, { contentType: 'application/avro', metadata: { 'cdp-kind': 'segment' } });
  }
  return withRetry(
    async () => {
      // Write-once: the key holds the SHA-256 of the bytes, so an existing object of the same size
      // under this key is this very segment, stored by an earlier attempt (or an earlier life of
      // this archiver, before a crash between upload and offset commit).
      try {
        const head = await store.client.send(new HeadObjectCommand({ Bucket: store.bucket, Key: key }), { abortSignal: store.signal });
        if (head.ContentLength === bytes.length) return 'exists' as const;
        throw new CdpError(
          ErrorCodes.INTEGRITY,
          `s3://${store.bucket}/${key} already exists with a different size (${head.ContentLength}, expected ${bytes.length}); objects are write-once, refusing to overwrite`,
          { details: { key } },
        );
      } catch (err) {
        if (err instanceof CdpError) throw err;
        if (!isNotFound(err)) throw s3Error(`head s3://${store.bucket}/${key}`, err);
      }
      await uploadMultipart(store, key, bytes, { contentType: 'application/avro', metadata: { 'cdp-kind': 'segment', 'cdp-sha256': sha } });
      return 'created' as const;
    },
    { what: `store segment ${key}`, log: store.log, signal: store.signal, maxElapsedMs: store.maxElapsedMs },
  );
}
