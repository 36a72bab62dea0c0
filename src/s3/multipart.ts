import type { Readable } from 'node:stream';
import { Upload } from '@aws-sdk/lib-storage';
import { CdpError } from '../errors.js';
import { s3Error, type Store } from './client.js';

// A multipart upload (S3 API reference, CreateMultipartUpload) through lib-storage's Upload: 8 MiB
// parts, each with its own x-amz-checksum-sha256 (ChecksumAlgorithm SHA256) verified by the server,
// at most two in flight, so memory stays at queueSize * partSize whatever the body's size. Upload
// takes its own AbortController, not a signal, so the store's signal is forwarded to it; on failure
// the parts already sent are aborted (leavePartsOnError: false) rather than left to bill.

export const MULTIPART_PART_SIZE = 8 * 1024 * 1024;

export async function uploadMultipart(
  store: Store,
  key: string,
  body: Buffer | Readable,
  opts: { contentType: string; metadata: Record<string, string> },
): Promise<void> {
  const abort = new AbortController();
  const onAbort = () => abort.abort();
  store.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const upload = new Upload({
      client: store.client,
      partSize: MULTIPART_PART_SIZE,
      queueSize: 2,
      leavePartsOnError: false,
      abortController: abort,
      params: {
        Bucket: store.bucket,
        Key: key,
        Body: body,
        ContentType: opts.contentType,
        ChecksumAlgorithm: 'SHA256',
        Metadata: opts.metadata,
        ...store.sse,
      },
    });
    await upload.done();
  } catch (err) {
    throw err instanceof CdpError ? err : s3Error(`multipart upload s3://${store.bucket}/${key}`, err);
  } finally {
    store.signal?.removeEventListener('abort', onAbort);
  }
}
